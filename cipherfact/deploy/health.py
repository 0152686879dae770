"""The standard ``grpc.health.v1.Health`` service of an agent, on its own threads.

Health calls run on a thread pool of their own (gRPC's per-method
``experimental_thread_pool``), never on the threads that receive envelopes,
so a flood or a stall on ``AgentLink`` cannot delay a ``Check``. Within the
health pool, ``Watch`` streams are capped (per caller and in all), end after
``watch_s``, and leave ``health_reserve`` threads free, so ``Check`` always
finds one. Like every call on the agent's server, a health call that does not
send its request within ``check_s`` is cancelled and its caller logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from cipherfact.deploy import health_v1_pb2 as health_pb
from cipherfact.deploy.servicer import (
    CHECK,
    DEFAULT_LIMITS,
    HEALTH_SERVICE,
    PROCESS_BUDGET,
    SERVICE,
    STREAMING,
    WATCH,
    Caller,
    CallGuard,
    RefusedError,
    next_request,
)

__all__ = ["HEALTH_SERVICE", "HealthServicer"]


def _on_pool(fn: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    """``fn`` as a handler that gRPC runs on ``pool`` instead of the server's default pool."""

    def run(requests: Any, context: grpc.ServicerContext) -> Any:
        return fn(requests, context)

    run.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return run


class HealthServicer:
    """``Check`` and ``Watch`` for the whole agent (service ``""``) and for ``AgentLink``."""

    SERVICES = ("", SERVICE)

    def __init__(
        self, guard: CallGuard | None = None, pool: futures.ThreadPoolExecutor | None = None
    ) -> None:
        self.guard = guard or CallGuard(None, DEFAULT_LIMITS, PROCESS_BUDGET)
        self.pool = pool or futures.ThreadPoolExecutor(
            max_workers=self.guard.limits.health_workers(), thread_name_prefix="health"
        )
        self._status = health_pb.HealthCheckResponse.SERVING
        self._closed = False
        self._changed = threading.Condition()

    def set_serving(self, serving: bool) -> None:
        with self._changed:
            self._status = (
                health_pb.HealthCheckResponse.SERVING
                if serving
                else health_pb.HealthCheckResponse.NOT_SERVING
            )
            self._changed.notify_all()

    def close(self) -> None:
        """NOT_SERVING, and every Watch stream ends."""
        with self._changed:
            self._closed = True
        self.set_serving(False)

    def _request(
        self,
        method: str,
        caller: Caller,
        call: Any,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
    ) -> health_pb.HealthCheckRequest | None:
        raw = next_request(requests)
        if call.cancelled or raw is None:
            return None
        request = health_pb.HealthCheckRequest()
        try:
            request.ParseFromString(raw)
        except Exception as exc:  # protobuf's DecodeError
            self.guard.refuse(
                caller,
                method,
                context,
                RefusedError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"malformed HealthCheckRequest ({len(raw)} bytes): {exc}",
                ),
            )
        return request

    def check(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> health_pb.HealthCheckResponse:
        caller = Caller.of(context)
        call = self.guard.open("Check", CHECK, caller, context)
        try:
            request = self._request("Check", caller, call, requests, context)
            if request is None:
                return health_pb.HealthCheckResponse()
        finally:
            self.guard.close(call)
        if request.service not in self.SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb.HealthCheckResponse(status=self._status)

    def watch(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[health_pb.HealthCheckResponse]:
        caller = Caller.of(context)
        call = self.guard.open("Watch", WATCH, caller, context)
        try:
            request = self._request("Watch", caller, call, requests, context)
            if request is None:
                return
            self.guard.set_phase(call, STREAMING)
            if request.service not in self.SERVICES:
                yield health_pb.HealthCheckResponse(
                    status=health_pb.HealthCheckResponse.SERVICE_UNKNOWN
                )
                return
            end = time.monotonic() + self.guard.limits.watch_s
            last = None
            while context.is_active() and not call.cancelled:
                with self._changed:
                    if self._status == last:
                        left = end - time.monotonic()
                        if left <= 0 or self._closed:
                            return
                        self._changed.wait(min(1.0, left))
                        continue
                    last = self._status
                yield health_pb.HealthCheckResponse(status=last)
        finally:
            self.guard.close(call)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.stream_unary_rpc_method_handler(
                    _on_pool(self.check, self.pool),
                    response_serializer=health_pb.HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.stream_stream_rpc_method_handler(
                    _on_pool(self.watch, self.pool),
                    response_serializer=health_pb.HealthCheckResponse.SerializeToString,
                ),
            },
        )
