"""Envelope <-> protobuf, and chunking of large payloads.

A payload up to ``CHUNK_BYTES`` goes in one unary ``Send``; anything larger is
split into ``EnvelopeChunk`` messages over the client-streaming
``SendChunks``, so no single gRPC message ever nears the 4 MB default limit,
whatever the size of a ciphertext or a CKKS context.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb

WIRE_VERSION = 1
CHUNK_BYTES = 1 << 20  # 1 MiB: a quarter of gRPC's default message limit
MAX_PAYLOAD_BYTES = 1 << 30  # refuse to reassemble anything larger (memory bound)


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


def reassemble(
    pieces: Iterable[pb.EnvelopeChunk], max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[Envelope, int]:
    """Inverse of ``chunks``; checks the header, the sizes and the bound."""
    header: pb.Envelope | None = None
    total = 0
    parts: list[bytes] = []
    received = 0
    for i, piece in enumerate(pieces):
        if i == 0:
            if not piece.HasField("header"):
                raise WireError("first chunk has no envelope header")
            header, total = piece.header, int(piece.total_size)
            if total > max_bytes:
                raise WireError(f"payload of {total} bytes exceeds the limit of {max_bytes}")
        elif piece.HasField("header"):
            raise WireError(f"chunk {i} carries a second header")
        received += len(piece.data)
        if received > total:
            raise WireError(f"chunks carry more than the announced {total} bytes")
        parts.append(piece.data)
    if header is None:
        raise WireError("empty chunk stream")
    if received != total:
        raise WireError(f"chunks carry {received} bytes, header announced {total}")
    return from_proto(header, b"".join(parts))
