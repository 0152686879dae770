"""Checkpoints of a simulation at an outer-iteration boundary, written atomically.

One format for every protocol. Layout in ``out_dir/checkpoint/``::

    latest.json            {"outer": K, "dir": "outer-00000K", "meta": {...}}
    outer-00000K/agent-00000.npz ...

One ``.npz`` per agent (party), the role's own state at the boundary as the
role exports it (``checkpoint_state``; ``state_to_npz``): numbers and short
strings only, read back with ``allow_pickle=False``. Never a key: a resumed
run makes fresh keys and redoes the setup stage, and each protocol rebuilds
its encrypted state from numbers its parties know (see docs/checkpoints.md
for what each protocol's files hold). Together the files of one checkpoint
are as private as the run's data and model (every party's state in one
place, e.g. csr_fhe_mf's masked factors and the masks that unmask them), so
the folder is made ``0700`` and every file ``0600``.

A checkpoint becomes visible only when ``latest.json`` is replaced
(``os.replace`` is atomic), after its folder is complete, so a run killed
while writing leaves the previous checkpoint usable. ``meta`` identifies the
job (job id, agent count, a digest of the data and the public configuration:
the scenario after overrides, plus the graph and codec for ppdnmf) so that a
resume with a different scenario or data is refused, naming the field that
changed, instead of silently mixing runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_DIR = "checkpoint"
LATEST = "latest.json"


class CheckpointError(ValueError):
    """No usable checkpoint, or one that belongs to another job."""


@dataclass(frozen=True)
class Checkpoint:
    """States of every agent after ``outer`` completed outer iterations."""

    outer: int
    states: dict[int, bytes]
    meta: dict[str, Any]


# Settings that change how fast a run goes, never what it computes: a resume may change them.
NOT_CONFIG = frozenset({"crypto.processes"})


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def public_config(scenario: Any, edges: Any = None, codec: Any = None) -> dict[str, Any]:
    """The public configuration of a job, flat (``"crypto.scheme": "paillier"``).

    The scenario after overrides, the graph's edges and the fixed-point codec;
    never private seeds (they are not in the scenario). JSON-normalized, so a
    value read back from a checkpoint compares equal to a fresh one.
    """
    tree: dict[str, Any] = {}
    if scenario is not None:
        tree["scenario"] = _as_dict(scenario)
    if edges is not None:
        tree["graph"] = {"edges": [[int(a), int(b)] for a, b in edges]}
    if codec is not None:
        tree["codec"] = _as_dict(codec)
    flat: dict[str, Any] = {}
    _flatten(json.loads(json.dumps(tree, default=str)), "", flat)
    # "scenario.inner_iters" reads better as the --set key it came from: "inner_iters"
    named = {k.removeprefix("scenario."): v for k, v in flat.items()}
    return {k: v for k, v in named.items() if k not in NOT_CONFIG}


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a ``public_config`` (stable: sorted keys)."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's configuration and this run's, one item per
    field: ``"inner_iters: 5 in the checkpoint, 7 now"``."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if key in saved and key in now and saved[key] == now[key]:
            continue
        was = _short(saved[key]) if key in saved else "absent"
        is_ = _short(now[key]) if key in now else "absent"
        out.append(f"{key}: {was} in the checkpoint, {is_} now")
    return out


def describe_changes(changes: list[str], limit: int = 4) -> str:
    shown = "; ".join(changes[:limit])
    return shown + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


def job_meta(
    job_id: str,
    n_agents: int,
    inner_iters: int,
    X: np.ndarray,
    edges: Any,
    *,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What must match between a checkpoint and the run that resumes it.

    ``config`` (a ``public_config``) is stored whole with its digest, so that a
    refused resume names every field that changed.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    digest.update(json.dumps([list(e) for e in edges]).encode("utf-8"))
    meta: dict[str, Any] = {
        "job_id": job_id,
        "n_agents": int(n_agents),
        "inner_iters": int(inner_iters),
        "data_shape": [int(s) for s in X.shape],
        "data_graph_sha256": digest.hexdigest(),
    }
    if config is not None:
        meta["config"] = dict(config)
        meta["config_sha256"] = config_digest(config)
    return meta


def check_meta(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Refuse a checkpoint whose job or configuration differs from this run's.

    Another job id: "belongs to another job". The same job with a changed
    configuration: every changed field is named (``inner_iters: 5 in the
    checkpoint, 7 now``).
    """
    if "job_id" in expected and saved.get("job_id") != expected["job_id"]:
        raise CheckpointError(
            f"checkpoint in {where} belongs to another job: job_id is "
            f"{saved.get('job_id')!r}, this run has {expected['job_id']!r}"
        )
    changes: list[str] = []
    if "config" in expected:
        if "config" not in saved:
            raise CheckpointError(
                f"cannot resume from the checkpoint in {where}: it records no job "
                "configuration (written by an older cipherfact), so a changed setting could "
                "not be detected; start afresh without --resume"
            )
        if saved.get("config_sha256") != expected.get("config_sha256"):
            changes = config_changes(saved["config"], expected["config"])
    named = {c.split(":", 1)[0] for c in changes}
    for key, value in expected.items():
        if key in ("job_id", "config", "config_sha256") or saved.get(key) == value:
            continue
        if key in named or (key in ("data_graph_sha256", "data_sha256") and changes):
            continue  # already named by the configuration (a graph or data setting)
        if key == "data_graph_sha256":
            changes.append("data_graph_sha256: the data or the graph differ")
        elif key == "data_sha256":
            changes.append("data_sha256: the data differ")
        else:
            was, now = _short(saved.get(key)), _short(value)
            changes.append(f"{key}: {was} in the checkpoint, {now} now")
    if changes:
        raise CheckpointError(
            f"cannot resume from the checkpoint in {where}: the job's configuration changed "
            f"({describe_changes(changes)}); resume with the settings it was written with, "
            "or start afresh without --resume"
        )


def data_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' shapes, dtypes and bytes: a changed data file changes it."""
    digest = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def app_meta(
    job_id: str, n_agents: int, data_sha256: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    """A checkpoint identity for any protocol: job id, agent count (agents are
    ``0..n_agents-1``), a ``data_digest`` and a ``public_config`` (stored whole,
    with its digest, so that a refused resume names every changed field)."""
    return {
        "job_id": job_id,
        "n_agents": int(n_agents),
        "data_sha256": data_sha256,
        "config": dict(config),
        "config_sha256": config_digest(config),
    }


def state_to_npz(state: Mapping[str, Any]) -> bytes:
    """One role's checkpoint state (``checkpoint_state``: arrays, numbers, strings;
    None values are left out) as ``.npz`` bytes."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufU":
            raise TypeError(f"checkpoint state {key!r} is {arr.dtype}, not numbers or text")
        arrays[key] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def state_from_npz(data: bytes) -> dict[str, Any]:
    """Inverse of ``state_to_npz`` (no pickle); 0-d arrays come back as scalars."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return {k: f[k].item() if f[k].ndim == 0 else f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable checkpoint state: {exc}") from exc


def save_role(role: Any) -> bytes:
    """A role's checkpoint bytes: its ``checkpoint_state()`` as ``.npz`` (a
    ``LocalRoles.save_state`` for roles that export their state that way)."""
    return state_to_npz(role.checkpoint_state())


def load_role(role: Any, data: bytes) -> None:
    """Restore a role from ``save_role`` bytes, before the run starts."""
    role.restore_state(state_from_npz(data))


def _write_bytes(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    out_dir: str | Path, outer: int, states: Mapping[int, bytes], meta: Mapping[str, Any]
) -> Path:
    """Write a checkpoint for ``outer`` completed iterations; returns its folder."""
    if isinstance(outer, bool) or not isinstance(outer, int) or outer < 1:
        raise ValueError(f"checkpoint outer must be an integer >= 1, got {outer!r}")
    if not states:
        raise ValueError("checkpoint states are empty")
    for agent, data in states.items():
        if not isinstance(data, bytes):
            raise TypeError(
                f"checkpoint state of agent {agent} must be bytes, got {type(data).__name__}"
            )
    root = Path(out_dir) / CHECKPOINT_DIR
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)  # also an older, more open folder
    name = f"outer-{outer:06d}"
    tmp = root / f".{name}.tmp"
    final = root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for agent, data in sorted(states.items()):
        _write_bytes(tmp / f"agent-{agent:05d}.npz", data)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    _write_bytes(
        latest_tmp,
        json.dumps({"outer": outer, "dir": name, "meta": dict(meta)}, sort_keys=True).encode(),
    )
    os.replace(latest_tmp, root / LATEST)
    for old in root.glob("outer-*"):  # older checkpoints are no longer needed
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(out_dir: str | Path, expected_meta: Mapping[str, Any]) -> Checkpoint:
    """The latest checkpoint in ``out_dir``; refuses one written for another job."""
    root = Path(out_dir) / CHECKPOINT_DIR
    latest = root / LATEST
    if not latest.exists():
        raise CheckpointError(
            f"no checkpoint to resume from in {root} (run with --checkpoint-every K first)"
        )
    try:
        info = json.loads(latest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint index {latest} is unreadable: {exc}") from exc
    meta = info.get("meta", {})
    check_meta(meta, expected_meta, str(root))
    folder = root / str(info["dir"])
    n_agents = int(meta["n_agents"])
    states: dict[int, bytes] = {}
    for agent in range(n_agents):
        path = folder / f"agent-{agent:05d}.npz"
        if not path.exists():
            raise CheckpointError(f"checkpoint {folder} lacks the state of agent {agent}")
        states[agent] = path.read_bytes()
    return Checkpoint(outer=int(info["outer"]), states=states, meta=meta)


def has_checkpoint(out_dir: str | Path) -> bool:
    return (Path(out_dir) / CHECKPOINT_DIR / LATEST).exists()
