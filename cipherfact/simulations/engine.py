"""``InMemoryEngine``: every role of a job in this process, exactly replayable.

It is the grids' host (``grid.RoleHost``) with every agent on it, for callers
that build their roles themselves (protocol tests, the privacy attacks'
transcripts, ``protocols/ppdnmf/job.run_inmemory``, benchmarks): the same delivery order
(receivers in id order, FIFO per receiver) as ``LocalGrid`` and every Ray
actor, so there is one way to run roles in a process. An engine knows nothing
of any protocol's mathematics: it starts the roles, pumps messages until the
system is quiet, and asks roles to begin their next outer iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.traffic import TrafficStats
from cipherfact.protocols.base import StateMachine
from cipherfact.simulations.grid import LocalRoles, RoleHost, StalledError, single_host

__all__ = ["InMemoryEngine", "StalledError"]


class InMemoryEngine:
    """Runs the given roles in this process on one ``RoleHost``; errors propagate
    unchanged. ``observer`` sees every envelope as it is sent."""

    def __init__(
        self,
        roles: Mapping[AgentId, StateMachine],
        observer: Callable[[Envelope], None] | None = None,
    ) -> None:
        built = dict(sorted(roles.items()))
        self.host = RoleHost(
            0,
            lambda _agents: LocalRoles(built),
            single_host(list(built)),
            wrap_errors=False,
            observer=observer,
        )
        self.roles = self.host.roles
        self.agents = self.host.agents
        self.transport = self.host.transport

    @property
    def stats(self) -> TrafficStats:
        return self.transport.stats

    def pump(self) -> None:
        """Deliver messages until none is in flight."""
        self.host.pump()

    def start(self) -> None:
        self.host.start()

    def run_outer(self) -> None:
        """Every unfinished role begins its next outer iteration; return when all
        are at the boundary."""
        self.host.begin_outer()
        stuck = [i for i, r in self.roles.items() if not (r.at_boundary or r.done)]
        if stuck:
            raise StalledError(f"agents {stuck} did not finish the outer iteration")

    def close(self) -> None:
        """Nothing to release: the roles' schemes belong to the caller."""
