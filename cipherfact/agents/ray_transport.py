"""``HostTransport``: the transport of one Ray actor that hosts several agents.

A simulation with hundreds of agents must not need hundreds of processes, so a
Ray actor ("host") runs many agents. Envelopes between agents of the same host
never leave it; envelopes for agents elsewhere wait in an outbox, batched per
destination host, until the engine collects them (one remote call per host
and pump step instead of one per message). Delivery inside a host is FIFO per
receiver, receivers polled in id order, like ``InMemoryTransport``.

This module does not import ray: the engine moves the outboxes, so the
transport is testable in one process and knows nothing of the cluster.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import Transport, TransportError

HostId = int


class HostTransport(Transport):
    """Local queues for the agents of host ``host``; an outbox per other host.

    ``placement`` maps every agent of the run to the host that runs it.
    ``observer`` (optional) sees every envelope sent by a local agent, e.g. the
    network emulation's clock. Counters (``stats``) record what this host's
    agents send, so summing every host's counters counts each envelope once.
    """

    def __init__(
        self,
        host: HostId,
        placement: Mapping[AgentId, HostId],
        observer: Callable[[Envelope], None] | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self._placement = dict(placement)
        local = sorted(a for a, h in self._placement.items() if h == host)
        if not local:
            raise ValueError(f"host {host} has no agents in placement {dict(placement)}")
        self._queues: dict[AgentId, deque[Envelope]] = {a: deque() for a in local}
        self._outbox: dict[HostId, list[Envelope]] = {}
        self._observer = observer
        self.local_messages = 0
        self.remote_messages = 0

    @property
    def agents(self) -> list[AgentId]:
        return list(self._queues)

    def send(self, env: Envelope) -> None:
        if env.sender not in self._queues:
            raise TransportError(
                f"host {self.host} cannot send for agent {env.sender} (not hosted here): "
                f"{env.describe()}"
            )
        dest = self._placement.get(env.receiver)
        if dest is None:
            raise TransportError(f"unknown receiver {env.receiver} for {env.describe()}")
        self.stats.record(env)
        if self._observer is not None:
            self._observer(env)
        if dest == self.host:
            self.local_messages += 1
            self._queues[env.receiver].append(env)
        else:
            self.remote_messages += 1
            self._outbox.setdefault(dest, []).append(env)

    def recv(self, agent: AgentId, timeout: float | None = None) -> list[Envelope]:
        queue = self._queues.get(agent)
        if queue is None:
            raise TransportError(f"agent {agent} is not hosted by host {self.host}")
        out = list(queue)
        queue.clear()
        return out

    def deliver(self, envs: Iterable[Envelope]) -> int:
        """Queue envelopes that arrived from other hosts; returns how many."""
        count = 0
        for env in envs:
            queue = self._queues.get(env.receiver)
            if queue is None:
                raise TransportError(
                    f"host {self.host} got an envelope for agent {env.receiver}, which it does "
                    f"not host: {env.describe()}"
                )
            queue.append(env)
            count += 1
        return count

    def take_outbox(self) -> dict[HostId, list[Envelope]]:
        """Envelopes for other hosts, grouped by destination host; empties the outbox."""
        out, self._outbox = self._outbox, {}
        return out

    def pending(self) -> int:
        """Envelopes waiting for local agents."""
        return sum(len(q) for q in self._queues.values())


class RolesHost:
    """What every Ray actor hosting several protocol roles does, whatever the protocol.

    A subclass builds its roles and calls ``_bind``; every public call then
    pumps local messages to quiescence (FIFO per receiver, receivers in id
    order, like the in-memory engine) and returns the envelopes bound for other
    hosts. Failures come back as ``RuntimeError`` naming the host and its
    agents, since that is what Ray carries to the driver.
    """

    #: stage named in the error when ``start`` fails
    start_stage = "setup"
    #: whether ``begin_outer`` skips roles that have finished
    skip_done_roles = False

    def _bind(self, host: int, transport: HostTransport, roles: Mapping[AgentId, Any]) -> None:
        from cipherfact.agents.agent import Agent

        self.host = host
        self.transport = transport
        self.roles = dict(sorted(roles.items()))
        self.agents = {i: Agent(i, role, transport) for i, role in self.roles.items()}
        self.busy_s = 0.0  # seconds spent handling messages: the actor's utilisation

    def _when(self) -> str:
        """Extra context for error messages (e.g. the rounds the roles were in)."""
        return ""

    def _fail(self, what: str, exc: BaseException) -> RuntimeError:
        return RuntimeError(
            f"host {self.host} (agents {sorted(self.roles)}) failed during {what}{self._when()}: "
            f"{type(exc).__name__}: {exc}"
        )

    def _pump(self) -> dict[int, list[Envelope]]:
        """Handle local envelopes until none is left; return what other hosts get."""
        start = time.perf_counter()
        while self.transport.pending():
            for agent in self.agents.values():
                agent.poll()
        out = self.transport.take_outbox()
        self.busy_s += time.perf_counter() - start
        return out

    def start(self) -> dict[int, list[Envelope]]:
        """The roles' opening envelopes (public keys, uploads)."""
        try:
            for agent in self.agents.values():
                agent.start()
            return self._pump()
        except Exception as exc:
            raise self._fail(self.start_stage, exc) from exc

    def begin_outer(self) -> dict[int, list[Envelope]]:
        try:
            for i, role in self.roles.items():
                if not (self.skip_done_roles and role.done):
                    self.agents[i].send(role.begin_outer())
            return self._pump()
        except Exception as exc:
            raise self._fail("begin_outer", exc) from exc

    def deliver(self, envs: list[Envelope]) -> dict[int, list[Envelope]]:
        try:
            self.transport.deliver(envs)
            return self._pump()
        except Exception as exc:
            raise self._fail("message delivery", exc) from exc
