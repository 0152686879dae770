"""Network emulation: what a run's messages would cost on a slower, lossy network.

Messages are not delayed (a simulation should not sleep); each envelope is
charged simulated seconds, and the run reports simulated network time next to
its measured compute time, answering "how long on a 10 Mb/s, 50 ms network?".

Model (stated so that users can judge it):

* every directed edge (i, j) has a latency and a bandwidth, drawn once per
  undirected edge from the seed when ``jitter`` > 0 (otherwise the nominal
  values);
* a message of b bytes is transmitted ``a >= 1`` times, a drawn from a
  geometric law with success probability ``1 - loss`` from a generator keyed by
  (seed, round, stage, sender, receiver), so the draws do not depend on
  delivery order or engine; each lost copy costs its transfer time plus a
  retransmission timeout of two latencies;
* the messages of one edge in one wave (a protocol round's stage) share the
  link: edge time = latency + sum of (transfers + retransmission timeouts);
* waves are synchronous: a wave takes as long as its slowest edge, and the run's
  simulated network time is the sum over waves; so a protocol gives a message
  and the messages it causes different (round, stage) pairs (csr_fhe_mf's users
  send RS their ``structure``, then RS sends every user and the CSP its
  ``layout``), which its tests check;
* except in *turn* stages (``NetworkModel.turns``, declared by the protocol's
  app): there a server talks to one peer at a time and waits for its answer
  (FedMF's users take turns), so each edge's messages are a wave of their own
  (wave ``(round, "stage@a-b")`` for the edge {a, b}) and the stage costs the
  sum over its edges, not the slowest one.

All quantities depend only on the envelopes' routing fields and sizes, so the
in-memory and Ray engines report the same numbers for the same seed.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope

Wave = tuple[int, str]  # (round, stage)


@dataclass(frozen=True)
class NetworkModel:
    """Nominal link parameters; ``bandwidth_mbps=None`` means unlimited bandwidth."""

    latency_ms: float = 0.0
    bandwidth_mbps: float | None = None
    loss: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    #: stages whose edges take turns (see the module doc); set by the runner from
    #: the protocol's app, not by the user
    turns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
            raise TypeError(f"latency_ms must be a number, got {self.latency_ms!r}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms must be a finite number >= 0, got {self.latency_ms}")
        if self.bandwidth_mbps is not None and not (
            math.isfinite(self.bandwidth_mbps) and self.bandwidth_mbps > 0
        ):
            raise ValueError(f"bandwidth_mbps must be > 0 (or None), got {self.bandwidth_mbps}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"network seed must be an integer >= 0, got {self.seed!r}")
        if not all(isinstance(s, str) and s and "@" not in s for s in self.turns):
            raise ValueError(f"turns must be stage names without '@', got {self.turns!r}")

    def wave(self, env: Envelope) -> Wave:
        """The wave ``env`` belongs to: its (round, stage), or in a turn stage its
        edge's own wave."""
        if env.stage in self.turns:
            a, b = sorted((env.sender, env.receiver))
            return env.round, f"{env.stage}@{a}-{b}"
        return env.round, env.stage

    @property
    def enabled(self) -> bool:
        """Whether the model charges anything at all."""
        return self.latency_ms > 0 or self.bandwidth_mbps is not None or self.loss > 0

    def link(self, a: AgentId, b: AgentId) -> tuple[float, float]:
        """(latency seconds, bandwidth bytes/s) of the undirected edge {a, b}."""
        latency = self.latency_ms / 1e3
        bandwidth = math.inf if self.bandwidth_mbps is None else self.bandwidth_mbps * 1e6 / 8
        if self.jitter > 0:
            rng = np.random.default_rng([self.seed, 0x11, min(a, b), max(a, b)])
            lat_f, bw_f = 1.0 + self.jitter * rng.uniform(-1.0, 1.0, size=2)
            latency *= float(lat_f)
            bandwidth *= float(bw_f)
        return latency, bandwidth

    def attempts(self, env: Envelope) -> int:
        """How many times ``env`` is sent before one copy arrives (>= 1)."""
        if self.loss == 0:
            return 1
        stage = zlib.crc32(env.stage.encode("utf-8"))
        rng = np.random.default_rng(
            [self.seed, 0x22, env.round + 1, stage, env.sender, env.receiver]
        )
        return int(rng.geometric(1.0 - self.loss))

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "bandwidth_mbps": self.bandwidth_mbps,
            "loss": self.loss,
            "jitter": self.jitter,
            "seed": self.seed,
        }


@dataclass
class NetworkReport:
    """Simulated network cost of a set of waves (e.g. one outer iteration)."""

    seconds: float = 0.0
    retransmissions: int = 0
    waves: int = 0
    seconds_by_stage: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "retransmissions": self.retransmissions,
            "waves": self.waves,
            "seconds_by_stage": dict(self.seconds_by_stage),
        }


class NetworkClock:
    """Charges envelopes to (wave, edge) and reports wave maxima.

    One clock per process that sends envelopes (one per Ray actor); every edge's
    messages are sent by one agent, hence charged by one clock, so clocks merge
    exactly by taking the maximum per wave (``merge_waves``).
    """

    def __init__(self, model: NetworkModel) -> None:
        self.model = model
        self._edge_s: dict[tuple[int, str, AgentId, AgentId], float] = defaultdict(float)
        self._links: dict[tuple[AgentId, AgentId], tuple[float, float]] = {}
        self._retransmissions: dict[Wave, int] = defaultdict(int)

    def record(self, env: Envelope) -> None:
        key = (env.sender, env.receiver)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = self.model.link(env.sender, env.receiver)
        latency, bandwidth = link
        attempts = self.model.attempts(env)
        transfer = env.nbytes / bandwidth
        cost = attempts * transfer + (attempts - 1) * 2.0 * latency
        wave = self.model.wave(env)
        edge = (*wave, env.sender, env.receiver)
        if edge not in self._edge_s:
            cost += latency  # the first message of an edge in a wave pays the latency
        self._edge_s[edge] += cost
        if attempts > 1:
            self._retransmissions[wave] += attempts - 1

    def drain(self) -> tuple[dict[Wave, float], dict[Wave, int]]:
        """Slowest edge per wave, and retransmissions per wave, since the last drain."""
        waves: dict[Wave, float] = {}
        for (round_, stage, _s, _r), seconds in self._edge_s.items():
            wave = (round_, stage)
            waves[wave] = max(waves.get(wave, 0.0), seconds)
        retrans = dict(self._retransmissions)
        self._retransmissions.clear()
        self._edge_s.clear()
        return waves, retrans


def merge_waves(parts: Iterable[Mapping[Wave, float]]) -> dict[Wave, float]:
    """Wave maxima from several clocks (one per host): the maximum per wave."""
    out: dict[Wave, float] = {}
    for part in parts:
        for wave, seconds in part.items():
            out[wave] = max(out.get(wave, 0.0), seconds)
    return out


def merge_retransmissions(parts: Iterable[Mapping[Wave, int]]) -> dict[Wave, int]:
    """Retransmissions per wave from several clocks: the sum per wave."""
    out: dict[Wave, int] = defaultdict(int)
    for part in parts:
        for wave, count in part.items():
            out[wave] += count
    return dict(out)


def report(
    waves: Mapping[Wave, float], retransmissions: Mapping[Wave, int] | None = None
) -> NetworkReport:
    """Synchronous waves: the simulated time is the sum of the wave maxima (a turn
    stage's edge waves are summed under the stage's name)."""
    by_stage: dict[str, float] = defaultdict(float)
    for (_round, stage), seconds in waves.items():
        by_stage[stage.split("@", 1)[0]] += seconds
    return NetworkReport(
        seconds=float(sum(waves.values())),
        retransmissions=int(sum((retransmissions or {}).values())),
        waves=len(waves),
        seconds_by_stage=dict(sorted(by_stage.items())),
    )
