"""Gather a locally deployed csr_fhe_mf job into the simulation's results folder.

Each party wrote only its own files. This step, which only ``deploy local``
runs, combines RS's masks with the CSP's masked factors epoch by epoch, the
way the simulation's measurement hook does, and writes the usual
``summary.json``, ``metrics.jsonl``, ``rmse.png``, ``bytes.png`` plus
``factors.npz`` (U, V). A real deployment has no such step: no single party
holds both shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.traffic import TrafficStats
from cipherfact.deploy.csr_node import SHARE_FILE
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.protocols import csr_fhe_mf as csr
from cipherfact.simulations.ratings_model import MODEL_FILE, RatingsModel
from cipherfact.simulations.recsys_sim import (
    csr_config,
    csr_info,
    csr_layout,
    csr_twin,
    epoch_rmse,
    finish_summary,
    load_split,
    party_bytes,
    summary_header,
)
from cipherfact.simulations.results import RunWriter, read_metrics_tolerant


def _group(agent_id: int) -> str:
    return "rs" if agent_id == csr.RS_ID else "csp" if agent_id == csr.CSP_ID else "users"


def _shares(path: Path, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        return [(f[f"U_{e}"], f[f"V_{e}"]) for e in range(epochs)]


def _layout(path: Path, cfg: Any) -> Any:
    """The public structure the CSP received: the users' dummies are secret draws,
    so the twin takes them from here."""
    with np.load(path, allow_pickle=False) as f:
        users, items = f["slot_users"], f["slot_items"]
    structures = [items[users == u] for u in range(cfg.n_users)]
    return csr_layout(cfg, structures)


def gather_csr(
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
    split = load_split(scenario.data, scenario.seed)
    train, test = split.train, split.test
    cfg = csr_config(scenario, train)
    nnz = cfg.n_users * cfg.pad_to if cfg.hide_pattern else train.n_ratings
    sizes = {"slots_used": nnz, "chunks": -(-nnz // cfg.plan().params.slot_count)}
    csp_result = results[csr.CSP_ID]
    info = csr_info(cfg, csp_result.get("ckks"), train, sizes)
    summary = summary_header(scenario, "grpc", split, info)
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
    ok = all(r.get("status") == "completed" for r in results) and not any(codes)
    writer = RunWriter(out)
    if not ok or interrupted is not None:
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

    rs_out, csp_out = deploy.agent_out(csr.RS_ID), deploy.agent_out(csr.CSP_ID)
    twin, _ = csr_twin(train, cfg, _layout(csp_out / SHARE_FILE, cfg))
    masks = _shares(rs_out / SHARE_FILE, cfg.epochs)
    masked = _shares(csp_out / SHARE_FILE, cfg.epochs)
    rs_lines = {m["epoch"]: m for m in read_metrics_tolerant(rs_out / "metrics.jsonl")}
    csp_lines = {m["epoch"]: m for m in read_metrics_tolerant(csp_out / "metrics.jsonl")}
    metrics: list[dict[str, Any]] = []
    for e in range(cfg.epochs):
        U, V = masked[e][0] - masks[e][0], masked[e][1] - masks[e][1]
        rs_m, csp_m = rs_lines[e], csp_lines[e]
        record = {
            "epoch": e,
            **epoch_rmse((U, V), twin[e], train, test, cfg.rating_offset),
            "bytes": rs_m["bytes_sent"] + csp_m["bytes_sent"],
            "grpc_bytes": rs_m["grpc_bytes_sent"] + csp_m["grpc_bytes_sent"],
            "wall_s": rs_m["wall_s"],
            "rs_s": rs_m["crypto_s"] + rs_m["compute_s"],
            "csp_s": csp_m["crypto_s"] + csp_m["compute_s"],
        }
        metrics.append(record)
        writer.append_metrics(record)
    np.savez(out / "factors.npz", U=U, V=V)  # the last epoch's
    # the same model file a simulation writes: ids back to the data, the offset
    model = RatingsModel.from_training((U, V), train, cfg.rating_offset)
    summary["model"] = model.save(out / MODEL_FILE).name

    groups = {i: _group(i) for i in range(len(results))}
    stats = TrafficStats()
    seconds_per_party: dict[str, float] = dict.fromkeys(groups.values(), 0.0)
    setup_bytes = 0
    for i, r in enumerate(results):
        stats.merge(TrafficStats.from_dict(r["traffic"]))
        lines = read_metrics_tolerant(deploy.agent_out(i) / "metrics.jsonl")
        seconds_per_party[groups[i]] += sum(m["crypto_s"] + m["compute_s"] for m in lines)
        setup_bytes += sum(m["bytes_sent"] for m in lines if m["epoch"] == -1)
    setup_s = max(r.get("wall_s", 0.0) for r in results) - sum(m["wall_s"] for m in metrics)
    return finish_summary(
        summary,
        scenario,
        train,
        test,
        metrics,
        writer,
        wall_s=wall_s,
        setup_s=max(setup_s, 0.0),
        setup_bytes=setup_bytes,
        stats=stats,
        bytes_per_party=party_bytes(stats, groups),
        seconds_per_party=seconds_per_party,
    )
