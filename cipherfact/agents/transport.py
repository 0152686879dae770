"""The ``Transport`` interface and the deterministic in-memory transport.

A transport moves envelopes between agents and counts them. The in-memory one
delivers in a fixed order (FIFO per receiver, receivers polled in id order), so
a run is an exact, replayable function of its seed; Ray and gRPC transports
implement the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.traffic import TrafficStats


class TransportError(RuntimeError):
    """A message could not be delivered (unknown receiver, peer down, timeout)."""


class Transport(ABC):
    """Moves envelopes between agents; counts bytes and messages."""

    def __init__(self) -> None:
        self.stats = TrafficStats()

    @abstractmethod
    def send(self, env: Envelope) -> None:
        """Queue ``env`` for its receiver."""

    @abstractmethod
    def recv(self, agent: AgentId, timeout: float | None = None) -> list[Envelope]:
        """All envelopes waiting for ``agent`` (possibly none)."""

    def send_all(self, envs: Iterable[Envelope]) -> None:
        for env in envs:
            self.send(env)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release here
        """Release resources (sockets, actors)."""


class InMemoryTransport(Transport):
    """Single-process transport with deterministic delivery order.

    ``observer`` (optional) sees every envelope as it is sent: the privacy
    tests use it to record the whole conversation of a run.
    """

    def __init__(
        self, agents: Iterable[AgentId], observer: Callable[[Envelope], None] | None = None
    ) -> None:
        super().__init__()
        self._queues: dict[AgentId, deque[Envelope]] = {a: deque() for a in agents}
        self._observer = observer

    def send(self, env: Envelope) -> None:
        queue = self._queues.get(env.receiver)
        if queue is None:
            raise TransportError(f"unknown receiver {env.receiver} for {env.describe()}")
        if env.sender not in self._queues:
            raise TransportError(f"unknown sender {env.sender} for {env.describe()}")
        self.stats.record(env)
        if self._observer is not None:
            self._observer(env)
        queue.append(env)

    def recv(self, agent: AgentId, timeout: float | None = None) -> list[Envelope]:
        queue = self._queues.get(agent)
        if queue is None:
            raise TransportError(f"unknown agent {agent}")
        out = list(queue)
        queue.clear()
        return out

    def pending(self) -> int:
        """Envelopes sent but not yet received, over all agents."""
        return sum(len(q) for q in self._queues.values())
