"""The Ray engine: ppdnmf agents hosted by a bounded pool of Ray actors.

Hundreds of agents must not need hundreds of processes, so each actor (an
``AgentHost``) runs several agents, placed round-robin; their state, data and
keys live in the actor. Key pairs are generated inside the host (secret keys
never leave it, and scheme objects refuse pickling anyway); public keys travel
as envelopes in the protocol's key stage, like every other message.

The driver keeps the outer-iteration barrier of ``InMemoryEngine.run_outer``
(metrics and checkpoints are taken there) but no barrier per message step:
each host handles its inbox (messages between its own agents stay local) and
returns the envelopes for other hosts, batched per destination host; the
driver submits each batch to its destination at once, busy or not (Ray queues
a caller's calls to an actor in order), so a host moves on to its next batch
without a round trip through the driver. The outer iteration ends when no
call is outstanding: quiescence is trivial to detect at the driver, whereas
hosts pushing to each other directly would need a distributed termination
test. Agents are placed to balance the work per round (``balanced_placement``:
an agent's work grows with its degree). Actor utilisation (``actor_busy_s`` in
the summary) is reported so the cost of the remaining waits is visible.

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
from threadpoolctl import threadpool_limits

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.ray_transport import HostId, HostTransport, RolesHost
from cipherfact.agents.traffic import TrafficStats
from cipherfact.protocols.ppdnmf import PPDNMFAgent, load_state_npz, save_state_npz
from cipherfact.simulations.checkpoint import (
    job_meta,
    load_checkpoint,
    public_config,
    save_checkpoint,
)
from cipherfact.simulations.network import (
    NetworkClock,
    NetworkedOuterResult,
    NetworkModel,
    NetworkReport,
    Wave,
    merge_retransmissions,
    merge_waves,
    report,
)
from cipherfact.simulations.ppdnmf_job import PPDNMFJob, build_role, generate_key, outer_metrics
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.scenario import ScenarioError

Outbox = dict[HostId, list[Envelope]]


class RayEngineError(RuntimeError):
    """A host failed or died; the message names its agents and the round."""


# --- inside an actor ---------------------------------------------------------------


def build_local_roles(job: PPDNMFJob, agents: list[AgentId]) -> dict[AgentId, PPDNMFAgent]:
    """The roles of ``agents`` only, each with a key pair generated here, in the actor
    (secret keys never leave it)."""
    return {i: build_role(job, i, generate_key(job)) for i in agents}


@dataclass
class AgentReport:
    """What the driver gathers from one agent at an outer boundary (metrics only)."""

    W: np.ndarray
    H: np.ndarray
    seconds: dict[str, float]
    round: int
    ready: bool  # at the boundary or done


@dataclass
class HostReport:
    agents: dict[AgentId, AgentReport]
    stats: dict[str, dict[Any, int]]
    waves: dict[Wave, float]
    retransmissions: dict[Wave, int]
    local_messages: int
    remote_messages: int
    busy_s: float


def stats_to_raw(stats: TrafficStats) -> dict[str, dict[Any, int]]:
    """Plain dicts (the counters' defaultdict factories need not travel)."""
    return {
        "bytes_by_edge": dict(stats.bytes_by_edge),
        "messages_by_edge": dict(stats.messages_by_edge),
        "bytes_by_round": dict(stats.bytes_by_round),
        "messages_by_round": dict(stats.messages_by_round),
        "bytes_by_stage": dict(stats.bytes_by_stage),
        "messages_by_stage": dict(stats.messages_by_stage),
    }


def stats_from_raw(parts: list[dict[str, dict[Any, int]]]) -> TrafficStats:
    out = TrafficStats()
    for raw in parts:
        part = TrafficStats()
        for name, counters in raw.items():
            getattr(part, name).update(counters)
        out.merge(part)
    return out


class AgentHost(RolesHost):
    """Runs several ppdnmf agents in one process; a plain class the engine makes remote.

    Every method pumps local messages to quiescence and returns the envelopes
    bound for other hosts. Failures are re-raised as ``RuntimeError`` naming the
    host, its agents and the round, since that is what Ray carries back.
    """

    start_stage = "key exchange"
    skip_done_roles = True

    def __init__(
        self,
        host: HostId,
        job: PPDNMFJob,
        placement: Mapping[AgentId, HostId],
        network: NetworkModel | None = None,
    ) -> None:
        # One BLAS thread, as in the in-memory engine: the actor pool already fills
        # the cores, and a fixed thread count keeps float results bit-identical.
        self._blas_limit = threadpool_limits(limits=1)
        self.clock = NetworkClock(network) if network is not None and network.enabled else None
        transport = HostTransport(
            host, placement, observer=None if self.clock is None else self.clock.record
        )
        self._bind(host, transport, build_local_roles(job, transport.agents))

    def _when(self) -> str:
        return f" at round(s) {sorted({r.round for r in self.roles.values()})}"

    def pid(self) -> int:
        return os.getpid()

    def restore(self, states: Mapping[AgentId, bytes]) -> None:
        """Resume every local agent from its checkpoint bytes (before ``start``)."""
        try:
            for i, role in self.roles.items():
                role.restore_state(load_state_npz(states[i]))
        except (KeyError, ValueError, TypeError) as exc:
            raise self._fail("restore", exc) from exc

    def report(self) -> HostReport:
        """Factors (for the harness's metrics), timings, traffic and network waves."""
        agents = {
            i: AgentReport(
                W=role.W.copy(),
                H=role.H.copy(),
                seconds=dict(role.records[-1].seconds) if role.records else {},
                round=role.round,
                ready=role.at_boundary or role.done,
            )
            for i, role in self.roles.items()
        }
        waves, retrans = self.clock.drain() if self.clock is not None else ({}, {})
        return HostReport(
            agents=agents,
            stats=stats_to_raw(self.transport.stats),
            waves=waves,
            retransmissions=retrans,
            local_messages=self.transport.local_messages,
            remote_messages=self.transport.remote_messages,
            busy_s=self.busy_s,
        )

    def checkpoint(self) -> dict[AgentId, bytes]:
        """Each local agent's state as ``.npz`` bytes (numbers only)."""
        try:
            return {i: save_state_npz(r.checkpoint_state()) for i, r in self.roles.items()}
        except Exception as exc:
            raise self._fail("checkpoint", exc) from exc

    def close(self) -> None:
        for role in self.roles.values():
            close = getattr(role.scheme, "close", None)  # worker pools, where a scheme has any
            if close is not None:
                close()


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


@dataclass(frozen=True)
class PoolSpec:
    """How many actors, and what each reserves."""

    actors: int
    num_cpus: float
    num_gpus: float


def actor_cpus(count: int, cluster_cpus: float, requested: float | None) -> float:
    """CPUs each of ``count`` actors reserves. None: one each, or an even share when
    there are more actors than CPUs. A request the cluster cannot hold is refused:
    Ray would leave the extra actors pending and the run would never start."""
    if requested is None:
        return min(1.0, cluster_cpus / count)
    if not requested > 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {requested}")
    if count * requested > cluster_cpus + 1e-9:
        raise ValueError(
            f"{count} actors x {requested:g} CPUs = {count * requested:g} CPUs, but the Ray "
            f"cluster has {cluster_cpus:g}: Ray could never start them all. Use fewer actors, "
            "fewer CPUs per actor, or leave --ray-cpus-per-actor out to share the CPUs"
        )
    return requested


def pool_spec(
    n_agents: int,
    resources: Mapping[str, float],
    *,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    wants_gpu: bool = False,
) -> PoolSpec:
    """Default: one actor per CPU of the cluster (never more than agents); a GPU
    solver on a cluster with GPUs shares them fractionally between the actors."""
    if cpus_per_actor is not None and not cpus_per_actor > 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    if gpus_per_actor is not None and gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    cpus = float(resources.get("CPU", 1.0))
    count = actors if actors is not None else max(1, int(cpus // (cpus_per_actor or 1.0)))
    count = min(count, n_agents)
    if gpus_per_actor is None:
        gpus = float(resources.get("GPU", 0.0))
        gpus_per_actor = min(1.0, gpus / count) if wants_gpu and gpus > 0 else 0.0
    return PoolSpec(count, actor_cpus(count, cpus, cpus_per_actor), gpus_per_actor)


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


class RayPPDNMFEngine:
    """Owns the actors of one run; the barrier logic lives in the driver."""

    def __init__(
        self,
        job: PPDNMFJob,
        pool: PoolSpec,
        network: NetworkModel | None = None,
    ) -> None:
        import ray

        self.job = job
        self.pool = pool
        self.placement = balanced_placement(
            [job.graph.degree(i) for i in range(job.n_agents)], pool.actors
        )
        self.hosted = {
            k: sorted(a for a, h in self.placement.items() if h == k) for k in range(pool.actors)
        }
        remote_host = ray.remote(AgentHost).options(
            num_cpus=pool.num_cpus, num_gpus=pool.num_gpus, max_restarts=0, max_task_retries=0
        )
        job_ref = ray.put(job)
        self.hosts: list[Any] = [
            remote_host.remote(k, job_ref, self.placement, network) for k in range(pool.actors)
        ]
        self.outer = 0
        self._round = {k: -1 for k in range(pool.actors)}
        self.stats = TrafficStats()
        self.local_messages = 0
        self.remote_messages = 0
        self.busy_s: dict[HostId, float] = {}
        self.steps = 0

    def _phase(self) -> str:
        return f"outer iteration {self.outer}"

    def _get(self, k: HostId, ref: Any, method: str) -> Any:
        """``ray.get`` one host's result; a failure becomes an error naming its agents."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(ref)
        except RayActorError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RayEngineError(
                f"Ray actor {k} hosting agents {self.hosted[k]} died during {self._phase()} "
                f"(protocol round {self._round[k]}, call {method}): {first}"
            ) from exc
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RayEngineError(f"{self._phase()}: {cause}") from exc

    def call(self, method: str, args: Mapping[HostId, tuple[Any, ...]]) -> dict[HostId, Any]:
        """Call ``method`` on the given hosts in parallel and wait for all of them."""
        refs = {k: getattr(self.hosts[k], method).remote(*a) for k, a in args.items()}
        return {k: self._get(k, ref, method) for k, ref in refs.items()}

    def _drive(self, method: str) -> None:
        """Call ``method`` on every host, then route envelopes until none is in flight.

        No barrier per message step: as soon as one host returns, its batches
        are submitted to their destination hosts, busy or not. Ray runs the
        calls of one caller on one (single-threaded) actor in submission order,
        so a busy host starts on the next batch the moment it finishes, without
        a round trip through the driver, and each host's inbox stays in order
        (results do not depend on the order anyway). Quiet = no call outstanding.
        """
        import ray

        busy: dict[Any, tuple[HostId, str]] = {
            getattr(h, method).remote(): (k, method) for k, h in enumerate(self.hosts)
        }
        while busy:
            done, _ = ray.wait(list(busy), num_returns=1)
            for ref in done:
                k, name = busy.pop(ref)
                outbox: Outbox = self._get(k, ref, name)
                for dest, envs in sorted(outbox.items()):
                    self._round[dest] = max(self._round[dest], max(e.round for e in envs))
                    busy[self.hosts[dest].deliver.remote(envs)] = (dest, "deliver")
                    self.steps += 1

    def restore(self, states: Mapping[AgentId, bytes]) -> None:
        self.call(
            "restore", {k: ({i: states[i] for i in agents},) for k, agents in self.hosted.items()}
        )

    def start(self) -> NetworkReport:
        """Key exchange; returns its simulated network cost."""
        self._drive("start")
        _, network = self._gather()
        return network

    def run_outer(self) -> tuple[dict[AgentId, AgentReport], NetworkReport]:
        self._drive("begin_outer")
        agents, network = self._gather()
        stuck = [i for i, a in sorted(agents.items()) if not a.ready]
        if stuck:
            raise RayEngineError(f"agents {stuck} did not finish {self._phase()}")
        self.outer += 1
        return agents, network

    def _gather(self) -> tuple[dict[AgentId, AgentReport], NetworkReport]:
        reports: dict[HostId, HostReport] = self.call("report", {k: () for k in self.hosted})
        agents: dict[AgentId, AgentReport] = {}
        for rep in reports.values():
            agents.update(rep.agents)
        self.stats = stats_from_raw([r.stats for r in reports.values()])
        self.local_messages = sum(r.local_messages for r in reports.values())
        self.remote_messages = sum(r.remote_messages for r in reports.values())
        self.busy_s = {k: r.busy_s for k, r in sorted(reports.items())}
        waves = merge_waves(r.waves for r in reports.values())
        retrans = merge_retransmissions(r.retransmissions for r in reports.values())
        return agents, report(waves, retrans)

    def checkpoint(self) -> dict[AgentId, bytes]:
        states: dict[AgentId, bytes] = {}
        for part in self.call("checkpoint", {k: () for k in self.hosted}).values():
            states.update(part)
        return states

    def info(self) -> dict[str, Any]:
        return {
            "actors": self.pool.actors,
            "num_cpus_per_actor": self.pool.num_cpus,
            "num_gpus_per_actor": self.pool.num_gpus,
            "agents_per_actor": {str(k): v for k, v in self.hosted.items()},
            "local_messages": self.local_messages,
            "cross_actor_messages": self.remote_messages,
            "actor_busy_s": {str(k): v for k, v in self.busy_s.items()},
            "deliver_calls": self.steps,
        }

    def close(self) -> None:
        """Stop the key holders' worker processes, then the actors (errors ignored:
        a dead actor has nothing left to stop)."""
        import ray

        refs = []
        for host in self.hosts:
            with contextlib.suppress(Exception):  # a dead actor: nothing to stop
                refs.append(host.close.remote())
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
        for host in self.hosts:
            with contextlib.suppress(Exception):
                ray.kill(host)


def _merge(outboxes: Mapping[HostId, Outbox]) -> Outbox:
    """Batches by destination, in host order (deterministic, though results do not
    depend on it)."""
    merged: Outbox = {}
    for k in sorted(outboxes):
        for dest, envs in sorted(outboxes[k].items()):
            merged.setdefault(dest, []).extend(envs)
    return merged


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
        self.engine: RayPPDNMFEngine | None = None

    def __iter__(self) -> Iterator[NetworkedOuterResult]:
        import ray

        job, out_dir, options = self.job, self.out_dir, self.options
        meta = job_meta(
            job.config.job_id, job.n_agents, job.config.inner_iters, job.X, job.graph.edges,
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
        engine = self.engine = RayPPDNMFEngine(job, pool, network)
        engine.outer = first
        try:
            if states is not None:
                engine.restore(states)
            setup = engine.start()
            for t in range(first, job.config.outer_iters):
                before = engine.stats.bytes_total, engine.stats.messages_total
                start = time.perf_counter()
                agents, net = engine.run_outer()
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
