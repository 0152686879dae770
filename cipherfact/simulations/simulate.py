"""``cipherfact simulate``: run a scenario, show progress, write the results folder.

Output (in ``out_dir``): ``summary.json``, ``metrics.jsonl`` (one line per outer
iteration, flushed as it goes), ``factors.npz`` (each agent's W_i and H_i),
``error.png`` (error per iteration against the references) and ``bytes.png``.
A run that fails still writes ``summary.json`` with ``status`` saying why.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cipherfact.simulations import plots
from cipherfact.simulations.ppdnmf_job import (
    PPDNMFRun,
    consensus_spread,
    generate_keys,
    prepare_job,
    references,
    run_inmemory,
)
from cipherfact.simulations.results import RunWriter, machine_info, package_versions
from cipherfact.simulations.scenario import PPDNMFScenario, ScenarioError, scenario_to_dict

BACKENDS = ("inmemory",)


def simulate(
    scenario: Any,
    out_dir: str | Path,
    *,
    backend: str = "inmemory",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``scenario`` and write its results folder; returns the summary."""
    if backend not in BACKENDS:
        raise ScenarioError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(scenario, PPDNMFScenario):
        raise ScenarioError(f"protocol {scenario.protocol!r} is not runnable by simulate yet")
    return _simulate_ppdnmf(scenario, Path(out_dir), backend=backend, progress=progress)


def _simulate_ppdnmf(
    scenario: PPDNMFScenario, out_dir: Path, *, backend: str, progress: bool
) -> dict[str, Any]:
    job = prepare_job(scenario)  # every input check happens here, before any key
    writer = RunWriter(out_dir)
    summary: dict[str, Any] = {
        "protocol": "ppdnmf",
        "scenario": scenario_to_dict(scenario),
        "scheme": scenario.crypto.scheme,
        "backend": backend,
        "n_agents": job.n_agents,
        "data_shape": list(job.X.shape),
        "graph": {**job.graph.to_dict(), "average_degree": job.graph.average_degree},
        "slot_bits": job.codec.slot_bits,
        "machine": machine_info(),
        "versions": package_versions(),
        "status": "running",
    }
    started = time.perf_counter()
    bar = tqdm(
        total=job.n_agents,
        desc="keys",
        unit="agent",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    )
    schemes = generate_keys(job, progress=lambda _i: bar.update(1))
    bar.close()
    summary["keygen_s"] = time.perf_counter() - started

    metrics = []
    roles: dict[int, Any] = {}
    engine = None
    bar = tqdm(
        total=job.config.outer_iters,
        desc=f"ppdnmf[{scenario.crypto.scheme}]",
        unit="outer",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        for m, roles_now, engine_now in run_inmemory(job, schemes=schemes):
            roles, engine = roles_now, engine_now
            metrics.append(m)
            writer.append_metrics(m.to_dict())
            bar.update(1)
            bar.set_postfix(
                err=f"{m.rel_error:.4f}",
                spread=f"{m.consensus_spread:.1e}",
                MB=f"{m.bytes / 1e6:.1f}",
            )
    except BaseException as exc:
        summary.update(
            status=f"failed: {type(exc).__name__}: {exc}",
            outer_iters_completed=len(metrics),
            wall_s=time.perf_counter() - started,
        )
        if roles:
            writer.write_factors(
                [r.W for r in roles.values()], [r.H for r in roles.values()], job.columns
            )
        writer.write_json("summary.json", summary)
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - started
    run = PPDNMFRun(
        job,
        [roles[i].W for i in range(job.n_agents)],
        [roles[i].H for i in range(job.n_agents)],
        metrics,
        engine.stats.bytes_total if engine else 0,
        engine.stats.messages_total if engine else 0,
        engine.stats.to_dict() if engine else {},
    )
    writer.write_factors(run.W, run.H, job.columns)

    central, plain = references(job)
    gap = (run.rel_error - central.rel_error) / central.rel_error if central.rel_error else 0.0
    summary.update(
        status="completed",
        outer_iters_completed=len(metrics),
        rel_error=run.rel_error,
        centralized_rel_error=central.rel_error,
        decentralized_plain_rel_error=plain.rel_error,
        rel_error_gap=gap,
        consensus_spread=consensus_spread(run.W),
        wall_s=wall,
        protocol_s=sum(m.wall_s for m in metrics),
        seconds={
            "crypto": sum(m.crypto_s for m in metrics),
            "compute": sum(m.compute_s for m in metrics),
            "transport": sum(m.transport_s for m in metrics),
        },
        bytes_total=run.bytes_total,
        messages_total=run.messages_total,
        traffic=run.traffic,
    )
    writer.write_json("summary.json", summary)
    plots.plot_error(
        out_dir / "error.png",
        {
            f"ppdnmf ({scenario.crypto.scheme})": [m.rel_error for m in metrics],
            "decentralized, no crypto": plain.history,
            "centralized NMF": central.history,
        },
        f"{scenario.name}: {job.n_agents} agents, rank {scenario.rank}",
    )
    plots.plot_bytes(
        out_dir / "bytes.png",
        [m.bytes for m in metrics],
        f"{scenario.name}: bytes on the network ({scenario.crypto.scheme})",
    )
    return summary
