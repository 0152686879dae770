"""Protocols as state machines over envelopes.

A protocol role never touches a socket, a clock or a global RNG: it is driven
by ``start()`` and ``step(env)`` and answers with the envelopes to send. The
same object therefore runs unchanged over the in-memory, Ray and gRPC
transports, and a run is a deterministic function of its inputs and seeds
(cryptographic randomness changes ciphertexts, never decrypted values).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from cipherfact.agents.envelope import Envelope


class ProtocolError(RuntimeError):
    """A message arrived that the protocol does not expect at this point.

    The message names what was expected (round, stage, sender), so a fault in
    a deployment can be traced to the peer and round that caused it.
    """


class Profiler:
    """Accumulates seconds per named section ("crypto", "compute").

    Injected by the agent layer; protocols only call ``section``. Timing is
    reported, never used in a decision, so results stay deterministic.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def take(self) -> dict[str, float]:
        """Return and reset the accumulated seconds."""
        out = dict(self.seconds)
        self.seconds.clear()
        return out


class StateMachine(ABC):
    """One protocol role: consumes envelopes, produces envelopes.

    The whole contract every engine (in-memory, Ray, a deployed node) relies
    on: ``start``/``step`` produce envelopes; ``done`` ends the role; roles
    that work in outer iterations (ppdnmf's block coordinate descent, RS's
    epochs) pause at a boundary (``at_boundary``) until a driver, or the role
    itself, calls ``begin_outer``. Roles without iterations keep the defaults.
    """

    @abstractmethod
    def start(self) -> list[Envelope]:
        """Envelopes to send when the role starts (e.g. public keys)."""

    @abstractmethod
    def step(self, env: Envelope) -> list[Envelope]:
        """Handle one envelope; raise ``ProtocolError`` if it is unexpected."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """Whether the role has finished its part of the job."""

    def begin_outer(self) -> list[Envelope]:
        """Begin the next outer iteration (envelopes to send); no-op by default."""
        return []

    @property
    def at_boundary(self) -> bool:
        """Whether the role waits for ``begin_outer``; always by default."""
        return True
