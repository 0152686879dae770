"""Wire format: chunking, parsing errors, and the committed generated code."""

from __future__ import annotations

import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy.regen import stale_files
from cipherfact.deploy.wire import (
    WireError,
    chunks,
    from_proto,
    needs_chunks,
    parse_envelope,
    reassemble,
    to_proto,
)

ENV = Envelope("job", 3, "offer", 1, 2, bytes(range(256)) * 41)  # 10496 bytes


def test_generated_code_matches_proto() -> None:
    assert stale_files() == []


def test_proto_roundtrip_keeps_every_field() -> None:
    env, seq = from_proto(parse_envelope(to_proto(ENV, 7).SerializeToString()))
    assert (env, seq) == (ENV, 7)


@pytest.mark.parametrize("chunk_bytes", [1000, 4096, 10496, 20000])
def test_chunks_reassemble_to_the_same_envelope(chunk_bytes: int) -> None:
    pieces = list(chunks(ENV, 5, chunk_bytes))
    assert len(pieces) == max(1, -(-ENV.nbytes // chunk_bytes))
    assert all(len(p.data) <= chunk_bytes for p in pieces)
    assert reassemble(pieces) == (ENV, 5)
    assert needs_chunks(ENV, chunk_bytes) == (ENV.nbytes > chunk_bytes)


def _header_chunk(total: int, data: bytes) -> pb.EnvelopeChunk:
    return pb.EnvelopeChunk(
        header=to_proto(ENV, 0, with_payload=False), total_size=total, data=data
    )


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ([], "empty chunk stream"),
        ([pb.EnvelopeChunk(data=b"x")], "first chunk has no envelope header"),
        ([_header_chunk(2, b"x")], "chunks carry 1 bytes, header announced 2"),
        ([_header_chunk(1, b"xy")], "more than the announced 1 bytes"),
        ([_header_chunk(2, b"x"), _header_chunk(2, b"y")], "chunk 1 carries a second header"),
        ([_header_chunk(10**12, b"")], "exceeds the limit"),
    ],
)
def test_bad_chunk_streams_are_refused(pieces: list[pb.EnvelopeChunk], message: str) -> None:
    with pytest.raises(WireError, match=message):
        reassemble(pieces)


def test_garbage_bytes_are_a_clear_wire_error() -> None:
    with pytest.raises(WireError, match="malformed Envelope message"):
        parse_envelope(b"\xff\xff\xff\xff")


def test_unknown_version_is_refused() -> None:
    msg = to_proto(ENV, 0)
    msg.version = 2
    with pytest.raises(WireError, match="unsupported envelope version 2"):
        from_proto(msg)


def test_envelope_with_sender_equal_receiver_is_malformed() -> None:
    msg = to_proto(ENV, 0)
    msg.receiver = msg.sender
    with pytest.raises(WireError, match="malformed envelope"):
        from_proto(msg)


def test_csr_payload_format_refuses_malformed_framing() -> None:
    from cipherfact.agents.envelope import Envelope
    from cipherfact.deploy.csr_node import CsrPayloadFormat
    from cipherfact.protocols.csr_fhe_mf import roles as csr
    from cipherfact.protocols.csr_fhe_mf.layout import encode_parts

    check = CsrPayloadFormat()

    def env(stage: str, payload: bytes, sender: int = 2) -> Envelope:
        return Envelope("j", -1, stage, sender, 3 if sender == csr.RS_ID else csr.RS_ID, payload)

    check(env(csr.STAGE_RATINGS, encode_parts([b"a", b"bc"])))
    check(env(csr.STAGE_STRUCTURE, bytes(16)))
    with pytest.raises(ValueError, match="bad payload magic"):
        check(env(csr.STAGE_RATINGS, b"garbage-bytes-here"))
    with pytest.raises(ValueError, match="truncated"):
        check(env(csr.STAGE_MASKED, encode_parts([b"abc"])[:-1], sender=csr.RS_ID))
    with pytest.raises(ValueError, match="not a list of 8-byte item indices"):
        check(env(csr.STAGE_STRUCTURE, bytes(12)))
    with pytest.raises(ValueError, match="a layout message is 24 bytes"):
        check(env(csr.STAGE_LAYOUT, bytes(23), sender=csr.RS_ID))
    # the CSP's copy of the layout is the whole slot layout (any size); a user's
    # structure is item indices whoever claims to send it
    check(Envelope("j", -1, csr.STAGE_LAYOUT, csr.RS_ID, csr.CSP_ID, bytes(100)))
    with pytest.raises(ValueError, match="not a list of 8-byte item indices"):
        check(Envelope("j", -1, csr.STAGE_STRUCTURE, csr.RS_ID, csr.CSP_ID, bytes(12)))
    with pytest.raises(ValueError, match="a CKKS context of 0 bytes"):
        check(env(csr.STAGE_CONTEXT, b"", sender=csr.CSP_ID))
