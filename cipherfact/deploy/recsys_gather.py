"""Gather a deployed recommendation job (csr_fhe_mf, fedmf) into the simulation's folder.

Each party wrote only its own files. This step, which ``deploy local`` and
``deploy gather`` run, asks the protocol's reader (``csr_gather``,
``fedmf_gather``) for the factors after every epoch and the per-epoch traffic
and seconds, then writes what ``cipherfact simulate`` writes for the same
scenario: ``summary.json``, ``metrics.jsonl`` (RMSE per epoch next to the
plaintext twin's), ``rmse.png``, ``bytes.png``, ``factors.npz`` (U, V) and
``model.npz``. A failed or interrupted job gets a ``summary.json`` that says
which parties failed and why.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cipherfact.agents.traffic import TrafficStats
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.party_checkpoint import job_totals
from cipherfact.protocols.ratings.job import (
    epoch_rmse,
    finish_summary,
    load_split,
    party_bytes,
    summary_header,
)
from cipherfact.protocols.ratings.model import MODEL_FILE, RatingsModel
from cipherfact.simulations.results import RunWriter, read_metrics_tolerant

__all__ = ["Epochs", "gather_ratings", "setup_bytes"]

#: each protocol's reader: ``module:function(deploy, split, results) -> RatingsJob``
READERS = {
    "csr_fhe_mf": "cipherfact.deploy.csr_gather:read_csr",
    "fedmf": "cipherfact.deploy.fedmf_gather:read_fedmf",
}


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


class Reader(Protocol):
    def __call__(
        self, deploy: DeployJob, split: Any, results: Sequence[dict[str, Any]], ok: bool
    ) -> Epochs: ...


def gather_ratings(
    deploy: DeployJob,
    results: Sequence[dict[str, Any]],
    codes: Sequence[int],
    wall_s: float,
    out: Path,
    *,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """Combine the parties' folders; ``results[i]`` is agent i's ``result.json``.

    ``interrupted`` (a signal's name): the run was stopped; the summary says
    ``interrupted`` and holds the parties' statuses and traffic so far."""
    scenario = deploy.scenario
    module, name = READERS[scenario.protocol].split(":")
    read: Reader = getattr(importlib.import_module(module), name)
    split = load_split(scenario.data, scenario.seed)
    train, test = split.train, split.test
    ok = all(r.get("status") == "completed" for r in results) and not any(codes)
    ok = ok and interrupted is None
    epochs = read(deploy, split, results, ok)
    summary = summary_header(scenario, "grpc", split, epochs.info)
    summary.update(
        transport="insecure" if deploy.insecure else "mTLS",
        processes=len(results),
        exit_codes=list(codes),
        agents={
            str(i): {
                k: r.get(k) for k in ("party", "status", "bytes_sent", "grpc_bytes_sent", "wall_s")
            }
            for i, r in enumerate(results)
        },
        grpc_bytes_total=sum(r.get("grpc_bytes_sent", 0) for r in results),
    )
    writer = RunWriter(out)
    if not ok:
        summary["status"] = "failed: " + "; ".join(
            f"agent {i}: {r.get('status')}"
            for i, r in enumerate(results)
            if r.get("status") != "completed"
        )
        if interrupted is not None:
            summary.update(
                agent_statuses=summary["status"], status="interrupted", interrupted_by=interrupted
            )
        summary.update(
            wall_s=wall_s,
            bytes_total=sum(int(r.get("bytes_sent", 0) or 0) for r in results),
            messages_total=sum(int(r.get("messages_sent", 0) or 0) for r in results),
        )
        writer.write_json("summary.json", summary)
        return summary

    metrics: list[dict[str, Any]] = []
    for e, (factors, twin) in enumerate(zip(epochs.factors, epochs.twin, strict=True)):
        record = {
            "epoch": e,
            **epoch_rmse(factors, twin, train, test, epochs.offset),
            **epochs.records[e],
        }
        metrics.append(record)
        writer.append_metrics(record)
    U, V = epochs.factors[-1]
    np.savez(out / "factors.npz", U=U, V=V)  # the last epoch's
    # the same model file a simulation writes: ids back to the data, the offset
    model = RatingsModel.from_training((U, V), train, epochs.offset)
    summary["model"] = model.save(out / MODEL_FILE).name

    stats = TrafficStats()
    seconds_per_party: dict[str, float] = dict.fromkeys(epochs.groups.values(), 0.0)
    for i, r in enumerate(results):
        stats.merge(TrafficStats.from_dict(r["traffic"]))
        lines = read_metrics_tolerant(deploy.agent_out(i) / "metrics.jsonl")
        seconds_per_party[epochs.groups[i]] += sum(m["crypto_s"] + m["compute_s"] for m in lines)
    setup_s = max(r.get("wall_s", 0.0) for r in results) - sum(m["wall_s"] for m in metrics)
    summary = finish_summary(
        summary,
        scenario,
        train,
        test,
        metrics,
        writer,
        wall_s=wall_s,
        setup_s=max(setup_s, 0.0),
        setup_bytes=epochs.setup_bytes,
        stats=stats,
        bytes_per_party=party_bytes(stats, epochs.groups),
        seconds_per_party=seconds_per_party,
    )
    # A resumed job: the totals of all its parts (``traffic`` stays this run's).
    summary.update(job_totals(results))
    writer.write_json("summary.json", summary)
    return summary


def setup_bytes(results: Sequence[dict[str, Any]]) -> int:
    """The job's setup bytes (round -1), counted once over a resumed job's parts."""
    return sum(
        int(r.get("job_setup_bytes_sent", r.get("setup_bytes_sent", 0)) or 0) for r in results
    )
