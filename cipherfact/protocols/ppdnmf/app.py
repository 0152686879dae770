"""ppdnmf on a grid: in this process or on Ray actors, with checkpoints and network emulation.

The hosts and routing are the protocol-independent grids (``grid.py``,
``ray_grid.py``); this module says what is ppdnmf's: each host builds its
placed agents with a key pair generated there (``PPDNMFRoles``: secret keys
never leave it, and scheme objects refuse pickling anyway), an agent reports
its W_i, H_i and timings at an outer boundary and checkpoints as ``.npz``
numbers, and on Ray agents are placed to balance the work per round
(``balanced_placement``: an agent's work grows with its degree). Public keys
travel as envelopes in the protocol's key stage, like every other message.

The protocol sums replies in sorted neighbour order and draws its weights from
(seed, round), so the factors do not depend on delivery order or placement: a
Ray run equals the in-memory run bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.ray_transport import HostId
from cipherfact.crypto.batch import DecryptBatch
from cipherfact.crypto.parallel import SharedDecryptPool
from cipherfact.crypto.prefetch import PREFETCH_TABLE_BUDGET, FactorPrefetcher, key_table_bytes
from cipherfact.protocols.ppdnmf import SETUP_ROUND, PPDNMFAgent, load_state_npz, save_state_npz
from cipherfact.protocols.ppdnmf.agent import HostDecryptBatch
from cipherfact.protocols.ppdnmf.job import (
    PPDNMFJob,
    build_role,
    consensus_spread,
    generate_key,
    outer_metrics,
    paillier_options,
    prepare_job,
    references,
    relative_error,
)
from cipherfact.simulations.checkpoint import (
    job_meta,
    public_config,
)
from cipherfact.simulations.grid import Grid, LocalGrid, LocalRoles, single_host
from cipherfact.simulations.progress import progress_bar
from cipherfact.simulations.ray_grid import RayGrid, pool_spec
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.runner import RunApp, run
from cipherfact.simulations.scenario import ScenarioError, run_label, scenario_to_dict

__all__ = [
    "AgentReport",
    "PPDNMFApp",
    "PPDNMFRoles",
    "balanced_placement",
    "round_robin",
    "simulate_ppdnmf",
]


# --- inside an actor ---------------------------------------------------------------


@dataclass
class AgentReport:
    """What the driver gathers from one agent at an outer boundary (metrics only)."""

    W: np.ndarray
    H: np.ndarray
    seconds: dict[str, float]
    round: int
    ready: bool  # at the boundary or done


def agent_report(role: PPDNMFAgent) -> AgentReport:
    return AgentReport(
        W=role.W.copy(),
        H=role.H.copy(),
        seconds=dict(role.records[-1].seconds) if role.records else {},
        round=role.round,
        ready=role.at_boundary or role.done,
    )


def _save_state(role: PPDNMFAgent) -> bytes:
    return save_state_npz(role.checkpoint_state())


def _load_state(role: PPDNMFAgent, data: bytes) -> None:
    role.restore_state(load_state_npz(data))


@dataclass(frozen=True)
class PPDNMFRoles:
    """The ``RoleHost`` factory for ppdnmf: the placed agents only, each with a key
    pair generated here, on its host (secret keys never leave it).

    ``shared_pool``: with ``crypto.processes > 1`` and Paillier, the host's agents
    (which run one at a time) share one decryption worker pool, so each
    decryption uses every core (the in-memory run). ``prefetch``: with Paillier,
    one worker process computes every hosted agent's randomness factors ahead of
    use (``FactorPrefetcher``), so a host that runs in one process keeps a
    second core busy (the in-memory run on a multi-core machine);
    ``prefetch_nice``: how far below the host its worker runs (a Ray actor
    reserving one CPU shares the cores with other actors, so its worker runs
    at nice 19 and mostly uses the time its actor waits for the others'
    messages; one reserving ``PAILLIER_HOST_CPUS`` runs it at its own priority);
    ``prefetch_if_all_fit``: only when the worker's table budget holds every
    key of the host (a Ray actor with hundreds of agents gains less than the
    worker's tables and start cost: BENCHMARKS.md, issue 13). ``on_key``
    is told of each key made (a progress bar; in this process only: it is not
    picklable). ``batch_decrypt``:
    with Paillier (and no shared pool), the host's agents queue their round
    decryptions in one ``DecryptBatch`` that the host flushes when idle, so the
    multi-buffer fast path runs with full lanes across agents (its library
    calls on ``crypto.PaillierOptions.ifma_threads`` threads).
    """

    job: PPDNMFJob
    shared_pool: bool = False
    prefetch: bool = False
    prefetch_nice: int = 0
    prefetch_if_all_fit: bool = False
    batch_decrypt: bool = True
    on_key: Callable[[int], object] | None = None

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        crypto = self.job.scenario.crypto
        prefetcher = None
        wanted = self.prefetch and crypto.scheme == "paillier"
        if wanted and self.prefetch_if_all_fit:
            wanted = worker_fits(self.job, agents)
        if wanted:
            prefetcher = FactorPrefetcher(nice=self.prefetch_nice)
        roles: dict[AgentId, PPDNMFAgent] = {}
        for i in agents:
            roles[i] = build_role(self.job, i, generate_key(self.job))
            if prefetcher is not None:  # its worker starts on this key while we make the next
                roles[i].use_prefetcher(prefetcher)
            if self.on_key is not None:
                self.on_key(1)
        pool = None
        if self.shared_pool and crypto.processes > 1 and crypto.scheme == "paillier":
            pool = SharedDecryptPool(crypto.processes)
            for role in roles.values():
                role.scheme.use_shared_pool(pool)  # type: ignore[attr-defined]
        idle = None
        batch: HostDecryptBatch | None = None
        if self.batch_decrypt and crypto.scheme == "paillier" and pool is None:
            batch = DecryptBatch()
            for role in roles.values():
                role.use_decrypt_batch(batch)
            idle = batch.flush
        closers = [c.close for c in (pool, prefetcher) if c is not None]

        def close() -> None:
            for stop in closers:
                stop()

        return LocalRoles(
            roles,
            report=agent_report,
            save_state=_save_state,
            load_state=_load_state,
            close=close if closers else None,
            idle=idle,
        )


#: nice increment of the prefetch worker of a Ray actor that reserves one CPU (the
#: cores are full of actors): it mostly takes their idle time (see PPDNMFRoles)
RAY_PREFETCH_NICE = 19
#: CPUs one ppdnmf host keeps busy with Paillier and a factor worker: the actor's
#: thread and the worker (and the multi-buffer library's threads while it
#: decrypts), so such a Ray actor reserves two by default and runs its worker at
#: its own priority (hosts whose keys overflow the worker's budget get none, and
#: one CPU). On
#: this project's 2-core machine that is one actor for every agent: 0.87x the
#: protocol time of two one-CPU actors, pairwise (``benchmarks/ray_prefetch.py
#: --compare pool``; BENCHMARKS.md, issue 13)
PAILLIER_HOST_CPUS = 2.0


def host_table_bytes(job: PPDNMFJob, agents: list[AgentId]) -> int:
    """Bytes of the DJN tables a host of ``agents`` builds at the job's window: each
    agent's own key (two CRT tables) and every neighbour's public key (one, with
    ``crypto.djn_public``)."""
    options, bits = paillier_options(job), job.scenario.crypto.key_bits
    own = key_table_bytes(bits, options, owner=True)
    public = key_table_bytes(bits, options, owner=False)
    peers = {j for i in agents for j in job.graph.neighbors(i)}
    return len(agents) * own + len(peers) * public


def worker_fits(job: PPDNMFJob, agents: list[AgentId]) -> bool:
    """Whether a host of ``agents`` gets a prefetch worker under ``crypto.prefetch =
    "auto"``: its tables within the worker's budget."""
    return host_table_bytes(job, agents) <= PREFETCH_TABLE_BUDGET


def _spare_core() -> bool:
    """Whether this process may use more than one core (a prefetch worker pays off)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) > 1


def round_robin(n_agents: int, hosts: int) -> dict[AgentId, HostId]:
    return {i: i % hosts for i in range(n_agents)}


# Relative cost of one agent-round: its fresh encryption and its decryptions
# (a fixed count per agent) against one reply to a neighbour (a scalar
# multiplication and a re-randomization), measured as roughly 4 : 1.
AGENT_ROUND_COST = 4


def balanced_placement(degrees: list[int], hosts: int) -> dict[AgentId, HostId]:
    """Agents to hosts so that every host gets about the same work per round.

    An agent's work grows with its degree (one reply per neighbour), so
    round-robin overloads the host that happens to get the hubs, and every
    round waits for the busiest host. Longest-processing-time-first greedy:
    heaviest agents first, each to the least-loaded host (ties: lowest ids),
    which is within 4/3 of the best split and deterministic. Results do not
    depend on placement (the protocol's sums run in a fixed order).
    """
    if hosts < 1:
        raise ValueError(f"hosts must be >= 1, got {hosts}")
    load = [0] * hosts
    out: dict[AgentId, HostId] = {}
    for i in sorted(range(len(degrees)), key=lambda a: (-degrees[a], a)):
        k = min(range(hosts), key=lambda h: (load[h], h))
        out[i] = k
        load[k] += AGENT_ROUND_COST + degrees[i]
    return dict(sorted(out.items()))


def _reports_to_lists(
    job: PPDNMFJob, agents: Mapping[AgentId, AgentReport]
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, float]]:
    Ws = [agents[i].W for i in range(job.n_agents)]
    Hs = [agents[i].H for i in range(job.n_agents)]
    seconds: dict[str, float] = {}
    for i in range(job.n_agents):
        for name, value in agents[i].seconds.items():
            seconds[name] = seconds.get(name, 0.0) + value
    return Ws, Hs, seconds


class PPDNMFApp(RunApp):
    """ppdnmf for the runner: agents on a grid, metrics per outer iteration,
    ``factors.npz``, the references and the plots at the end."""

    unit = "outer"
    count_key = "outer_iters_completed"

    def __init__(self, job: PPDNMFJob) -> None:
        self.job = job
        self.last: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    @property
    def total(self) -> int:
        return self.job.config.outer_iters

    def describe(self) -> str:
        sc = self.job.scenario
        return f"ppdnmf[{sc.exchange}, {sc.crypto.scheme}]"

    def header(self, backend: str) -> dict[str, Any]:
        job, sc = self.job, self.job.scenario
        return {
            "protocol": "ppdnmf",
            "scenario": scenario_to_dict(sc),
            "scheme": sc.crypto.scheme,
            "exchange": sc.exchange,
            "backend": backend,
            "n_agents": job.n_agents,
            "data_shape": list(job.X.shape),
            "graph": {**job.graph.to_dict(), "average_degree": job.graph.average_degree},
            "slot_bits": job.codec.slot_bits,
        }

    def checkpoint_meta(self) -> dict[str, Any]:
        job = self.job
        return job_meta(
            job.config.job_id,
            job.n_agents,
            job.config.inner_iters,
            job.X,
            job.graph.edges,
            config=public_config(job.scenario, job.graph.edges, job.codec),
        )

    def build_grid(self, options: Any) -> Grid:
        """In memory: one host, keys made here, a shared decryption pool. On Ray:
        actors placed to balance the work per round, keys made in each actor;
        with Paillier each actor reserves ``PAILLIER_HOST_CPUS`` by default."""
        job, network = self.job, options.network
        if options.backend != "ray":
            grid: Grid = LocalGrid(single_host(range(job.n_agents)), network)
            bar = progress_bar(job.n_agents, "keys", "agent", enabled=options.progress, leave=False)
            mode = job.scenario.crypto.prefetch
            spare = _spare_core() if mode == "auto" else mode == "on"
            with bar:
                grid.add_host(
                    0,
                    PPDNMFRoles(
                        job,
                        shared_pool=True,
                        prefetch=spare,
                        on_key=bar.update,
                    ),
                )
            return grid
        import ray

        mode = job.scenario.crypto.prefetch
        resources = ray.cluster_resources()
        with_worker = job.scenario.crypto.scheme == "paillier" and mode != "off"
        grid = self._ray_grid(options, resources, with_worker)  # actors come in add_host
        two_cpus = mode == "auto" and grid.pool.num_cpus >= PAILLIER_HOST_CPUS
        if two_cpus and not all(worker_fits(job, agents) for agents in grid.hosted.values()):
            # no worker would start (PPDNMFRoles): an actor keeps one core busy
            grid = self._ray_grid(options, resources, False)
        pool = grid.pool
        roles = PPDNMFRoles(
            job,
            prefetch=mode != "off",
            # a worker with a reserved CPU of its own need not yield to the actors
            prefetch_nice=0 if pool.num_cpus >= PAILLIER_HOST_CPUS else RAY_PREFETCH_NICE,
            prefetch_if_all_fit=mode == "auto",
        )
        try:
            for k in grid.hosted:
                grid.add_host(k, roles)
        except BaseException:
            grid.close()
            raise
        return grid

    def _ray_grid(self, options: Any, resources: Mapping[str, float], with_worker: bool) -> RayGrid:
        """The actor pool (an actor per ``PAILLIER_HOST_CPUS`` CPUs when its roles get a
        factor worker, else per CPU) with the agents' balanced placement on it."""
        job = self.job
        try:
            pool = pool_spec(
                job.n_agents,
                resources,
                actors=options.ray_actors,
                cpus_per_actor=options.ray_cpus_per_actor,
                gpus_per_actor=options.ray_gpus_per_actor,
                wants_gpu=job.scenario.solver.device.startswith("cuda"),
                host_cpus=PAILLIER_HOST_CPUS if with_worker else 1.0,
            )
        except ValueError as exc:
            raise ScenarioError(str(exc)) from exc
        degrees = [job.graph.degree(i) for i in range(job.n_agents)]
        return RayGrid(balanced_placement(degrees, pool.actors), pool, options.network)

    def record(
        self, t: int, reports: dict[int, Any], grid: Grid, wall_s: float, before: tuple[int, int]
    ) -> dict[str, Any]:
        Ws, Hs, seconds = _reports_to_lists(self.job, reports)
        self.last = Ws, Hs
        return outer_metrics(self.job, t, Ws, Hs, seconds, wall_s, grid.stats, before).to_dict()

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {
            "rel_error": f"{record['rel_error']:.4f}",
            "consensus_spread": f"{record['consensus_spread']:.1e}",
            "MB": f"{record['bytes'] / 1e6:.1f}",
        }

    def save_model(self, writer: RunWriter) -> dict[str, Any]:
        if self.last is None:
            return {}
        writer.write_factors(*self.last, self.job.columns)
        return {}

    def finish(
        self, records: list[dict[str, Any]], grid: Grid, writer: RunWriter, run: dict[str, Any]
    ) -> dict[str, Any]:
        # matplotlib and networkx (0.5 s to import) only where the results are drawn:
        # a Ray actor imports this module for PPDNMFRoles and never draws
        from cipherfact.simulations import graph_plot, plots

        job, sc = self.job, self.job.scenario
        if self.last is None:
            raise ScenarioError("the run produced no outer iteration")
        Ws, Hs = self.last
        stats = grid.stats
        rel_error = relative_error(job.blocks, Ws, Hs)
        setup_bytes = stats.bytes_by_round.get(SETUP_ROUND, 0)  # public keys
        setup_messages = stats.messages_by_round.get(SETUP_ROUND, 0)
        central, plain = references(job)
        gap = (rel_error - central.rel_error) / central.rel_error if central.rel_error else 0.0
        traffic = graph_plot.per_agent_traffic(
            job.n_agents, stats.bytes_by_edge, stats.messages_by_edge
        )
        out = {
            "rel_error": rel_error,
            "centralized_rel_error": central.rel_error,
            "decentralized_plain_rel_error": plain.rel_error,
            "rel_error_gap": gap,
            "consensus_spread": consensus_spread(Ws),
            "protocol_s": sum(m["wall_s"] for m in records),
            "seconds": {
                "crypto": sum(m["crypto_s"] for m in records),
                "compute": sum(m["compute_s"] for m in records),
                "transport": sum(m["transport_s"] for m in records),
            },
            "bytes_setup": setup_bytes,
            "bytes_total": sum(m["bytes"] for m in records) + setup_bytes,
            "messages_total": sum(m["messages"] for m in records) + setup_messages,
            "traffic": stats.to_dict(),
            # since the last start or resume
            "traffic_per_agent": {str(i): t for i, t in traffic.items()},
        }
        label = run_label(sc)
        graph_plot.plot_traffic_graph(
            writer.out_dir / "graph.png",
            job.graph,
            {i: t["bytes_sent"] + t["bytes_received"] for i, t in traffic.items()},
            dict(stats.bytes_by_edge),
            f"{label}: traffic per agent ({sc.crypto.scheme}, {out_backend(grid)})",
        )
        plots.plot_error(
            writer.out_dir / "error.png",
            {
                f"ppdnmf ({sc.crypto.scheme})": [m["rel_error"] for m in records],
                "decentralized, no crypto": plain.history,
                "centralized NMF": central.history,
            },
            f"{label}: {job.n_agents} agents, rank {sc.rank}",
        )
        plots.plot_bytes(
            writer.out_dir / "bytes.png",
            [m["bytes"] for m in records],
            f"{label}: bytes on the network ({sc.crypto.scheme})",
        )
        return out


def out_backend(grid: Grid) -> str:
    return "ray" if isinstance(grid, RayGrid) else "inmemory"


def simulate_ppdnmf(scenario: Any, out_dir: Path, options: Any) -> dict[str, Any]:
    """``cipherfact simulate`` for ppdnmf, every backend (the registry's runner)."""
    job = prepare_job(scenario)  # every input check happens here, before any key
    return run(PPDNMFApp(job), "ppdnmf", Path(out_dir), options)
