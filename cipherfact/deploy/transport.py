"""``GrpcTransport``: the Transport interface over gRPC with mutual TLS.

Each agent runs one gRPC server (its inbox) and one channel per neighbour.
``send`` blocks until the neighbour's servicer has accepted the envelope, so
per-edge order is the send order; failures that may be transient
(unavailable, deadline) are retried with exponential backoff for a bounded
time, then raise ``PeerError`` naming the peer, its address and the round.
Refusals (bad identity, replay, malformed) are never retried; a busy peer
(``RESOURCE_EXHAUSTED``: no free slot or reassembly budget) is.

The server is bounded (see ``servicer.ServerLimits``): a thread pool sized to
the neighbours' per-caller slots, the health service on its own pool, gRPC's
``maximum_concurrent_rpcs`` as a backstop, no ``SO_REUSEPORT`` (a second
process on the same address fails instead of sharing it), and a 4 MiB
message limit. ``start`` checks the TLS files, the listen address and the
port itself, so that each way of failing to start has its own one-line
``StartupError``.
"""

from __future__ import annotations

import errno
import logging
import queue
import socket
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
from cipherfact.deploy import servicer as servicer_module
from cipherfact.deploy.health import HealthServicer
from cipherfact.deploy.servicer import (
    PROCESS_BUDGET,
    CallerLog,
    CallGuard,
    EnvelopeServicer,
    Gate,
    GatePolicy,
    PayloadCheck,
    ReassemblyBudget,
    ServerLimits,
)
from cipherfact.deploy.tls import TlsFileError, TlsFiles, agent_identity, check_tls_files
from cipherfact.deploy.wire import (
    CHUNK_BYTES,
    MAX_MESSAGE_BYTES,
    chunks,
    needs_chunks,
    to_proto,
)

log = logging.getLogger("cipherfact.deploy")

# Transient: the peer is down or slow, busy (no free slot or reassembly budget), or
# cancelled a stream of ours that it took for stalled.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
# What a chunk may carry besides its data (the header of the first one).
CHUNK_OVERHEAD = 64 << 10

# Short reconnect backoff: gRPC's default grows to 120 s, far beyond our own retry budget.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class StartupError(TransportError):
    """The agent cannot start serving: one line saying why (port, TLS file, address)."""


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


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ``StartupError`` if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise StartupError(f"address {address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def check_listen_address(listen: str) -> None:
    """Resolve ``listen`` and try binding its port (no ``SO_REUSEPORT``, as the server).

    Raises ``StartupError``: host unresolvable, not an address of this
    machine, port in use, or another bind error, each in one line.
    """
    if listen.startswith(("unix:", "unix-abstract:", "vsock:")):
        return
    host, port = split_address(listen)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {listen!r}: cannot resolve host {host!r} ({exc.strerror})"
        ) from exc
    if port == 0:
        return
    errors: list[OSError] = []
    seen = set()
    for family, kind, proto, _, sockaddr in infos:
        if (family, sockaddr) in seen:
            continue
        seen.add((family, sockaddr))
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            errors.append(exc)
    if any(e.errno == errno.EADDRINUSE for e in errors):
        raise StartupError(
            f"cannot listen on {listen!r}: port {port} is already in use "
            "(another process, or this agent started twice?)"
        )
    if errors and len(errors) == len(seen):
        first = errors[0]
        if first.errno == errno.EADDRNOTAVAIL:
            why = f"{host!r} is not an address of this machine"
        elif first.errno == errno.EACCES:
            why = f"no permission to bind port {port}"
        else:
            why = first.strerror or str(first)
        raise StartupError(f"cannot listen on {listen!r}: {why}")


def _server_credentials(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def _channel_credentials(pem: tuple[bytes, bytes, bytes]) -> grpc.ChannelCredentials:
    ca, cert, key = pem
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def open_channel(
    address: str,
    peer: AgentId,
    tls: TlsFiles | None,
    pem: tuple[bytes, bytes, bytes] | None = None,
) -> grpc.Channel:
    """A channel to ``peer`` that checks the server presents ``agent-<peer>``'s certificate.

    ``pem``: the (ca, cert, key) bytes already read from ``tls``.
    """
    if tls is None:
        return grpc.insecure_channel(address, options=list(CHANNEL_OPTIONS))
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", agent_identity(peer))]
    return grpc.secure_channel(address, _channel_credentials(pem or tls.read()), options=options)


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
        limits: ServerLimits | None = None,
        budget: ReassemblyBudget | None = None,
    ) -> None:
        super().__init__()
        if agent_id in peers:
            raise ValueError(f"agent {agent_id} lists itself among its peers")
        if not 0 < chunk_bytes <= MAX_MESSAGE_BYTES - CHUNK_OVERHEAD:
            raise ValueError(
                f"chunk_bytes must be in 1..{MAX_MESSAGE_BYTES - CHUNK_OVERHEAD} "
                f"(peers refuse larger messages), got {chunk_bytes!r}"
            )
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
        self.limits = limits if limits is not None else servicer_module.DEFAULT_LIMITS
        lim = self.limits
        self.guard = CallGuard(agent_id, lim, budget or PROCESS_BUDGET, CallerLog(lim))
        self._link_pool = futures.ThreadPoolExecutor(
            max_workers=lim.link_workers(len(peers)), thread_name_prefix=f"agent{agent_id}-link"
        )
        self._health_pool = futures.ThreadPoolExecutor(
            max_workers=lim.health_workers(), thread_name_prefix=f"agent{agent_id}-health"
        )
        self.health = HealthServicer(self.guard, self._health_pool)
        self._server = grpc.server(
            self._link_pool,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_concurrent_streams", lim.max_streams_per_connection),
                ("grpc.server_handshake_timeout_ms", int(lim.handshake_s * 1000)),
            ],
            maximum_concurrent_rpcs=lim.max_concurrent_rpcs(len(peers)),
        )
        self._server.add_generic_rpc_handlers(
            (EnvelopeServicer(self.gate, self.guard).handler(), self.health.handler())
        )
        self._tls_pem: tuple[bytes, bytes, bytes] | None = None
        self._channels: dict[AgentId, grpc.Channel] = {}
        self._stubs: dict[AgentId, pb_grpc.AgentLinkStub] = {}
        self.port = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> int:
        """Check the TLS files and the address, bind and start serving; returns the port.

        Raises ``StartupError`` with one line naming the problem.
        """
        where = f"agent {self.agent_id} cannot start"
        if self.tls is not None:
            try:
                self._tls_pem = check_tls_files(self.tls, agent_identity(self.agent_id))
            except TlsFileError as exc:
                raise StartupError(f"{where}: {exc}") from exc
        try:
            check_listen_address(self.listen)
        except StartupError as exc:
            raise StartupError(f"{where}: {exc}") from exc
        try:
            if self._tls_pem is None:
                port = self._server.add_insecure_port(self.listen)
            else:
                port = self._server.add_secure_port(
                    self.listen, _server_credentials(*self._tls_pem)
                )
        except RuntimeError:  # grpc >= 1.55 raises "Failed to bind" instead of returning 0
            port = 0
        if port == 0:
            raise StartupError(
                f"{where}: cannot listen on {self.listen!r}: gRPC could not bind "
                "it (taken by another process since it was checked?)"
            )
        self._server.start()
        self.guard.start()
        self.port = port
        for j, address in sorted(self.peers.items()):
            channel = open_channel(address, j, self.tls, self._tls_pem)
            self._channels[j] = channel
            self._stubs[j] = pb_grpc.AgentLinkStub(channel)
        log.info(
            "agent %s listening on %s (%s)",
            self.agent_id,
            self.listen,
            "mTLS" if self.tls else "INSECURE plaintext",
        )
        return port

    def close(self, grace: float = 1.0) -> None:
        self.health.close()
        for channel in self._channels.values():
            channel.close()
        self._server.stop(grace).wait()
        self.guard.stop()
        self._link_pool.shutdown(wait=False)
        self._health_pool.shutdown(wait=False)

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
                where = (
                    f"agent {self.agent_id} -> agent {j} at {self.peers[j]}, "
                    f"round {env.round} stage {env.stage!r}"
                )
                if code not in RETRYABLE:
                    raise PeerError(
                        f"{where}: refused with {code.name}: {details}", j, env.round
                    ) from exc
                elapsed = time.monotonic() - started
                out_of_budget = (
                    elapsed + pause > r.startup_s if not reached else attempt >= r.retries
                )
                if out_of_budget:
                    state = "busy" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "unreachable"
                    raise PeerError(
                        f"{where}: peer {state} after {attempt + 1} tries over "
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


__all__ = [
    "GrpcTransport",
    "PeerError",
    "RetryPolicy",
    "StartupError",
    "check_health",
    "check_listen_address",
    "pb",
]
