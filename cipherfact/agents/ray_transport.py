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

from collections import deque
from collections.abc import Callable, Iterable, Mapping

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
