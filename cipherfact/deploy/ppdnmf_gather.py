"""Gather a deployed ppdnmf job: every agent's W_i, H_i and metrics into one folder.

Only this step (``deploy local``, ``deploy gather``) sees every agent's
factors; a real deployment never does. It writes ``summary.json``,
``metrics.jsonl`` (the relative error per outer iteration from the agents'
local errors) and ``factors.npz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.party_checkpoint import job_totals
from cipherfact.protocols.ppdnmf.job import consensus_spread, prepare_job
from cipherfact.protocols.references import relative_error
from cipherfact.simulations.results import (
    RunWriter,
    machine_info,
    package_versions,
    read_metrics_tolerant,
)
from cipherfact.simulations.scenario import scenario_to_dict


def gather_ppdnmf(
    deploy: DeployJob,
    results: Sequence[dict[str, Any]],
    codes: Sequence[int],
    wall_s: float,
    out: Path,
    *,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """Merge the agents' folders; ``results[i]`` is agent i's ``result.json``.

    ``interrupted`` (a signal's name): ``deploy local`` was stopped; the summary
    then has status ``interrupted`` and whatever the agents wrote until then.
    """
    scenario = deploy.scenario
    job = prepare_job(scenario)
    n = job.n_agents
    summary: dict[str, Any] = {
        "protocol": "ppdnmf",
        "backend": "grpc",
        "transport": "insecure" if deploy.insecure else "mTLS",
        "scenario": scenario_to_dict(scenario),
        "scheme": scenario.crypto.scheme,
        "n_agents": n,
        "data_shape": list(job.X.shape),
        "graph": {**job.graph.to_dict(), "average_degree": job.graph.average_degree},
        "machine": machine_info(),
        "versions": package_versions(),
        "exit_codes": list(codes),
        "agents": {
            str(i): {
                k: r.get(k) for k in ("status", "round", "bytes_sent", "grpc_bytes_sent", "wall_s")
            }
            for i, r in enumerate(results)
        },
        "wall_s": wall_s,
    }
    ok = all(r.get("status") == "completed" for r in results) and not any(codes)
    summary["status"] = (
        "completed"
        if ok
        else "failed: "
        + "; ".join(
            f"agent {i}: {r.get('status')}"
            for i, r in enumerate(results)
            if r.get("status") != "completed"
        )
    )
    if interrupted is not None:
        summary["agent_statuses"] = summary["status"]
        summary["status"] = "interrupted"
        summary["interrupted_by"] = interrupted
        ok = False
    writer = RunWriter(out)
    per_agent = []
    for i in range(n):
        lines = read_metrics_tolerant(deploy.agent_out(i) / "metrics.jsonl")
        per_agent.append({m["outer"]: m for m in lines if "outer" in m})
    # Agents with their own data_path files: the gatherer never sees the data, so
    # the error comes from what each agent reports about its own block (its squared
    # error and squared norm), never from the scenario's generated matrix.
    own_data = any(deploy.agent(i).data_path is not None for i in range(n))
    norm2 = float(np.linalg.norm(job.X) ** 2)
    common = sorted(set.intersection(*(set(m) for m in per_agent))) if per_agent else []
    if own_data:
        summary["data_shape"] = _own_shape(per_agent, common)
    rel_by_outer: dict[int, float] = {}
    for t in common:
        rows = [per_agent[i][t] for i in range(n)]
        sq = sum(r["local_sq_error"] for r in rows)
        total = sum(r["local_sq_norm"] for r in rows) if own_data else norm2
        rel_by_outer[t] = float(np.sqrt(sq / total)) if total else 0.0
        writer.append_metrics(
            {
                "outer": t,
                "rel_error": rel_by_outer[t],
                "bytes": sum(r["bytes_sent"] for r in rows),
                "messages": sum(r["messages_sent"] for r in rows),
                "grpc_bytes": sum(r["grpc_bytes_sent"] for r in rows),
                "crypto_s": sum(r["crypto_s"] for r in rows),
                "compute_s": sum(r["compute_s"] for r in rows),
                "wall_s": max(r["wall_s"] for r in rows),
            }
        )
    if ok:
        Ws, Hs = [], []
        for i in range(n):
            with np.load(deploy.agent_out(i) / "factors.npz", allow_pickle=False) as f:
                Ws.append(f["W"])
                Hs.append(f["H"])
        writer.write_factors(Ws, Hs, None if own_data else job.columns)
        summary.update(
            rel_error=rel_by_outer[common[-1]] if own_data else relative_error(job.blocks, Ws, Hs),
            consensus_spread=consensus_spread(Ws),
            outer_iters_completed=scenario.outer_iters,
        )
    summary.update(job_totals(results))
    writer.write_json("summary.json", summary)
    return summary


def _own_shape(per_agent: list[dict[int, dict[str, Any]]], common: list[int]) -> list[int] | None:
    """The whole matrix's shape from the agents' reported block shapes (rows shared,
    columns added); None before any common outer iteration."""
    if not common:
        return None
    shapes = [per_agent[i][common[0]]["local_shape"] for i in range(len(per_agent))]
    return [int(shapes[0][0]), int(sum(s[1] for s in shapes))]
