"""One Ray driver (``RayGrid``) and one actor body (``RoleHost``) for every protocol.

Hundreds of agents must not need hundreds of processes, so each Ray actor (a
"host") runs several protocol roles. What a protocol contributes is a
picklable *factory*: called inside the actor with the agent ids placed there,
it builds those roles (generating secret keys where their holder runs, so they
never travel), and says how a role reports at an outer boundary, how it is
checkpointed, and which measurement hooks the harness may call
(``LocalRoles``). Everything else is the same whatever the protocol:

* inside an actor, every call pumps local messages to quiescence (FIFO per
  receiver, receivers polled in id order, like ``InMemoryEngine``) and returns
  the envelopes for other actors, batched per destination actor;
* the driver submits each batch to its destination at once, busy or not (Ray
  runs one caller's calls to an actor in submission order), so a busy actor
  starts its next batch without a round trip through the driver; an outer
  iteration ends when no call is outstanding (quiescence is trivial at the
  driver, whereas actors pushing to each other would need a distributed
  termination test);
* traffic counters, network-emulation waves, readiness, per-party seconds and
  actor utilisation are gathered at each boundary.

A failure comes back as ``RayEngineError`` naming the actor, its agents, the
phase and the protocol round.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from cipherfact.agents.agent import Agent
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.ray_transport import HostId, HostTransport
from cipherfact.agents.traffic import TrafficStats
from cipherfact.protocols.base import Profiler
from cipherfact.simulations.network import (
    NetworkClock,
    NetworkModel,
    NetworkReport,
    Wave,
    merge_retransmissions,
    merge_waves,
    report,
)

Outbox = dict[HostId, list[Envelope]]


class RayEngineError(RuntimeError):
    """An actor failed or died; the message names its agents, the phase and the round."""


# --- what a protocol's factory builds inside an actor ---------------------------------


@dataclass
class LocalRoles:
    """The roles one actor hosts, and how the generic host treats them.

    ``profilers``: seconds per party group (reported and reset at each
    boundary). ``hooks``: measurement calls the driver may make between outer
    iterations (e.g. factors for the harness's error). ``public``: facts the
    driver may learn (a public config; never a key). ``report(role)``: what a
    role tells the driver at a boundary (None: nothing). ``save_state(role)``
    / ``load_state(role, data)``: checkpoint bytes (numbers only, no pickle);
    None where the protocol has no checkpoints.
    """

    roles: dict[AgentId, Any]
    profilers: dict[str, Profiler] = field(default_factory=dict)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    public: dict[str, Any] = field(default_factory=dict)
    report: Callable[[Any], Any] | None = None
    save_state: Callable[[Any], bytes] | None = None
    load_state: Callable[[Any, bytes], None] | None = None


RoleFactory = Callable[[list[AgentId]], LocalRoles]


@dataclass
class HostReport:
    """What the driver gathers from one actor at a boundary (no keys, no data)."""

    agents: dict[AgentId, Any]
    ready: dict[AgentId, bool]
    seconds: dict[str, float]
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


# --- inside an actor ------------------------------------------------------------------


class RoleHost:
    """Runs the roles a factory builds here; a plain class the driver makes remote.

    Every public call pumps local messages to quiescence and returns the
    envelopes bound for other actors. Failures come back as ``RuntimeError``
    naming the host, its agents and their rounds, since that is what Ray
    carries to the driver.
    """

    def __init__(
        self,
        host: HostId,
        factory: RoleFactory,
        placement: Mapping[AgentId, HostId],
        network: NetworkModel | None = None,
    ) -> None:
        # One BLAS thread, as the in-memory run sets: the actor pool already fills
        # the cores, and a fixed thread count keeps float results bit-identical.
        self._blas_limit = threadpool_limits(limits=1)
        self.clock = NetworkClock(network) if network is not None and network.enabled else None
        self.host = host
        self.transport = HostTransport(
            host, placement, observer=None if self.clock is None else self.clock.record
        )
        local = factory(self.transport.agents)
        if sorted(local.roles) != self.transport.agents:
            raise ValueError(
                f"host {host}: the factory built agents {sorted(local.roles)}, the placement "
                f"puts {self.transport.agents} here"
            )
        self.local = local
        self.roles = dict(sorted(local.roles.items()))
        self.agents = {i: Agent(i, role, self.transport) for i, role in self.roles.items()}
        self.busy_s = 0.0  # seconds spent handling messages: the actor's utilisation

    # -- errors --------------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> RuntimeError:
        rounds = sorted(
            {
                r
                for r in (getattr(x, "round", None) for x in self.roles.values())
                if isinstance(r, int)
            }
        )
        when = f" at round(s) {rounds}" if rounds else ""
        return RuntimeError(
            f"host {self.host} (agents {sorted(self.roles)}) failed during {what}{when}: "
            f"{type(exc).__name__}: {exc}"
        )

    # -- message handling ----------------------------------------------------------------

    def _pump(self) -> Outbox:
        """Handle local envelopes until none is left; return what other hosts get."""
        start = time.perf_counter()
        while self.transport.pending():
            for agent in self.agents.values():
                agent.poll()
        out = self.transport.take_outbox()
        self.busy_s += time.perf_counter() - start
        return out

    def start(self) -> Outbox:
        """The roles' opening envelopes (public keys, uploads)."""
        try:
            for agent in self.agents.values():
                agent.start()
            return self._pump()
        except Exception as exc:
            raise self._fail("setup", exc) from exc

    def begin_outer(self) -> Outbox:
        """Every role that has not finished begins its next outer iteration."""
        try:
            for i, role in self.roles.items():
                if not role.done:
                    self.agents[i].send(role.begin_outer())
            return self._pump()
        except Exception as exc:
            raise self._fail("begin_outer", exc) from exc

    def deliver(self, envs: list[Envelope]) -> Outbox:
        try:
            self.transport.deliver(envs)
            return self._pump()
        except Exception as exc:
            raise self._fail("message delivery", exc) from exc

    # -- boundary calls ------------------------------------------------------------------

    def pid(self) -> int:
        return os.getpid()

    def public(self) -> dict[str, Any]:
        return self.local.public

    def report(self) -> HostReport:
        """Per-agent reports, readiness, seconds per party group since the last
        report, traffic so far and network waves."""
        tell = self.local.report
        waves, retrans = self.clock.drain() if self.clock is not None else ({}, {})
        return HostReport(
            agents={i: tell(r) for i, r in self.roles.items()} if tell is not None else {},
            ready={i: bool(r.at_boundary or r.done) for i, r in self.roles.items()},
            seconds={k: sum(p.take().values()) for k, p in self.local.profilers.items()},
            stats=stats_to_raw(self.transport.stats),
            waves=waves,
            retransmissions=retrans,
            local_messages=self.transport.local_messages,
            remote_messages=self.transport.remote_messages,
            busy_s=self.busy_s,
        )

    def checkpoint(self) -> dict[AgentId, bytes]:
        """Each local role's state as bytes (numbers only)."""
        save = self.local.save_state
        if save is None:
            raise self._fail("checkpoint", ValueError("this protocol has no checkpoints"))
        try:
            return {i: save(r) for i, r in self.roles.items()}
        except Exception as exc:
            raise self._fail("checkpoint", exc) from exc

    def restore(self, states: Mapping[AgentId, bytes]) -> None:
        """Resume every local role from its checkpoint bytes (before ``start``)."""
        load = self.local.load_state
        if load is None:
            raise self._fail("restore", ValueError("this protocol has no checkpoints"))
        try:
            for i, role in self.roles.items():
                load(role, states[i])
        except (KeyError, ValueError, TypeError) as exc:
            raise self._fail("restore", exc) from exc

    def hook(self, name: str, *args: Any) -> Any:
        """Call a measurement hook (e.g. factors for the harness's error)."""
        fn = self.local.hooks.get(name)
        if fn is None:
            raise ValueError(
                f"host {self.host} has no hook {name!r} (has {sorted(self.local.hooks)})"
            )
        return fn(*args)

    def close(self) -> None:
        """Stop the roles' scheme worker pools, where a scheme has any."""
        for role in self.roles.values():
            close = getattr(getattr(role, "scheme", None), "close", None)
            if close is not None:
                close()


# --- the driver -----------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    """How many actors, and what each reserves."""

    actors: int
    num_cpus: float
    num_gpus: float = 0.0


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


class RayGrid:
    """Owns the actors of one run and routes envelope batches between them.

    ``add_host`` creates an actor whose roles a factory builds there (key
    holders first, when other actors need their public facts: ``public``).
    The barrier is per outer iteration (``run_outer``), where the harness takes
    metrics and checkpoints; there is none per message step.
    """

    def __init__(
        self,
        placement: Mapping[AgentId, HostId],
        pool: PoolSpec,
        network: NetworkModel | None = None,
    ) -> None:
        if not pool.num_cpus > 0:
            raise ValueError(f"num_cpus must be > 0, got {pool.num_cpus}")
        self.placement = dict(placement)
        self.hosted = {
            k: sorted(a for a, h in self.placement.items() if h == k)
            for k in sorted(set(self.placement.values()))
        }
        self.pool = pool
        self.network = network
        self.hosts: dict[HostId, Any] = {}
        self.phase = "setup"
        self._round = {k: -1 for k in self.hosted}
        self.stats = TrafficStats()
        self.seconds: dict[str, float] = {}
        self.local_messages = 0
        self.remote_messages = 0
        self.busy_s: dict[HostId, float] = {}
        self.steps = 0

    def add_host(self, k: HostId, factory: RoleFactory) -> None:
        """Create actor ``k``; its roles are built there, in parallel with the others."""
        import ray

        if k not in self.hosted or k in self.hosts:
            raise ValueError(f"host {k} is not in the placement or already exists")
        remote = ray.remote(RoleHost).options(
            num_cpus=self.pool.num_cpus,
            num_gpus=self.pool.num_gpus,
            max_restarts=0,
            max_task_retries=0,
        )
        self.hosts[k] = remote.remote(k, factory, self.placement, self.network)

    def public(self, k: HostId) -> dict[str, Any]:
        """Actor ``k``'s public facts (waits for its roles to be built)."""
        return self._get(k, self.hosts[k].public.remote(), "public")

    def _get(self, k: HostId, ref: Any, method: str) -> Any:
        """``ray.get`` one actor's result; a failure becomes an error naming its agents."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(ref)
        except RayActorError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RayEngineError(
                f"Ray actor {k} hosting agents {self.hosted[k]} died during {self.phase} "
                f"(protocol round {self._round[k]}, call {method}): {first}"
            ) from exc
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RayEngineError(f"{self.phase}: {cause}") from exc

    def call(self, method: str, args: Mapping[HostId, tuple[Any, ...]]) -> dict[HostId, Any]:
        """Call ``method`` on the given actors in parallel and wait for all of them."""
        refs = {k: getattr(self.hosts[k], method).remote(*a) for k, a in args.items()}
        return {k: self._get(k, ref, method) for k, ref in refs.items()}

    def _drive(self, method: str) -> None:
        """Call ``method`` on every actor, then route envelopes until none is in flight."""
        import ray

        busy: dict[Any, tuple[HostId, str]] = {
            getattr(h, method).remote(): (k, method) for k, h in sorted(self.hosts.items())
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

    def _gather(self) -> tuple[dict[AgentId, Any], dict[AgentId, bool], NetworkReport]:
        reports: dict[HostId, HostReport] = self.call("report", {k: () for k in self.hosts})
        agents: dict[AgentId, Any] = {}
        ready: dict[AgentId, bool] = {}
        self.seconds = {}
        for rep in reports.values():
            agents.update(rep.agents)
            ready.update(rep.ready)
            for group, s in rep.seconds.items():
                self.seconds[group] = self.seconds.get(group, 0.0) + s
        self.stats = stats_from_raw([r.stats for r in reports.values()])
        self.local_messages = sum(r.local_messages for r in reports.values())
        self.remote_messages = sum(r.remote_messages for r in reports.values())
        self.busy_s = {k: r.busy_s for k, r in sorted(reports.items())}
        waves = merge_waves(r.waves for r in reports.values())
        retrans = merge_retransmissions(r.retransmissions for r in reports.values())
        return agents, ready, report(waves, retrans)

    def start(self) -> NetworkReport:
        """Run the set-up stage (keys, uploads); returns its simulated network cost."""
        missing = sorted(set(self.hosted) - set(self.hosts))
        if missing:
            raise ValueError(f"hosts {missing} of the placement were never added")
        self.phase = "setup"
        self._drive("start")
        _, _, network = self._gather()
        return network

    def run_outer(self, phase: str) -> tuple[dict[AgentId, Any], NetworkReport]:
        """One outer iteration (``phase`` names it in errors); returns every agent's
        boundary report and the iteration's simulated network cost."""
        self.phase = phase
        self._drive("begin_outer")
        agents, ready, network = self._gather()
        stuck = [i for i, ok in sorted(ready.items()) if not ok]
        if stuck:
            raise RayEngineError(f"agents {stuck} did not finish {phase}")
        return agents, network

    def checkpoint(self) -> dict[AgentId, bytes]:
        states: dict[AgentId, bytes] = {}
        for part in self.call("checkpoint", {k: () for k in self.hosts}).values():
            states.update(part)
        return states

    def restore(self, states: Mapping[AgentId, bytes]) -> None:
        self.call(
            "restore", {k: ({i: states[i] for i in agents},) for k, agents in self.hosted.items()}
        )

    def hook(self, agent: AgentId, name: str, *args: Any) -> Any:
        """Call hook ``name`` on the actor that hosts ``agent``."""
        k = self.placement[agent]
        return self._get(k, self.hosts[k].hook.remote(name, *args), f"hook {name}")

    def info(self) -> dict[str, Any]:
        return {
            "actors": len(self.hosted),
            "num_cpus_per_actor": self.pool.num_cpus,
            "num_gpus_per_actor": self.pool.num_gpus,
            "agents_per_actor": {str(k): v for k, v in self.hosted.items()},
            "local_messages": self.local_messages,
            "cross_actor_messages": self.remote_messages,
            "actor_busy_s": {str(k): v for k, v in self.busy_s.items()},
            "deliver_calls": self.steps,
        }

    def close(self) -> None:
        """Stop the roles' worker processes, then the actors (errors ignored: a dead
        actor has nothing left to stop)."""
        import ray

        refs = []
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                refs.append(host.close.remote())
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                ray.kill(host)
