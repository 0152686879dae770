"""The gRPC side of an agent: check each incoming envelope, then hand it over.

The servicer is deliberately thin: it owns no protocol logic. It refuses, with
a status code and a message naming the peer and the round, any envelope that
is malformed, for another job or agent, sent by a peer whose certificate does
not match the claimed sender, not from a graph neighbour, replayed or out of
order (per-edge sequence numbers), or whose payload fails the protocol's
cheap format check. Accepted envelopes go to ``deliver`` in sequence order.
Requests are parsed here from raw bytes, so even garbage gets a clear
``INVALID_ARGUMENT`` and the agent keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy import health_v1_pb2 as health_pb
from cipherfact.deploy.tls import agent_identity
from cipherfact.deploy.wire import (
    MAX_PAYLOAD_BYTES,
    WireError,
    from_proto,
    parse_chunk,
    parse_envelope,
    reassemble,
)

log = logging.getLogger("cipherfact.deploy")

SERVICE = "cipherfact.deploy.v1.AgentLink"
HEALTH_SERVICE = "grpc.health.v1.Health"

PayloadCheck = Callable[[Envelope], None]


class RefusedError(Exception):
    """An envelope the gate will not admit: a status code and a reason."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class GatePolicy:
    """What this agent accepts: its job, its id, its neighbours, the round range."""

    agent_id: AgentId
    job_id: str
    peers: frozenset[AgentId]
    stages: frozenset[str]
    max_round: int
    require_identity: bool = True
    max_payload_bytes: int = MAX_PAYLOAD_BYTES


class Gate:
    """Admission checks and per-sender ordering state (thread-safe)."""

    def __init__(self, policy: GatePolicy, deliver: Callable[[Envelope], None],
                 check_payload: PayloadCheck | None = None) -> None:
        self.policy = policy
        self._deliver = deliver
        self._check_payload = check_payload
        self._lock = threading.Lock()
        self._next_seq: dict[AgentId, int] = {}
        self._last_round: dict[AgentId, int] = {}

    def admit(self, env: Envelope, seq: int, identities: Iterable[str] | None) -> None:
        """Deliver ``env`` or raise ``RefusedError``."""
        p = self.policy
        who = f"agent {env.sender} (round {env.round}, stage {env.stage!r})"
        if p.require_identity:
            names = set(identities or ())
            if not names:
                raise RefusedError(grpc.StatusCode.UNAUTHENTICATED,
                              f"no client certificate; refused envelope claiming {who}")
            if agent_identity(env.sender) not in names:
                raise RefusedError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate identity {sorted(names)} may not send as {who}",
                )
        if env.job_id != p.job_id:
            raise RefusedError(grpc.StatusCode.FAILED_PRECONDITION,
                          f"envelope from {who} is for job {env.job_id!r}; this agent serves "
                          f"job {p.job_id!r}")
        if env.receiver != p.agent_id:
            raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"envelope from {who} is addressed to agent {env.receiver}, this is "
                          f"agent {p.agent_id}")
        if env.sender not in p.peers:
            raise RefusedError(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} is not a neighbour of agent {p.agent_id} "
                          f"(neighbours {sorted(p.peers)})")
        if env.stage not in p.stages:
            raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown stage {env.stage!r} from {who} (known {sorted(p.stages)})")
        if not -1 <= env.round <= p.max_round:
            raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"round {env.round} from {who} is outside -1..{p.max_round}")
        if env.nbytes > p.max_payload_bytes:
            raise RefusedError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"payload of {env.nbytes} bytes from {who} exceeds "
                          f"{p.max_payload_bytes}")
        with self._lock:
            expected = self._next_seq.get(env.sender, 0)
            if seq < expected:
                raise RefusedError(grpc.StatusCode.ALREADY_EXISTS,
                              f"replayed envelope seq {seq} from {who}; expected seq {expected}")
            if seq > expected:
                raise RefusedError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"out-of-order envelope seq {seq} from {who}; expected seq "
                              f"{expected}")
            last = self._last_round.get(env.sender, -1)
            if env.round < last - 1:
                raise RefusedError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"out-of-order envelope from {who}: already had round {last}")
            if self._check_payload is not None:
                try:
                    self._check_payload(env)
                except (ValueError, TypeError) as exc:
                    raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"malformed payload from {who}: {exc}") from exc
            self._next_seq[env.sender] = expected + 1
            self._last_round[env.sender] = max(last, env.round)
            self._deliver(env)


def _identities(context: grpc.ServicerContext) -> list[str]:
    return [b.decode("utf-8", "replace") for b in (context.peer_identities() or [])]


class EnvelopeServicer:
    """``AgentLink``: unary ``Send`` and chunked ``SendChunks``, both through one ``Gate``."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def _admit(self, env: Envelope, seq: int, context: grpc.ServicerContext) -> pb.Ack:
        try:
            self.gate.admit(env, seq, _identities(context))
        except RefusedError as exc:
            log.warning("agent %s refused envelope from %s: %s",
                        self.gate.policy.agent_id, context.peer(), exc.reason)
            context.abort(exc.code, exc.reason)
        log.debug("agent %s accepted %s seq %d", self.gate.policy.agent_id, env.describe(), seq)
        return pb.Ack(seq=seq)

    def send(self, request: bytes, context: grpc.ServicerContext) -> pb.Ack:
        try:
            env, seq = from_proto(parse_envelope(request))
        except WireError as exc:
            log.warning("agent %s: %s from %s", self.gate.policy.agent_id, exc, context.peer())
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self._admit(env, seq, context)

    def send_chunks(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> pb.Ack:
        try:
            env, seq = reassemble(
                (parse_chunk(r) for r in requests), self.gate.policy.max_payload_bytes
            )
        except WireError as exc:
            log.warning("agent %s: %s from %s", self.gate.policy.agent_id, exc, context.peer())
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self._admit(env, seq, context)

    def handler(self) -> grpc.GenericRpcHandler:
        """Raw-bytes handlers: parse errors become our own clear status, not gRPC's."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Send": grpc.unary_unary_rpc_method_handler(
                    self.send, response_serializer=pb.Ack.SerializeToString
                ),
                "SendChunks": grpc.stream_unary_rpc_method_handler(
                    self.send_chunks, response_serializer=pb.Ack.SerializeToString
                ),
            },
        )


class HealthServicer:
    """The standard ``grpc.health.v1.Health`` service for this agent."""

    SERVICES = ("", SERVICE)

    def __init__(self) -> None:
        self._status = health_pb.HealthCheckResponse.SERVING
        self._changed = threading.Condition()

    def set_serving(self, serving: bool) -> None:
        with self._changed:
            self._status = (
                health_pb.HealthCheckResponse.SERVING
                if serving
                else health_pb.HealthCheckResponse.NOT_SERVING
            )
            self._changed.notify_all()

    def check(self, request: health_pb.HealthCheckRequest,
              context: grpc.ServicerContext) -> health_pb.HealthCheckResponse:
        if request.service not in self.SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb.HealthCheckResponse(status=self._status)

    def watch(self, request: health_pb.HealthCheckRequest,
              context: grpc.ServicerContext) -> Iterator[health_pb.HealthCheckResponse]:
        if request.service not in self.SERVICES:
            yield health_pb.HealthCheckResponse(
                status=health_pb.HealthCheckResponse.SERVICE_UNKNOWN
            )
            return
        last = None
        while context.is_active():
            with self._changed:
                if self._status == last:
                    self._changed.wait(timeout=1.0)
                    continue
                last = self._status
            yield health_pb.HealthCheckResponse(status=last)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=health_pb.HealthCheckRequest.FromString,
                    response_serializer=health_pb.HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=health_pb.HealthCheckRequest.FromString,
                    response_serializer=health_pb.HealthCheckResponse.SerializeToString,
                ),
            },
        )
