"""``GrpcTransport``: the Transport interface over gRPC with mutual TLS.

Each agent runs one gRPC server (its inbox) and one channel per neighbour.
``send`` blocks until the neighbour's servicer has accepted the envelope, so
per-edge order is the send order; failures that may be transient
(unavailable, deadline) are retried with exponential backoff for a bounded
time, then raise ``PeerError`` naming the peer, its address and the round.
Refusals (bad identity, replay, malformed) are never retried.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass

import grpc

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import Transport, TransportError
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy import envelope_v1_pb2_grpc as pb_grpc
from cipherfact.deploy.servicer import (
    EnvelopeServicer,
    Gate,
    GatePolicy,
    HealthServicer,
    PayloadCheck,
)
from cipherfact.deploy.tls import TlsFiles, agent_identity
from cipherfact.deploy.wire import CHUNK_BYTES, chunks, needs_chunks, to_proto

log = logging.getLogger("cipherfact.deploy")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Short reconnect backoff: gRPC's default grows to 120 s, far beyond our own retry budget.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class PeerError(TransportError):
    """A neighbour could not be reached, refused a message, or went silent."""

    def __init__(self, message: str, peer: AgentId, round_index: int) -> None:
        super().__init__(message)
        self.peer = peer
        self.round = round_index


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a neighbour before giving up (seconds)."""

    rpc_s: float = 10.0  # deadline of one call
    startup_s: float = 60.0  # budget before the first successful send to a peer
    retries: int = 6  # attempts after the first one, once the peer has been reached
    backoff_s: float = 0.2  # first pause; doubles, capped at backoff_max_s
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("rpc_s", "startup_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"timeouts.{name} must be a positive number, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"timeouts.retries must be an integer >= 0, got {self.retries!r}")


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def _channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def open_channel(
    address: str, peer: AgentId, tls: TlsFiles | None
) -> grpc.Channel:
    """A channel to ``peer`` that checks the server presents ``agent-<peer>``'s certificate."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(CHANNEL_OPTIONS))
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", agent_identity(peer))]
    return grpc.secure_channel(address, _channel_credentials(tls), options=options)


class GrpcTransport(Transport):
    """One agent's end of the network: a server for its inbox, channels to its neighbours.

    ``tls=None`` means plaintext and is only for ``--insecure`` runs (the CLI
    warns); with TLS the server requires a client certificate from the job CA
    and the servicer matches its identity to every envelope's sender.
    """

    def __init__(
        self,
        agent_id: AgentId,
        job_id: str,
        listen: str,
        peers: Mapping[AgentId, str],
        tls: TlsFiles | None,
        *,
        stages: frozenset[str],
        max_round: int,
        retry: RetryPolicy | None = None,
        check_payload: PayloadCheck | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        workers: int = 4,
    ) -> None:
        super().__init__()
        if agent_id in peers:
            raise ValueError(f"agent {agent_id} lists itself among its peers")
        self.agent_id = agent_id
        self.job_id = job_id
        self.listen = listen
        self.peers = dict(peers)
        self.tls = tls
        self.retry = retry or RetryPolicy()
        self.chunk_bytes = chunk_bytes
        self.grpc_bytes_sent = 0  # serialized request messages, what gRPC frames
        self._inbox: queue.Queue[Envelope] = queue.Queue()
        self._seq: dict[AgentId, int] = {}
        self._reached: set[AgentId] = set()
        self._send_lock = threading.Lock()
        policy = GatePolicy(
            agent_id=agent_id,
            job_id=job_id,
            peers=frozenset(peers),
            stages=stages,
            max_round=max_round,
            require_identity=tls is not None,
        )
        self.gate = Gate(policy, self._inbox.put, check_payload)
        self.health = HealthServicer()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self._server.add_generic_rpc_handlers(
            (EnvelopeServicer(self.gate).handler(), self.health.handler())
        )
        self._channels: dict[AgentId, grpc.Channel] = {}
        self._stubs: dict[AgentId, pb_grpc.AgentLinkStub] = {}
        self.port = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        if self.tls is None:
            port = self._server.add_insecure_port(self.listen)
        else:
            port = self._server.add_secure_port(self.listen, _server_credentials(self.tls))
        if port == 0:
            raise TransportError(f"agent {self.agent_id} could not listen on {self.listen}")
        self._server.start()
        self.port = port
        for j, address in sorted(self.peers.items()):
            channel = open_channel(address, j, self.tls)
            self._channels[j] = channel
            self._stubs[j] = pb_grpc.AgentLinkStub(channel)
        log.info("agent %s listening on %s (%s)", self.agent_id, self.listen,
                 "mTLS" if self.tls else "INSECURE plaintext")
        return port

    def close(self, grace: float = 1.0) -> None:
        self.health.set_serving(False)
        for channel in self._channels.values():
            channel.close()
        self._server.stop(grace).wait()

    # -- Transport -------------------------------------------------------------

    def send(self, env: Envelope) -> None:
        if env.sender != self.agent_id:
            raise TransportError(
                f"agent {self.agent_id} cannot send as agent {env.sender}: {env.describe()}"
            )
        stub = self._stubs.get(env.receiver)
        if stub is None:
            raise TransportError(f"unknown receiver {env.receiver} for {env.describe()}")
        with self._send_lock:
            seq = self._seq.get(env.receiver, 0)
            self._deliver(stub, env, seq)
            self._seq[env.receiver] = seq + 1
            self.stats.record(env)

    def send_best_effort(self, env: Envelope, timeout: float = 1.0) -> bool:
        """One try, short deadline (abort notices on the way out); True if accepted."""
        stub = self._stubs.get(env.receiver)
        if stub is None:
            return False
        with self._send_lock:
            seq = self._seq.get(env.receiver, 0)
            try:
                stub.Send(to_proto(env, seq), timeout=timeout)
            except grpc.RpcError:
                return False
            self._seq[env.receiver] = seq + 1
            return True

    def recv(self, agent: AgentId, timeout: float | None = None) -> list[Envelope]:
        if agent != self.agent_id:
            raise TransportError(f"this transport serves agent {self.agent_id}, not {agent}")
        out: list[Envelope] = []
        try:
            out.append(self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait())
        except queue.Empty:
            return out
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out

    # -- delivery with retries ---------------------------------------------------

    def _call(self, stub: pb_grpc.AgentLinkStub, env: Envelope, seq: int) -> int:
        """One attempt; returns the serialized request bytes (counted only on success)."""
        if needs_chunks(env, self.chunk_bytes):
            pieces = list(chunks(env, seq, self.chunk_bytes))
            stub.SendChunks(iter(pieces), timeout=self.retry.rpc_s)
            return sum(p.ByteSize() for p in pieces)
        msg = to_proto(env, seq)
        stub.Send(msg, timeout=self.retry.rpc_s)
        return msg.ByteSize()

    def _request_bytes(self, env: Envelope, seq: int) -> int:
        if needs_chunks(env, self.chunk_bytes):
            return sum(p.ByteSize() for p in chunks(env, seq, self.chunk_bytes))
        return to_proto(env, seq).ByteSize()

    def _deliver(self, stub: pb_grpc.AgentLinkStub, env: Envelope, seq: int) -> None:
        j = env.receiver
        r = self.retry
        reached = j in self._reached
        started = time.monotonic()
        attempt = 0
        pause = r.backoff_s
        while True:
            try:
                self.grpc_bytes_sent += self._call(stub, env, seq)
                self._reached.add(j)
                return
            except grpc.RpcError as exc:
                code = exc.code()
                details = exc.details()
                if code == grpc.StatusCode.ALREADY_EXISTS and attempt > 0:
                    # An earlier try got through and only its answer was lost.
                    self.grpc_bytes_sent += self._request_bytes(env, seq)
                    self._reached.add(j)
                    return
                where = (f"agent {self.agent_id} -> agent {j} at {self.peers[j]}, "
                         f"round {env.round} stage {env.stage!r}")
                if code not in RETRYABLE:
                    raise PeerError(f"{where}: refused with {code.name}: {details}",
                                    j, env.round) from exc
                elapsed = time.monotonic() - started
                out_of_budget = (
                    elapsed + pause > r.startup_s if not reached else attempt >= r.retries
                )
                if out_of_budget:
                    raise PeerError(
                        f"{where}: peer unreachable after {attempt + 1} tries over "
                        f"{elapsed:.1f} s ({code.name}: {details})",
                        j,
                        env.round,
                    ) from exc
                log.info("%s: %s, retrying in %.1f s", where, code.name, pause)
                time.sleep(pause)
                attempt += 1
                pause = min(pause * 2, r.backoff_max_s)


def check_health(address: str, peer: AgentId, tls: TlsFiles | None, timeout: float = 2.0) -> str:
    """The peer's health status name (``SERVING``...), or ``UNREACHABLE (<code>)``."""
    from cipherfact.deploy import health_v1_pb2 as health_pb
    from cipherfact.deploy import health_v1_pb2_grpc as health_grpc

    channel = open_channel(address, peer, tls)
    try:
        reply = health_grpc.HealthStub(channel).Check(
            health_pb.HealthCheckRequest(service=""), timeout=timeout
        )
        return str(health_pb.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"
    finally:
        channel.close()


__all__ = ["GrpcTransport", "PeerError", "RetryPolicy", "check_health", "pb"]
