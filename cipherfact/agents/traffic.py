"""Byte and message accounting per edge, per round and per stage.

Every transport owns one ``TrafficStats`` and records each envelope it
delivers, so the numbers a simulation reports are the ones a deployment puts
on the wire (payload bytes; the gRPC transport adds its framing separately).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cipherfact.agents.envelope import AgentId, Envelope


@dataclass
class TrafficStats:
    """Counters keyed by (sender, receiver), by round and by stage."""

    bytes_by_edge: dict[tuple[AgentId, AgentId], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    messages_by_edge: dict[tuple[AgentId, AgentId], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    bytes_by_round: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    messages_by_round: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes_by_stage: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages_by_stage: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, env: Envelope) -> None:
        edge = (env.sender, env.receiver)
        self.bytes_by_edge[edge] += env.nbytes
        self.messages_by_edge[edge] += 1
        self.bytes_by_round[env.round] += env.nbytes
        self.messages_by_round[env.round] += 1
        self.bytes_by_stage[env.stage] += env.nbytes
        self.messages_by_stage[env.stage] += 1

    def merge(self, other: TrafficStats) -> None:
        """Add another transport's counters (e.g. one per Ray actor)."""
        for src, dst in (
            (other.bytes_by_edge, self.bytes_by_edge),
            (other.messages_by_edge, self.messages_by_edge),
            (other.bytes_by_round, self.bytes_by_round),
            (other.messages_by_round, self.messages_by_round),
            (other.bytes_by_stage, self.bytes_by_stage),
            (other.messages_by_stage, self.messages_by_stage),
        ):
            for key, value in src.items():
                dst[key] += value  # type: ignore[index]

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_edge.values())

    @property
    def messages_total(self) -> int:
        return sum(self.messages_by_edge.values())

    def bytes_sent_by(self, agent: AgentId) -> int:
        return sum(b for (s, _), b in self.bytes_by_edge.items() if s == agent)

    def bytes_received_by(self, agent: AgentId) -> int:
        return sum(b for (_, r), b in self.bytes_by_edge.items() if r == agent)

    def bytes_in_rounds(self, first: int, stop: int) -> int:
        """Bytes sent in rounds ``first <= round < stop``."""
        return sum(b for r, b in self.bytes_by_round.items() if first <= r < stop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_total": self.bytes_total,
            "messages_total": self.messages_total,
            "bytes_by_stage": dict(self.bytes_by_stage),
            "messages_by_stage": dict(self.messages_by_stage),
            "bytes_by_edge": {f"{s}->{r}": b for (s, r), b in sorted(self.bytes_by_edge.items())},
            "messages_by_edge": {
                f"{s}->{r}": n for (s, r), n in sorted(self.messages_by_edge.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrafficStats:
        """Rebuild the edge and stage counters from ``to_dict`` (e.g. one per deployed
        agent's ``result.json``); per-round counters are not part of that record."""
        out = cls()
        try:
            for name in ("bytes_by_edge", "messages_by_edge"):
                for key, value in data.get(name, {}).items():
                    sender, receiver = key.split("->")
                    getattr(out, name)[(int(sender), int(receiver))] += int(value)
            for name in ("bytes_by_stage", "messages_by_stage"):
                for key, value in data.get(name, {}).items():
                    getattr(out, name)[str(key)] += int(value)
        except (AttributeError, ValueError) as exc:
            raise ValueError(f"not a traffic record: {exc}") from exc
        return out
