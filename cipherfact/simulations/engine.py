"""Engines drive a set of protocol roles to completion over one transport.

An engine knows nothing of any protocol's mathematics: it starts the roles,
pumps messages until the system is quiet, and asks roles to begin their next
outer iteration. The in-memory engine delivers in a fixed order (receivers in
id order, FIFO per receiver), which makes every run exactly replayable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cipherfact.agents.agent import Agent
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.traffic import TrafficStats
from cipherfact.agents.transport import InMemoryTransport
from cipherfact.protocols.base import StateMachine


class StalledError(RuntimeError):
    """No message is in flight but some role has not reached the expected point."""


class InMemoryEngine:
    """Runs every role in this process over an ``InMemoryTransport``."""

    def __init__(
        self,
        roles: Mapping[AgentId, StateMachine],
        observer: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.roles = dict(sorted(roles.items()))
        self.transport = InMemoryTransport(self.roles, observer=observer)
        self.agents = {i: Agent(i, role, self.transport) for i, role in self.roles.items()}

    @property
    def stats(self) -> TrafficStats:
        return self.transport.stats

    def pump(self) -> int:
        """Deliver messages until none is in flight; returns how many were handled."""
        handled = 0
        while self.transport.pending():
            for agent in self.agents.values():
                handled += agent.poll()
        return handled

    def start(self) -> None:
        for agent in self.agents.values():
            agent.start()
        self.pump()

    def run_outer(self) -> None:
        """Every role begins its next outer iteration; return when all are at the boundary."""
        for i, role in self.roles.items():
            self.agents[i].send(role.begin_outer())
        self.pump()
        stuck = [i for i, r in self.roles.items() if not (r.at_boundary or r.done)]
        if stuck:
            raise StalledError(f"agents {stuck} did not finish the outer iteration")

    def close(self) -> None:
        self.transport.close()
