"""A deployed party's own checkpoints: its own folder, only what it knows, never a key.

In a simulation one checkpoint holds every party's state (``simulations/
checkpoint.py``). Deployed, no process may hold another's state, so each party
that carries state across outer iterations (ppdnmf's agents; csr_fhe_mf's RS
and CSP; FedMF's server and users) writes its own file at an outer boundary
(an outer iteration, or an epoch)::

    <its out>/checkpoints/            (mode 0700)
      outer-00003.npz                 (mode 0600)

holding what its role exports (``checkpoint_state``), the node's own history
of earlier boundaries that its result files need (``past_*``: its earlier
masks, vectors, ...; again only its own), and three JSON text entries: the
job's public configuration, its digest, and the job's counters up to the
boundary. A resume reads the file before the party makes its fresh key, so a
changed job is refused in one line before anything starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cipherfact.simulations.checkpoint import (
    CheckpointError,
    check_meta,
    config_digest,
    state_from_npz,
    state_to_npz,
)

__all__ = [
    "CKPT_CONFIG",
    "CKPT_CONFIG_SHA256",
    "CKPT_COUNTERS",
    "PAST",
    "PartyCheckpoints",
    "check_resume_config",
    "checkpoint_path",
    "latest_checkpoint",
    "read_checkpoint_info",
    "truncate_metrics",
    "write_private",
]

CHECKPOINTS = "checkpoints"
# Extra entries of a party's checkpoint, next to the role's state (JSON text arrays).
CKPT_CONFIG = "job_config"  # the public configuration (public_config), flat
CKPT_CONFIG_SHA256 = "job_config_sha256"
CKPT_COUNTERS = "job_counters"  # the job's traffic and time up to the checkpoint
#: prefix of the node's own history (not the role's state)
PAST = "past_"


def checkpoint_path(out: Path, outer: int) -> Path:
    """Where a party whose folder is ``out`` keeps its checkpoint after ``outer``."""
    return out / CHECKPOINTS / f"outer-{outer:05d}.npz"


def latest_checkpoint(out: Path) -> int | None:
    """The highest outer iteration with a checkpoint in ``out`` (None if none)."""
    found = sorted((out / CHECKPOINTS).glob("outer-*.npz"))
    return int(found[-1].stem.split("-")[1]) if found else None


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` as a 0600 file in a 0700 folder, via a rename: a party killed
    while writing keeps its previous checkpoints, and no other local user reads it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)  # also a folder made by an older, more open version
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_checkpoint_info(state: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(configuration, counters) stored with a checkpoint's state (None: an old checkpoint
    that recorded no configuration)."""
    config = json.loads(str(state[CKPT_CONFIG])) if CKPT_CONFIG in state else None
    counters = json.loads(str(state[CKPT_COUNTERS])) if CKPT_COUNTERS in state else {}
    return config, counters


def check_resume_config(saved: dict[str, Any] | None, now: dict[str, Any], where: Path) -> None:
    """Refuse to resume a checkpoint written with another configuration, naming the
    changed fields (``CheckpointError``, a ``ValueError``)."""
    saved_meta = {} if saved is None else {"config": saved, "config_sha256": config_digest(saved)}
    check_meta(saved_meta, {"config": now, "config_sha256": config_digest(now)}, str(where))


def truncate_metrics(path: Path, key: str, keep_below: int) -> None:
    """Keep the ``metrics.jsonl`` lines whose ``key`` is below ``keep_below``: a resumed
    part redoes the iterations after its checkpoint (and drops a line cut short)."""
    if not path.exists():
        path.write_text("", encoding="utf-8")
        return
    lines = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(ln)[key] < keep_below:
                lines.append(ln)
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill
            continue
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


class PartyCheckpoints:
    """One party's checkpoints in its own folder (``out/checkpoints``).

    ``config`` is the job's public configuration as this party derives it; a
    checkpoint written under another one is refused on ``load``. ``every``:
    checkpoint every that many outer iterations, and at the last (0: never).
    """

    def __init__(
        self,
        who: str,
        out: Path,
        config: dict[str, Any],
        every: int,
        total: int,
        *,
        encode: Callable[[Mapping[str, Any]], bytes] = state_to_npz,
        decode: Callable[[bytes], dict[str, Any]] = state_from_npz,
    ) -> None:
        self.who, self.out, self.config = who, out, config
        self.every, self.total = every, total
        self._encode, self._decode = encode, decode
        self.saved = 0  # the newest boundary written (or resumed from) by this part

    def load(self, outer: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(the role's state, the node's ``past_*`` history, the job's counters) of the
        checkpoint after ``outer``; refuses a missing file or a changed job in one line.
        Newer checkpoints of this party are discarded: the resumed part writes its own
        (csr_fhe_mf's masks are fresh random draws, so an old one would not match the
        other party's new one)."""
        path = checkpoint_path(self.out, outer)
        if not path.is_file():
            raise CheckpointError(f"{self.who}: no checkpoint {path} to resume from")
        state = self._decode(path.read_bytes())
        saved, counters = read_checkpoint_info(state)
        try:
            check_resume_config(saved, self.config, path)
        except CheckpointError as exc:
            raise CheckpointError(f"{self.who}: {exc}") from exc
        for newer in (self.out / CHECKPOINTS).glob("outer-*.npz"):
            if int(newer.stem.split("-")[1]) > outer:
                newer.unlink()
        self.saved = outer
        role = {
            k: v
            for k, v in state.items()
            if not k.startswith(PAST) and k not in (CKPT_CONFIG, CKPT_CONFIG_SHA256, CKPT_COUNTERS)
        }
        past = {k.removeprefix(PAST): v for k, v in state.items() if k.startswith(PAST)}
        return role, past, counters

    def due(self, outer: int) -> bool:
        """Whether the boundary after ``outer`` iterations gets a checkpoint now."""
        if not self.every or outer <= self.saved:
            return False
        return outer % self.every == 0 or outer >= self.total

    def save(
        self,
        outer: int,
        state: Mapping[str, Any],
        past: Mapping[str, Any],
        counters: Mapping[str, Any],
    ) -> None:
        """Write the checkpoint after ``outer``: the role's ``state``, the node's
        ``past`` history and the job's ``counters`` so far."""
        full = dict(state)
        full.update({f"{PAST}{k}": v for k, v in past.items()})
        full[CKPT_CONFIG] = json.dumps(self.config, sort_keys=True)
        full[CKPT_CONFIG_SHA256] = config_digest(self.config)
        full[CKPT_COUNTERS] = json.dumps(dict(counters), sort_keys=True)
        write_private(checkpoint_path(self.out, outer), self._encode(full))
        self.saved = outer
