"""Checkpoints of a simulation at an outer-iteration boundary, written atomically.

Layout in ``out_dir/checkpoint/``::

    latest.json            {"outer": K, "dir": "outer-00000K", "meta": {...}}
    outer-00000K/agent-00000.npz ...

Each agent's state is ``.npz`` bytes from ``save_state_npz`` (numbers only,
never pickle, never keys: a resumed run generates fresh keys, and decrypted
values do not depend on keys). A checkpoint becomes visible only when
``latest.json`` is replaced (``os.replace`` is atomic), after its folder is
complete, so a run killed while writing leaves the previous checkpoint usable.
``meta`` identifies the job (job id, sizes, data digest) so that a resume with
a different scenario is refused instead of silently mixing runs.
"""

from __future__ import annotations

import hashlib
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


def job_meta(
    job_id: str, n_agents: int, inner_iters: int, X: np.ndarray, edges: Any
) -> dict[str, Any]:
    """What must match between a checkpoint and the run that resumes it."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    digest.update(json.dumps([list(e) for e in edges]).encode("utf-8"))
    return {
        "job_id": job_id,
        "n_agents": int(n_agents),
        "inner_iters": int(inner_iters),
        "data_shape": [int(s) for s in X.shape],
        "data_graph_sha256": digest.hexdigest(),
    }


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
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
    root.mkdir(parents=True, exist_ok=True)
    name = f"outer-{outer:06d}"
    tmp = root / f".{name}.tmp"
    final = root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
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
    info = json.loads(latest.read_text(encoding="utf-8"))
    meta = info.get("meta", {})
    for key, value in expected_meta.items():
        if meta.get(key) != value:
            raise CheckpointError(
                f"checkpoint in {root} belongs to another job: {key} is {meta.get(key)!r}, "
                f"this run has {value!r}"
            )
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
