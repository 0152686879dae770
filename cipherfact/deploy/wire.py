"""Envelope <-> protobuf, and chunking of large payloads.

A payload up to ``CHUNK_BYTES`` goes in one unary ``Send``; anything larger is
split into ``EnvelopeChunk`` messages over the client-streaming
``SendChunks``, so no single gRPC message ever nears the 4 MB default limit,
whatever the size of a ciphertext or a CKKS context.

Receiving is bounded: ``Reassembler`` reads the header of the first chunk
before anything else, so the servicer can refuse a stream (wrong identity,
job, neighbour, stage, sequence number or size) before buffering a byte of
it, and it never holds more than the size the header announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb

WIRE_VERSION = 1
CHUNK_BYTES = 1 << 20  # 1 MiB: a quarter of gRPC's default message limit
MAX_MESSAGE_BYTES = 4 << 20  # the server's per-message receive limit (gRPC's default, explicit)
MAX_PAYLOAD_BYTES = 1 << 30  # refuse to reassemble anything larger (memory bound, per envelope)
# Per process, shared by every stream being reassembled at once (see servicer.ReassemblyBudget):
# the largest envelope still fits, and no set of concurrent streams can hold more.
REASSEMBLY_BUDGET_BYTES = MAX_PAYLOAD_BYTES


class WireError(ValueError):
    """A message on the wire is malformed (bad version, chunks, sizes)."""


def to_proto(env: Envelope, seq: int, *, with_payload: bool = True) -> pb.Envelope:
    return pb.Envelope(
        version=WIRE_VERSION,
        job_id=env.job_id,
        round=env.round,
        stage=env.stage,
        sender=env.sender,
        receiver=env.receiver,
        seq=seq,
        payload=bytes(env.payload) if with_payload else b"",
    )


def from_proto(msg: pb.Envelope, payload: bytes | None = None) -> tuple[Envelope, int]:
    """(Envelope, seq); raises ``WireError`` for an unknown version or bad routing."""
    if msg.version != WIRE_VERSION:
        raise WireError(
            f"unsupported envelope version {msg.version} (this agent speaks {WIRE_VERSION})"
        )
    try:
        env = Envelope(
            msg.job_id,
            int(msg.round),
            msg.stage,
            int(msg.sender),
            int(msg.receiver),
            msg.payload if payload is None else payload,
        )
    except (TypeError, ValueError) as exc:
        raise WireError(f"malformed envelope: {exc}") from exc
    return env, int(msg.seq)


def parse_envelope(data: bytes) -> pb.Envelope:
    """Parse raw request bytes; a clear ``WireError`` instead of gRPC's generic one."""
    msg = pb.Envelope()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (a bare Exception subclass)
        raise WireError(f"malformed Envelope message ({len(data)} bytes): {exc}") from exc
    return msg


def parse_chunk(data: bytes) -> pb.EnvelopeChunk:
    msg = pb.EnvelopeChunk()
    try:
        msg.ParseFromString(data)
    except Exception as exc:
        raise WireError(f"malformed EnvelopeChunk message ({len(data)} bytes): {exc}") from exc
    return msg


def needs_chunks(env: Envelope, chunk_bytes: int = CHUNK_BYTES) -> bool:
    return env.nbytes > chunk_bytes


def chunks(env: Envelope, seq: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.EnvelopeChunk]:
    """The header first (with the total size), then the payload in pieces."""
    payload = memoryview(bytes(env.payload))
    header = to_proto(env, seq, with_payload=False)
    first = bytes(payload[:chunk_bytes])
    yield pb.EnvelopeChunk(header=header, total_size=len(payload), data=first)
    for start in range(chunk_bytes, len(payload), chunk_bytes):
        yield pb.EnvelopeChunk(data=bytes(payload[start : start + chunk_bytes]))


class Reassembler:
    """Inverse of ``chunks``, one piece at a time.

    ``start`` takes the first chunk and returns its header and announced size,
    so the caller can check them before reading on; ``add`` refuses a second
    header and anything past the announced size; ``finish`` checks the total.
    """

    def __init__(self, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_bytes = max_bytes
        self.header: pb.Envelope | None = None
        self.total = 0
        self.received = 0
        self._parts: list[bytes] = []
        self._count = 0

    def start(self, first: pb.EnvelopeChunk) -> tuple[pb.Envelope, int]:
        """Header and announced total of the first chunk (its data is kept)."""
        if not first.HasField("header"):
            raise WireError("first chunk has no envelope header")
        total = int(first.total_size)
        if total > self.max_bytes:
            raise WireError(f"payload of {total} bytes exceeds the limit of {self.max_bytes}")
        self.header, self.total = first.header, total
        self._take(first.data)
        return first.header, total

    def add(self, piece: pb.EnvelopeChunk) -> None:
        if self.header is None:
            raise WireError("chunk before the envelope header")
        if piece.HasField("header"):
            raise WireError(f"chunk {self._count} carries a second header")
        self._take(piece.data)

    def _take(self, data: bytes) -> None:
        self.received += len(data)
        self._count += 1
        if self.received > self.total:
            raise WireError(f"chunks carry more than the announced {self.total} bytes")
        self._parts.append(data)

    def finish(self) -> tuple[Envelope, int]:
        if self.header is None:
            raise WireError("empty chunk stream")
        if self.received != self.total:
            raise WireError(f"chunks carry {self.received} bytes, header announced {self.total}")
        payload = b"".join(self._parts)
        self._parts = []
        return from_proto(self.header, payload)


def reassemble(
    pieces: Iterable[pb.EnvelopeChunk], max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[Envelope, int]:
    """Inverse of ``chunks``; checks the header, the sizes and the bound."""
    r = Reassembler(max_bytes)
    for i, piece in enumerate(pieces):
        if i == 0:
            r.start(piece)
        else:
            r.add(piece)
    return r.finish()
