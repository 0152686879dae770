"""The unit of communication: an ``Envelope`` with opaque payload bytes.

Every transport moves envelopes and nothing else, so the protocols never see a
socket and the network never sees inside a ciphertext: payloads come from
``Scheme.to_bytes`` (or a key's public bytes) and stay opaque until the
receiving protocol decodes them under its own rules.
"""

from __future__ import annotations

from dataclasses import dataclass

AgentId = int


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message from ``sender`` to ``receiver`` in ``job_id``.

    ``round`` counts protocol rounds from 0 (setup stages use -1), ``stage``
    names the step inside a round ("key", "offer", "reply", ...).
    """

    job_id: str
    round: int
    stage: str
    sender: AgentId
    receiver: AgentId
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise TypeError(f"Envelope payload must be bytes, got {type(self.payload).__name__}")
        if self.sender == self.receiver:
            raise ValueError(f"Envelope sender and receiver are the same agent ({self.sender})")

    @property
    def nbytes(self) -> int:
        """Payload size: what the traffic counters add up."""
        return len(self.payload)

    def describe(self) -> str:
        """Routing fields only, never the payload (safe to log)."""
        return (
            f"job={self.job_id} round={self.round} stage={self.stage} "
            f"{self.sender}->{self.receiver} ({self.nbytes} B)"
        )
