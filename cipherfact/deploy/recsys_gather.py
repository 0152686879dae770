"""Gather a deployed recommendation job (csr_fhe_mf, fedmf) into the simulation's folder.

Each party wrote only its own files. This step, which ``deploy local`` and
``deploy gather`` run, asks the protocol's reader (``csr_node.read_csr``,
``fedmf_node.read_fedmf``) for the factors after every epoch and the
per-epoch traffic and seconds, then writes what ``cipherfact simulate`` writes
for the same scenario: ``summary.json``, ``metrics.jsonl`` (RMSE per epoch
next to the plaintext twin's), ``rmse.png``, ``bytes.png``, ``factors.npz``
(U, V) and ``model.npz``. A failed or interrupted job gets a ``summary.json``
that says which parties failed and why (``gather.GatherRun.summary``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherfact.deploy.gather import GatherRun, job_totals
from cipherfact.protocols.ratings.job import (
    epoch_rmse,
    finish_summary,
    load_split,
    party_bytes,
    summary_header,
)
from cipherfact.protocols.ratings.model import MODEL_FILE, RatingsModel

__all__ = ["Epochs", "gather_ratings", "setup_bytes"]


@dataclass
class Epochs:
    """What the parties' files hold, epoch by epoch (``factors`` only after success)."""

    info: dict[str, Any]
    groups: dict[int, str]
    offset: float = 0.0
    factors: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    twin: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: per epoch: bytes, grpc_bytes, wall_s and each party group's seconds
    records: list[dict[str, Any]] = field(default_factory=list)
    setup_bytes: int = 0


def gather_ratings(run: GatherRun, read: Callable[[GatherRun, Any], Epochs]) -> dict[str, Any]:
    """The job's summary and files; ``read(run, split)`` is the protocol's reader."""
    results, scenario = run.results, run.deploy.scenario
    split = load_split(scenario.data, scenario.seed)
    train, test = split.train, split.test
    epochs = read(run, split)
    header = summary_header(scenario, "grpc", split, epochs.info)
    del header["status"]  # the gathering step's
    summary = run.summary(
        ("party", "status", "bytes_sent", "grpc_bytes_sent", "wall_s"),
        **header,
        processes=len(results),
        grpc_bytes_total=sum(r.get("grpc_bytes_sent", 0) for r in results),
    )
    if not run.ok:
        return {
            **summary,
            "bytes_total": sum(int(r.get("bytes_sent", 0) or 0) for r in results),
            "messages_total": sum(int(r.get("messages_sent", 0) or 0) for r in results),
        }

    metrics: list[dict[str, Any]] = []
    for e, (factors, twin) in enumerate(zip(epochs.factors, epochs.twin, strict=True)):
        record = {
            "epoch": e,
            **epoch_rmse(factors, twin, train, test, epochs.offset),
            **epochs.records[e],
        }
        metrics.append(record)
        run.writer.append_metrics(record)
    U, V = epochs.factors[-1]
    np.savez(run.writer.out_dir / "factors.npz", U=U, V=V)  # the last epoch's
    # the same model file a simulation writes: ids back to the data, the offset
    model = RatingsModel.from_training((U, V), train, epochs.offset)
    summary["model"] = model.save(run.writer.out_dir / MODEL_FILE).name

    stats = run.traffic()
    seconds_per_party: dict[str, float] = dict.fromkeys(epochs.groups.values(), 0.0)
    for i in range(len(results)):
        lines = run.metrics(i)
        seconds_per_party[epochs.groups[i]] += sum(m["crypto_s"] + m["compute_s"] for m in lines)
    setup_s = max(r.get("wall_s", 0.0) for r in results) - sum(m["wall_s"] for m in metrics)
    summary = finish_summary(
        summary,
        scenario,
        train,
        test,
        metrics,
        run.writer,
        wall_s=run.wall_s,
        setup_s=max(setup_s, 0.0),
        setup_bytes=epochs.setup_bytes,
        stats=stats,
        bytes_per_party=party_bytes(stats, epochs.groups),
        seconds_per_party=seconds_per_party,
    )
    # A resumed job: the totals of all its parts (``traffic`` stays this run's).
    return {**summary, **job_totals(results)}


def setup_bytes(results: Sequence[dict[str, Any]]) -> int:
    """The job's setup bytes (round -1), counted once over a resumed job's parts."""
    return sum(
        int(r.get("job_setup_bytes_sent", r.get("setup_bytes_sent", 0)) or 0) for r in results
    )
