"""The Ray backend of ppdnmf: agents hosted by a bounded pool of Ray actors.

The actors and the driver are the protocol-independent ``RayGrid`` and
``RoleHost`` (``ray_grid.py``); this module says what is ppdnmf's: each actor
builds its placed agents with a key pair generated there (``PPDNMFRoles``:
secret keys never leave it, and scheme objects refuse pickling anyway), an
agent reports its W_i, H_i and timings at an outer boundary and checkpoints
as ``.npz`` numbers, and agents are placed to balance the work per round
(``balanced_placement``: an agent's work grows with its degree). Public keys
travel as envelopes in the protocol's key stage, like every other message.

The protocol sums replies in sorted neighbour order and draws its weights from
(seed, round), so the factors do not depend on delivery order: a run here
equals the in-memory run bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.ray_transport import HostId
from cipherfact.protocols.ppdnmf import PPDNMFAgent, load_state_npz, save_state_npz
from cipherfact.simulations.checkpoint import (
    job_meta,
    load_checkpoint,
    public_config,
    save_checkpoint,
)
from cipherfact.simulations.network import NetworkedOuterResult
from cipherfact.simulations.ppdnmf_job import PPDNMFJob, build_role, generate_key, outer_metrics
from cipherfact.simulations.ray_grid import (
    LocalRoles,
    RayEngineError,
    RayGrid,
    pool_spec,
)
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.scenario import ScenarioError

__all__ = [
    "AgentReport",
    "PPDNMFRoles",
    "RayEngineError",
    "RayRun",
    "balanced_placement",
    "ray_session",
    "round_robin",
    "run_ray_ppdnmf",
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
    pair generated here, in the actor (secret keys never leave it)."""

    job: PPDNMFJob

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        roles = {i: build_role(self.job, i, generate_key(self.job)) for i in agents}
        return LocalRoles(
            roles, report=agent_report, save_state=_save_state, load_state=_load_state
        )


# --- the driver ----------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Join ``address``, or start a local Ray sized to this machine; yields whether
    this call started Ray (and so shuts it down on the way out, errors included).
    An already initialized Ray (a test fixture, a notebook) is used as it is."""
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        yield True
    finally:
        ray.shutdown()


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


def run_ray_ppdnmf(job: PPDNMFJob, out_dir: Path, options: Any) -> Iterator[NetworkedOuterResult]:
    """The ``ray`` backend of ``cipherfact simulate``: one result per outer iteration.

    ``options`` is a ``SimOptions``. Starts (and afterwards stops) a local Ray
    unless ``options.ray_address`` names a cluster or Ray is already running.
    """
    with ray_session(options.ray_address):
        yield from RayRun(job, Path(out_dir), options)


class RayRun:
    """One run on the Ray cluster, iterated for its outer results.

    With ``checkpoint_every`` K the agents' states are saved after every K-th
    outer iteration, once the harness has written that iteration's metrics (the
    code after ``yield`` runs when the next result is asked for); ``resume``
    restores the latest checkpoint, truncates ``metrics.jsonl`` to it, redoes
    the key exchange with fresh keys and continues. ``engine`` is the live
    engine while iterating (tests use it to kill an actor).
    """

    def __init__(self, job: PPDNMFJob, out_dir: Path, options: Any) -> None:
        self.job = job
        self.out_dir = Path(out_dir)
        self.options = options
        self.engine: RayGrid | None = None

    def __iter__(self) -> Iterator[NetworkedOuterResult]:
        import ray

        job, out_dir, options = self.job, self.out_dir, self.options
        meta = job_meta(
            job.config.job_id,
            job.n_agents,
            job.config.inner_iters,
            job.X,
            job.graph.edges,
            config=public_config(job.scenario, job.graph.edges, job.codec),
        )
        first = 0
        states = None
        if options.resume:
            ckpt = load_checkpoint(out_dir, meta)
            if ckpt.outer >= job.config.outer_iters:
                raise ScenarioError(
                    f"the checkpoint in {out_dir} is at outer iteration {ckpt.outer}, the end "
                    f"of this run ({job.config.outer_iters}); nothing to resume"
                )
            first, states = ckpt.outer, ckpt.states
            RunWriter(out_dir, append=True).truncate_metrics(first)
        try:
            pool = pool_spec(
                job.n_agents,
                ray.cluster_resources(),
                actors=options.ray_actors,
                cpus_per_actor=options.ray_cpus_per_actor,
                gpus_per_actor=options.ray_gpus_per_actor,
                wants_gpu=job.scenario.solver.device.startswith("cuda"),
            )
        except ValueError as exc:
            raise ScenarioError(str(exc)) from exc
        network = options.network
        emulated = network is not None and network.enabled
        placement = balanced_placement(
            [job.graph.degree(i) for i in range(job.n_agents)], pool.actors
        )
        engine = self.engine = RayGrid(placement, pool, network)
        try:
            for k in engine.hosted:
                engine.add_host(k, PPDNMFRoles(job))
            if states is not None:
                engine.restore(states)
            setup = engine.start()
            for t in range(first, job.config.outer_iters):
                before = engine.stats.bytes_total, engine.stats.messages_total
                start = time.perf_counter()
                agents, net = engine.run_outer(f"outer iteration {t}")
                wall = time.perf_counter() - start
                Ws, Hs, seconds = _reports_to_lists(job, agents)
                metrics = outer_metrics(job, t, Ws, Hs, seconds, wall, engine.stats, before)
                yield NetworkedOuterResult(
                    metrics,
                    Ws,
                    Hs,
                    engine.stats,
                    network=net if emulated else None,
                    setup_network=setup if emulated and t == first else None,
                    engine={"ray": engine.info()},
                )
                completed = t + 1
                if options.checkpoint_every and completed % options.checkpoint_every == 0:
                    save_checkpoint(out_dir, completed, engine.checkpoint(), meta)
        finally:
            engine.close()
            self.engine = None
