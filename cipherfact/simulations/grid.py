"""Grids: what runs a set of protocol roles, whatever the protocol and the backend.

A protocol contributes a picklable *factory*: called on a host with the agent
ids placed there, it builds those roles (generating secret keys where their
holder runs, so they never travel), and says how a role reports at an outer
boundary, how it is checkpointed, and which measurement hooks the harness may
call (``LocalRoles``). A ``RoleHost`` runs the roles of one host: every call
pumps local messages to quiescence (FIFO per receiver, receivers polled in id
order) and returns the envelopes for other hosts, batched per host.

A grid owns the hosts of one run and routes those batches: ``LocalGrid``
holds its hosts in this process (one host with every agent: the exactly
replayable in-memory run), ``RayGrid`` (``ray_grid.py``) makes each host a Ray
actor. Both offer the same calls (``add_host``, ``public``, ``start``,
``run_outer``, ``checkpoint``, ``restore``, ``hook``, ``info``, ``close``), so
a runner is written once for every backend. Traffic counters,
network-emulation waves, readiness, per-party seconds and host utilisation
are gathered at each outer boundary, where the runner takes metrics and
checkpoints; there is no barrier per message step.
"""

from __future__ import annotations

import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
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


# --- what a protocol's factory builds inside an actor ---------------------------------


@dataclass
class LocalRoles:
    """The roles one actor hosts, and how the generic host treats them.

    ``profilers``: seconds per party group (reported and reset at each
    boundary). ``hooks``: measurement calls the driver may make between outer
    iterations (e.g. factors for the harness's error). ``public``: facts the
    driver may learn (a public config; never a key). ``report(role)``: what a
    role tells the driver at every boundary, the setup's included (None:
    nothing). ``save_state(role)``
    / ``load_state(role, data)``: checkpoint bytes (numbers only, no pickle);
    None where the protocol has no checkpoints. ``close``: releases what the
    factory set up for these roles (e.g. a shared worker pool). ``idle``: work
    the roles left for when no local message is pending (e.g. decryptions
    batched across the host's agents); returns the envelopes each role sends
    once resumed (empty: nothing was left).
    """

    roles: dict[AgentId, Any]
    profilers: dict[str, Profiler] = field(default_factory=dict)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    public: dict[str, Any] = field(default_factory=dict)
    report: Callable[[Any], Any] | None = None
    save_state: Callable[[Any], bytes] | None = None
    load_state: Callable[[Any, bytes], None] | None = None
    close: Callable[[], None] | None = None
    idle: Callable[[], list[tuple[AgentId, list[Envelope]]]] | None = None


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


def _fan_out(
    watchers: list[Callable[[Envelope], None]],
) -> Callable[[Envelope], None] | None:
    """One observer calling each of ``watchers`` (None when there is none)."""
    if len(watchers) <= 1:
        return watchers[0] if watchers else None

    def every(env: Envelope) -> None:
        for watch in watchers:
            watch(env)

    return every


class RoleHost:
    """Runs the roles a factory builds here: in this process (``LocalGrid``) or as
    a Ray actor (``RayGrid`` makes this plain class remote).

    Every public call pumps local messages to quiescence and returns the
    envelopes bound for other hosts. With ``wrap_errors`` (Ray) failures come
    back as ``RuntimeError`` naming the host, its agents and their rounds,
    since that is what Ray carries to the driver; in this process the original
    exception propagates. ``observer`` sees every envelope a local role sends
    (the privacy tests' transcripts), as the network emulation's clock does.
    """

    def __init__(
        self,
        host: HostId,
        factory: RoleFactory,
        placement: Mapping[AgentId, HostId],
        network: NetworkModel | None = None,
        wrap_errors: bool = True,
        observer: Callable[[Envelope], None] | None = None,
    ) -> None:
        # One BLAS thread, as the in-memory run sets: the actor pool already fills
        # the cores, and a fixed thread count keeps float results bit-identical.
        self._blas_limit = threadpool_limits(limits=1)
        self.clock = NetworkClock(network) if network is not None and network.enabled else None
        self.host = host
        self.wrap_errors = wrap_errors
        watchers = [] if observer is None else [observer]
        if self.clock is not None:
            watchers.append(self.clock.record)
        self.transport = HostTransport(host, placement, observer=_fan_out(watchers))
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

    @contextlib.contextmanager
    def _failing(
        self, what: str, catch: tuple[type[Exception], ...] = (Exception,)
    ) -> Iterator[None]:
        """Re-raise a failure during ``what``: unchanged in this process, or as a
        ``RuntimeError`` naming the host, its agents and their rounds (Ray)."""
        try:
            yield
        except catch as exc:
            if not self.wrap_errors:
                raise
            rounds = sorted(
                {
                    r
                    for r in (getattr(x, "round", None) for x in self.roles.values())
                    if isinstance(r, int)
                }
            )
            when = f" at round(s) {rounds}" if rounds else ""
            raise RuntimeError(
                f"host {self.host} (agents {sorted(self.roles)}) failed during {what}{when}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # -- message handling ----------------------------------------------------------------

    def pump(self) -> Outbox:
        """Handle local envelopes until none is left; return what other hosts get."""
        start = time.perf_counter()
        idle = self.local.idle
        while True:
            while self.transport.pending():
                for agent in self.agents.values():
                    agent.poll()
            resumed = idle() if idle is not None else []
            if not resumed:
                break
            for i, envs in resumed:
                self.agents[i].send(envs)
        out = self.transport.take_outbox()
        self.busy_s += time.perf_counter() - start
        return out

    def start(self) -> Outbox:
        """The roles' opening envelopes (public keys, uploads)."""
        with self._failing("setup"):
            for agent in self.agents.values():
                agent.start()
            return self.pump()

    def begin_outer(self) -> Outbox:
        """Every role that has not finished begins its next outer iteration."""
        with self._failing("begin_outer"):
            for i, role in self.roles.items():
                if not role.done:
                    self.agents[i].send(role.begin_outer())
            return self.pump()

    def deliver(self, envs: list[Envelope]) -> Outbox:
        with self._failing("message delivery"):
            self.transport.deliver(envs)
            return self.pump()

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
        with self._failing("checkpoint"):
            if save is None:
                raise ValueError("this protocol has no checkpoints")
            return {i: save(r) for i, r in self.roles.items()}

    def restore(self, states: Mapping[AgentId, bytes]) -> None:
        """Resume every local role from its checkpoint bytes (before ``start``)."""
        load = self.local.load_state
        with self._failing("restore", (KeyError, ValueError, TypeError)):
            if load is None:
                raise ValueError("this protocol has no checkpoints")
            for i, role in self.roles.items():
                load(role, states[i])

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
        if self.local.close is not None:
            self.local.close()
        for role in self.roles.values():
            close = getattr(getattr(role, "scheme", None), "close", None)
            if close is not None:
                close()


# --- the driver -----------------------------------------------------------------------


class StalledError(RuntimeError):
    """No message is in flight but some role has not reached the outer boundary."""


class Grid(ABC):
    """The hosts of one run, and the routing between them (see the module doc).

    Subclasses say how a host is created and called (``add_host``, ``call``,
    ``_drive``, ``close``); the boundary logic is here, once.
    """

    def __init__(self, placement: Mapping[AgentId, HostId], network: NetworkModel | None) -> None:
        self.placement = dict(placement)
        self.hosted = {
            k: sorted(a for a, h in self.placement.items() if h == k)
            for k in sorted(set(self.placement.values()))
        }
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

    def _check_new_host(self, k: HostId) -> None:
        if k not in self.hosted or k in self.hosts:
            raise ValueError(f"host {k} is not in the placement or already exists")

    @abstractmethod
    def add_host(self, k: HostId, factory: RoleFactory) -> None:
        """Create host ``k``; its roles are built there by ``factory``."""

    @abstractmethod
    def call(self, method: str, args: Mapping[HostId, tuple[Any, ...]]) -> dict[HostId, Any]:
        """Call ``method`` on the given hosts and return each host's result."""

    @abstractmethod
    def _drive(self, method: str) -> None:
        """Call ``method`` on every host, then route envelopes until none is in flight."""

    @abstractmethod
    def close(self) -> None:
        """Release every host (worker pools, actors)."""

    def _stalled(self, message: str) -> Exception:
        return StalledError(message)

    def _note_round(self, dest: HostId, envs: list[Envelope]) -> None:
        self._round[dest] = max(self._round[dest], max(e.round for e in envs))
        self.steps += 1

    def public(self, k: HostId) -> dict[str, Any]:
        """Host ``k``'s public facts (what its factory published; never a key)."""
        return self.call("public", {k: ()})[k]

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
            raise self._stalled(f"agents {stuck} did not finish {phase}")
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
        """Call hook ``name`` on the host of ``agent``."""
        k = self.placement[agent]
        return self.call("hook", {k: (name, *args)})[k]

    def info(self) -> dict[str, Any]:
        """Hosts, placement, local vs cross-host messages, host utilisation."""
        return {
            "actors": len(self.hosted),
            "agents_per_actor": {str(k): v for k, v in self.hosted.items()},
            "local_messages": self.local_messages,
            "cross_actor_messages": self.remote_messages,
            "actor_busy_s": {str(k): v for k, v in self.busy_s.items()},
            "deliver_calls": self.steps,
        }


class LocalGrid(Grid):
    """Hosts in this process, driven in lock step; errors propagate unchanged.

    With every agent on one host (``single_host``) this is the in-memory run:
    one delivery order, exactly replayable.
    """

    def add_host(self, k: HostId, factory: RoleFactory) -> None:
        self._check_new_host(k)
        self.hosts[k] = RoleHost(k, factory, self.placement, self.network, wrap_errors=False)

    def call(self, method: str, args: Mapping[HostId, tuple[Any, ...]]) -> dict[HostId, Any]:
        return {k: getattr(self.hosts[k], method)(*a) for k, a in args.items()}

    def _drive(self, method: str) -> None:
        inflight = _merge(self.call(method, {k: () for k in sorted(self.hosts)}))
        while inflight:
            for dest, envs in inflight.items():
                self._note_round(dest, envs)
            inflight = _merge({k: self.hosts[k].deliver(envs) for k, envs in inflight.items()})

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()


def single_host(agents: list[AgentId] | range) -> dict[AgentId, HostId]:
    """Every agent on host 0."""
    return {i: 0 for i in agents}


def _merge(outboxes: Mapping[HostId, Outbox]) -> Outbox:
    """Batches by destination, in host order."""
    merged: Outbox = {}
    for k in sorted(outboxes):
        for dest, envs in sorted(outboxes[k].items()):
            merged.setdefault(dest, []).extend(envs)
    return merged
