"""``cipherfact simulate``: run a scenario, show progress, write the results folder.

Output (in ``out_dir``): ``summary.json``, ``metrics.jsonl`` (one line per outer
iteration, flushed as it goes), ``factors.npz`` (each agent's W_i and H_i),
``error.png`` (error per iteration against the references) and ``bytes.png``.
A run that fails still writes ``summary.json`` with ``status`` saying why.

Each protocol has its own runner, found by name in ``RUNNERS`` (imported
lazily), and each ppdnmf backend its own engine in ``PPDNMF_ENGINES``.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cipherfact.protocols.ppdnmf import SETUP_ROUND
from cipherfact.simulations import graph_plot, plots
from cipherfact.simulations.network import (
    NetworkClock,
    NetworkedOuterResult,
    NetworkModel,
    NetworkReport,
    split_setup,
)
from cipherfact.simulations.network import report as network_report
from cipherfact.simulations.ppdnmf_job import (
    OuterResult,
    PPDNMFJob,
    consensus_spread,
    generate_keys,
    prepare_job,
    references,
    relative_error,
    run_inmemory,
)
from cipherfact.simulations.results import RunWriter, machine_info, package_versions
from cipherfact.simulations.scenario import PPDNMFScenario, ScenarioError, scenario_to_dict

BACKENDS = ("inmemory", "ray")


@dataclass(frozen=True)
class SimOptions:
    """Run options that are not part of the scenario (where and how, not what).

    ``network``: link model charged to every envelope (simulated time, reported
    next to measured compute time; None: no emulation). ``ray_actors``: size of
    the Ray actor pool (None: one per CPU of the cluster); ``ray_cpus_per_actor``
    and ``ray_gpus_per_actor`` (None: a fractional share of the cluster's GPUs
    when the solver runs on CUDA, else 0) are what each actor reserves.
    """

    backend: str = "inmemory"
    progress: bool = True
    ray_address: str | None = None
    checkpoint_every: int = 0  # 0: no checkpoints
    resume: bool = False
    network: NetworkModel | None = None
    ray_actors: int | None = None
    ray_cpus_per_actor: float | None = None  # None: 1, or a share when actors > CPUs
    ray_gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ScenarioError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.checkpoint_every < 0:
            raise ScenarioError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ScenarioError(f"ray_actors must be >= 1, got {self.ray_actors}")
        if self.ray_cpus_per_actor is not None and not self.ray_cpus_per_actor > 0:
            raise ScenarioError(f"ray_cpus_per_actor must be > 0, got {self.ray_cpus_per_actor}")
        if self.ray_gpus_per_actor is not None and self.ray_gpus_per_actor < 0:
            raise ScenarioError(f"ray_gpus_per_actor must be >= 0, got {self.ray_gpus_per_actor}")
        if self.network is not None and not isinstance(self.network, NetworkModel):
            raise TypeError(f"network must be a NetworkModel, got {type(self.network).__name__}")


Runner = Callable[[Any, Path, SimOptions], dict[str, Any]]

# (protocol, backend) -> "module:function" with the ``Runner`` signature
RUNNERS: dict[tuple[str, str], str] = {
    ("ppdnmf", "inmemory"): "cipherfact.simulations.simulate:simulate_ppdnmf",
    ("ppdnmf", "ray"): "cipherfact.simulations.simulate:simulate_ppdnmf",
    ("csr_fhe_mf", "inmemory"): "cipherfact.simulations.recsys_sim:simulate_recsys",
    ("csr_fhe_mf", "ray"): "cipherfact.simulations.ray_recsys:simulate_recsys_ray",
    ("fedmf", "inmemory"): "cipherfact.simulations.recsys_sim:simulate_recsys",
    ("fedmf", "ray"): "cipherfact.simulations.ray_recsys:simulate_recsys_ray",
}

# ppdnmf backend -> "module:function" yielding ``OuterResult`` per outer iteration:
#   engine(job, out_dir: Path, options: SimOptions) -> Iterator[OuterResult]
PPDNMF_ENGINES: dict[str, str] = {
    "inmemory": "cipherfact.simulations.simulate:inmemory_engine",
    "ray": "cipherfact.simulations.ray_engine:run_ray_ppdnmf",
}


def resolve(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def simulate(
    scenario: Any,
    out_dir: str | Path,
    *,
    backend: str = "inmemory",
    progress: bool = True,
    options: SimOptions | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and write its results folder; returns the summary."""
    if options is None:
        options = SimOptions(backend=backend, progress=progress)
    runner_path = RUNNERS.get((scenario.protocol, options.backend))
    if runner_path is None:
        backends = sorted(b for p, b in RUNNERS if p == scenario.protocol)
        protocols = sorted({p for p, _ in RUNNERS})
        known = f"it runs on {backends}" if backends else f"known protocols: {protocols}"
        raise ScenarioError(
            f"protocol {scenario.protocol!r} has no runner for backend {options.backend!r} "
            f"({known})"
        )
    runner: Runner = resolve(runner_path)
    # One BLAS thread: agents' small products gain nothing from threads, two
    # busy processes with two threads each were measured 35x slower here, and a
    # fixed thread count keeps floating-point results reproducible.
    with threadpool_limits(limits=1):
        return runner(scenario, Path(out_dir), options)


def inmemory_engine(
    job: PPDNMFJob, out_dir: Path, options: SimOptions
) -> Iterator[NetworkedOuterResult]:
    """Keys generated here, agents in this process, deterministic delivery."""
    if options.checkpoint_every or options.resume:
        raise ScenarioError("checkpoints are supported with --backend ray only")
    bar = tqdm(
        total=job.n_agents,
        desc="keys",
        unit="agent",
        disable=not options.progress,
        file=sys.stderr,
        leave=False,
    )
    schemes = generate_keys(job, progress=lambda _i: bar.update(1))
    bar.close()
    model = options.network
    clock = NetworkClock(model) if model is not None and model.enabled else None
    observer = None if clock is None else clock.record
    for t, result in enumerate(run_inmemory(job, schemes=schemes, observer=observer)):
        network = setup = None
        if clock is not None:
            waves, retrans = clock.drain()
            setup_waves, outer_waves = split_setup(waves)
            setup_retrans, outer_retrans = split_setup(retrans)
            network = network_report(outer_waves, outer_retrans)
            setup = network_report(setup_waves, setup_retrans) if t == 0 else None
        yield NetworkedOuterResult(
            result.metrics,
            result.Ws,
            result.Hs,
            result.stats,
            network=network,
            setup_network=setup,
        )


class _Extras:
    """What engines with network emulation add to the summary (ray: actor facts)."""

    def __init__(self) -> None:
        self.setup: NetworkReport | None = None
        self.engine: dict[str, Any] = {}
        self.emulated = False

    def absorb(self, result: NetworkedOuterResult) -> None:
        if result.setup_network is not None:
            self.setup = result.setup_network
        if result.network is not None:
            self.emulated = True
        self.engine = result.engine or self.engine

    @staticmethod
    def per_agent(job: PPDNMFJob, last: OuterResult) -> dict[int, dict[str, int]]:
        return graph_plot.per_agent_traffic(
            job.n_agents, last.stats.bytes_by_edge, last.stats.messages_by_edge
        )

    def summary(
        self,
        job: PPDNMFJob,
        last: OuterResult,
        all_metrics: list[dict[str, Any]],
        protocol_s: float,
        model: NetworkModel | None,
    ) -> dict[str, Any]:
        """Per-agent traffic (since the last start or resume), simulated network time."""
        out: dict[str, Any] = {
            "traffic_per_agent": {str(i): t for i, t in self.per_agent(job, last).items()},
            **self.engine,
        }
        if self.emulated:
            setup_s = self.setup.seconds if self.setup is not None else 0.0
            network_s = sum(m.get("simulated_network_s", 0.0) for m in all_metrics)
            out["network"] = {
                **({} if model is None else model.to_dict()),
                "setup_s": setup_s,
                "retransmissions": sum(m.get("retransmissions", 0) for m in all_metrics),
            }
            out["simulated_network_s"] = network_s + setup_s
            # compute measured here + network simulated: the run on that network
            out["estimated_total_s"] = protocol_s + network_s + setup_s
        return out


def simulate_ppdnmf(scenario: PPDNMFScenario, out_dir: Path, options: SimOptions) -> dict[str, Any]:
    job = prepare_job(scenario)  # every input check happens here, before any key
    engine = resolve(PPDNMF_ENGINES[options.backend])
    writer = RunWriter(out_dir, append=options.resume)
    summary: dict[str, Any] = {
        "protocol": "ppdnmf",
        "scenario": scenario_to_dict(scenario),
        "scheme": scenario.crypto.scheme,
        "exchange": scenario.exchange,
        "backend": options.backend,
        "n_agents": job.n_agents,
        "data_shape": list(job.X.shape),
        "graph": {**job.graph.to_dict(), "average_degree": job.graph.average_degree},
        "slot_bits": job.codec.slot_bits,
        "machine": machine_info(),
        "versions": package_versions(),
        "status": "running",
    }
    started = time.perf_counter()
    metrics = []
    extras = _Extras()
    last: OuterResult | None = None
    bar = tqdm(
        total=job.config.outer_iters,
        desc=f"ppdnmf[{scenario.exchange}, {scenario.crypto.scheme}]",
        unit="outer",
        disable=not options.progress,
        file=sys.stderr,
    )
    try:
        for last in engine(job, out_dir, options):
            m = last.metrics
            metrics.append(m)
            record = m.to_dict()
            if isinstance(last, NetworkedOuterResult):
                extras.absorb(last)
                if last.network is not None:
                    record["simulated_network_s"] = last.network.seconds
                    record["retransmissions"] = last.network.retransmissions
            writer.append_metrics(record)
            bar.n = m.outer + 1
            bar.set_postfix(
                err=f"{m.rel_error:.4f}",
                spread=f"{m.consensus_spread:.1e}",
                MB=f"{m.bytes / 1e6:.1f}",
            )
            bar.refresh()
    except BaseException as exc:
        summary.update(
            status=f"failed: {type(exc).__name__}: {exc}",
            outer_iters_completed=len(metrics),
            wall_s=time.perf_counter() - started,
        )
        if last is not None:
            writer.write_factors(last.Ws, last.Hs, job.columns)
        writer.write_json("summary.json", summary)
        raise
    finally:
        bar.close()
    if last is None:
        raise ScenarioError("the engine produced no outer iteration")
    wall = time.perf_counter() - started
    writer.write_factors(last.Ws, last.Hs, job.columns)
    all_metrics = writer.read_all_metrics()  # includes iterations before a resume
    rel_error = relative_error(job.blocks, last.Ws, last.Hs)
    setup_bytes = last.stats.bytes_by_round.get(SETUP_ROUND, 0)  # public keys
    setup_messages = last.stats.messages_by_round.get(SETUP_ROUND, 0)
    central, plain = references(job)
    gap = (rel_error - central.rel_error) / central.rel_error if central.rel_error else 0.0
    summary.update(
        status="completed",
        outer_iters_completed=len(all_metrics),
        rel_error=rel_error,
        centralized_rel_error=central.rel_error,
        decentralized_plain_rel_error=plain.rel_error,
        rel_error_gap=gap,
        consensus_spread=consensus_spread(last.Ws),
        wall_s=wall,
        protocol_s=sum(m["wall_s"] for m in all_metrics),
        seconds={
            "crypto": sum(m["crypto_s"] for m in all_metrics),
            "compute": sum(m["compute_s"] for m in all_metrics),
            "transport": sum(m["transport_s"] for m in all_metrics),
        },
        bytes_setup=setup_bytes,
        bytes_total=sum(m["bytes"] for m in all_metrics) + setup_bytes,
        messages_total=sum(m["messages"] for m in all_metrics) + setup_messages,
        traffic=last.stats.to_dict(),
    )
    summary.update(extras.summary(job, last, all_metrics, summary["protocol_s"], options.network))
    writer.write_json("summary.json", summary)
    agent_bytes = {
        i: t["bytes_sent"] + t["bytes_received"] for i, t in extras.per_agent(job, last).items()
    }
    graph_plot.plot_traffic_graph(
        out_dir / "graph.png",
        job.graph,
        agent_bytes,
        dict(last.stats.bytes_by_edge),
        f"{scenario.name}: traffic per agent ({scenario.crypto.scheme}, {options.backend})",
    )
    plots.plot_error(
        out_dir / "error.png",
        {
            f"ppdnmf ({scenario.crypto.scheme})": [m["rel_error"] for m in all_metrics],
            "decentralized, no crypto": plain.history,
            "centralized NMF": central.history,
        },
        f"{scenario.name}: {job.n_agents} agents, rank {scenario.rank}",
    )
    plots.plot_bytes(
        out_dir / "bytes.png",
        [m["bytes"] for m in all_metrics],
        f"{scenario.name}: bytes on the network ({scenario.crypto.scheme})",
    )
    return summary
