"""mTLS and the servicer's gate: who may send what, and what happens to bad input."""

from __future__ import annotations

import time

import grpc
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy.tls import TlsFiles, agent_identity
from cipherfact.deploy.transport import PeerError, check_health
from cipherfact.deploy.wire import to_proto

from .conftest import JOB, TransportFactory

pytestmark = pytest.mark.grpc

SEND = "/cipherfact.deploy.v1.AgentLink/Send"


def raw_send(
    port: int, tls: TlsFiles | None, data: bytes, *, server: int = 0, client_cert: bool = True
) -> pb.Ack:
    """Send raw request bytes to agent ``server``'s Send method."""
    address = f"127.0.0.1:{port}"
    if tls is None:
        channel = grpc.insecure_channel(address)
    else:
        ca = tls.ca.read_bytes()
        if client_cert:
            creds = grpc.ssl_channel_credentials(ca, tls.key.read_bytes(), tls.cert.read_bytes())
        else:
            creds = grpc.ssl_channel_credentials(ca)
        channel = grpc.secure_channel(
            address, creds, options=[("grpc.ssl_target_name_override", agent_identity(server))]
        )
    try:
        call = channel.unary_unary(SEND, response_deserializer=pb.Ack.FromString)
        return call(data, timeout=5)
    finally:
        channel.close()


def envelope_bytes(
    sender: int = 1,
    seq: int = 0,
    *,
    round_: int = -1,
    stage: str = "key",
    job: str = JOB,
    payload: bytes = b"pk",
) -> bytes:
    return to_proto(Envelope(job, round_, stage, sender, 0, payload), seq).SerializeToString()


def test_valid_peer_is_accepted_and_delivered(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    ack = raw_send(server.port, certs[1], envelope_bytes())
    assert ack.seq == 0
    [env] = server.recv(0, timeout=1)
    assert (env.sender, env.stage, env.payload) == (1, "key", b"pk")


@pytest.mark.parametrize(
    "case", ["no client certificate", "certificate from another CA", "plaintext client"]
)
def test_unauthenticated_clients_are_refused(
    case: str,
    make_transport: TransportFactory,
    certs: list[TlsFiles],
    other_ca_certs: list[TlsFiles],
) -> None:
    server = make_transport(0)
    if case == "no client certificate":
        kwargs: dict[str, object] = {"tls": certs[1], "client_cert": False}
    elif case == "certificate from another CA":
        # Trusts the job CA (so the client side is happy) but presents a foreign cert.
        kwargs = {"tls": TlsFiles(certs[1].ca, other_ca_certs[1].cert, other_ca_certs[1].key)}
    else:
        kwargs = {"tls": None}
    with pytest.raises(grpc.RpcError) as info:
        raw_send(server.port, data=envelope_bytes(), **kwargs)  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.recv(0, timeout=0.2) == []


def test_client_refuses_a_server_with_the_wrong_identity(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    # Agent 1 believes it dials agent 2, but agent 0 answers: its certificate says agent-0.
    with pytest.raises(grpc.RpcError) as info:
        raw_send(server.port, certs[1], envelope_bytes(), server=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.recv(0, timeout=0.2) == []


def test_claiming_another_agents_id_is_refused(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    with pytest.raises(grpc.RpcError, match=r"\['agent-2'\] may not send as agent 1") as info:
        raw_send(server.port, certs[2], envelope_bytes(sender=1))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert server.recv(0, timeout=0.2) == []


def test_replayed_and_out_of_order_envelopes_are_refused(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    raw_send(server.port, certs[1], envelope_bytes(seq=0))
    with pytest.raises(grpc.RpcError, match="replayed envelope seq 0 from agent 1") as info:
        raw_send(server.port, certs[1], envelope_bytes(seq=0))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError, match="out-of-order envelope seq 5 from agent 1") as info:
        raw_send(server.port, certs[1], envelope_bytes(seq=5))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    raw_send(server.port, certs[1], envelope_bytes(seq=1, round_=4, stage="offer"))
    with pytest.raises(grpc.RpcError, match="already had round 4") as info:
        raw_send(server.port, certs[1], envelope_bytes(seq=2, round_=1, stage="offer"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(server.recv(0, timeout=1)) == 2  # only the two in-order envelopes


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"job": "other-job"}, grpc.StatusCode.FAILED_PRECONDITION, "is for job 'other-job'"),
        ({"stage": "bogus"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown stage 'bogus'"),
        (
            {"round_": 99, "stage": "offer"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "round 99 from agent 1",
        ),
    ],
)
def test_envelopes_outside_the_job_are_refused(
    kwargs: dict[str, object],
    code: grpc.StatusCode,
    message: str,
    make_transport: TransportFactory,
    certs: list[TlsFiles],
) -> None:
    server = make_transport(0)
    with pytest.raises(grpc.RpcError, match=message) as info:
        raw_send(server.port, certs[1], envelope_bytes(**kwargs))  # type: ignore[arg-type]
    assert info.value.code() == code


def test_malformed_message_gets_clear_status_and_agent_keeps_serving(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    with pytest.raises(grpc.RpcError, match="malformed Envelope message") as info:
        raw_send(server.port, certs[1], b"\xff\xff\xff\xff garbage")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert check_health(f"127.0.0.1:{server.port}", 0, certs[1]) == "SERVING"
    assert raw_send(server.port, certs[1], envelope_bytes(seq=0)).seq == 0
    assert len(server.recv(0, timeout=1)) == 1


def test_malformed_payload_is_refused_by_the_format_check(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    def check(env: Envelope) -> None:
        if not env.payload.startswith(b"CF"):
            raise ValueError("not a cipherfact payload")

    server = make_transport(0, check_payload=check)
    with pytest.raises(grpc.RpcError, match=r"malformed payload from agent 1.*not a cipherfact"):
        raw_send(server.port, certs[1], envelope_bytes(payload=b"junk"))
    # A refused envelope does not use up its sequence number: the good one still fits.
    assert raw_send(server.port, certs[1], envelope_bytes(payload=b"CFok")).seq == 0
    [env] = server.recv(0, timeout=1)
    assert env.payload == b"CFok"


def test_large_payload_travels_in_chunks(make_transport: TransportFactory) -> None:
    server, client = make_transport(0), make_transport(1)
    payload = bytes(range(256)) * (9 * 4096 + 7)  # ~9.4 MB, past gRPC's 4 MB default
    client.send(Envelope(JOB, -1, "key", 1, 0, payload))
    [env] = server.recv(0, timeout=5)
    assert env.payload == payload
    assert client.stats.bytes_total == len(payload)
    assert client.grpc_bytes_sent > len(payload)


def test_unreachable_peer_fails_with_peer_and_round(make_transport: TransportFactory) -> None:
    client = make_transport(1)  # agent 0 never starts
    client.send_best_effort(Envelope(JOB, 0, "offer", 1, 0, b"x"), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(
        PeerError,
        match=r"agent 1 -> agent 0 at 127\.0\.0\.1:\d+, round 3 "
        r"stage 'offer': peer unreachable after \d+ tries",
    ):
        client.send(Envelope(JOB, 3, "offer", 1, 0, b"x"))
    assert time.monotonic() - started < 5


def test_health_reports_not_serving_after_close(
    make_transport: TransportFactory, certs: list[TlsFiles]
) -> None:
    server = make_transport(0)
    address = f"127.0.0.1:{server.port}"
    assert check_health(address, 0, certs[1]) == "SERVING"
    server.close(grace=0)
    assert check_health(address, 0, certs[1], timeout=0.5).startswith("UNREACHABLE")
