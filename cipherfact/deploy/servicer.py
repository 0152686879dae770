"""The gRPC side of an agent: check each incoming envelope, then hand it over.

The servicer is deliberately thin: it owns no protocol logic. It refuses, with
a status code and a message naming the peer and the round, any envelope that
is malformed, for another job or agent, sent by a peer whose certificate does
not match the claimed sender, not from a graph neighbour, replayed or out of
order (per-edge sequence numbers), or whose payload fails the protocol's
cheap format check. Accepted envelopes go to ``deliver`` in sequence order.
Requests are parsed here from raw bytes, so even garbage gets a clear
``INVALID_ARGUMENT`` and the agent keeps serving.

Every call is bounded, whoever holds a job certificate (``ServerLimits``):

* a caller whose certificate names no neighbour is refused when the call
  opens, before any request is read;
* a chunked envelope's header (identity, job, neighbour, stage, round,
  sequence number, size) is checked on the FIRST chunk, before anything is
  buffered, and its announced size is taken from a per-process
  ``ReassemblyBudget`` shared by all streams (refused when it is used up);
* each certificate identity may hold at most ``streams_per_caller`` calls at
  once; a newcomer takes the slot of that caller's longest-idle stream if it
  has been idle ``evict_idle_s``, so a stalled stream never starves an active
  one, even on the same certificate;
* ``CallGuard`` cancels a call that sends no request in time, a stream that
  stalls between chunks for ``idle_s``, and any stream older than
  ``stream_s``;
* every refused, cancelled or timed-out caller is logged with its
  certificate's identity (CN, SANs) and address, at most ``log_burst`` lines
  per caller per ``log_window_s`` (then one line counting the rest).

All methods are registered as client-streaming, also the unary ``Send``: the
wire format is the same, but the handler starts when the call opens, so a
caller that opens a call and never sends its request is refused or timed out
by the code here instead of holding a thread inside gRPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy.tls import agent_identity
from cipherfact.deploy.wire import (
    MAX_PAYLOAD_BYTES,
    REASSEMBLY_BUDGET_BYTES,
    Reassembler,
    WireError,
    from_proto,
    parse_chunk,
    parse_envelope,
)

log = logging.getLogger("cipherfact.deploy")

SERVICE = "cipherfact.deploy.v1.AgentLink"
HEALTH_SERVICE = "grpc.health.v1.Health"

PayloadCheck = Callable[[Envelope], None]

# Call groups: each has its own per-caller limit.
LINK, CHECK, WATCH = "link", "check", "watch"
# Phases of a call: only FIRST and BODY can time out or be evicted.
FIRST, BODY, WAIT, ADMIT, STREAMING = "first", "body", "wait", "admit", "streaming"


@dataclass(frozen=True)
class ServerLimits:
    """What one agent's server grants any caller; the defaults are for real jobs.

    A legitimate neighbour holds one call at a time to an agent (sends are
    serialized per transport), two while a retry overlaps a call whose answer
    was lost: ``streams_per_caller = 4`` leaves room for that and no more.
    The timeouts are far above what a peer on a healthy network needs (a
    chunk is 1 MiB; a peer's own deadline per call is ``timeouts.rpc_s``,
    10 s by default) and far below what lets an idle caller pile up.
    """

    streams_per_caller: int = 4  # Send/SendChunks calls at once per certificate identity
    first_message_s: float = 5.0  # call opened -> its first request (header chunk)
    idle_s: float = 10.0  # longest gap between two chunks of one stream
    stream_s: float = 120.0  # longest SendChunks stream
    evict_idle_s: float = 1.0  # an idle stream this old yields its slot/budget to a newcomer
    budget_wait_s: float = 2.0  # how long a stream waits for reassembly budget to free up
    check_s: float = 1.0  # health Check/Watch: call opened -> its request
    checks_per_caller: int = 2  # health Checks at once per caller
    watches_per_caller: int = 2  # health Watch streams at once per caller
    max_watches: int = 8  # health Watch streams at once, all callers
    watch_s: float = 300.0  # a Watch stream ends after this (clients watch again)
    health_reserve: int = 8  # health threads beyond the watches: Check always has one
    spare_workers: int = 8  # link threads beyond the per-caller slots (refusals, Send)
    max_workers: int = 512  # cap on link threads, however many neighbours
    max_streams_per_connection: int = 16  # HTTP/2 concurrent streams per connection
    handshake_s: float = 10.0  # TLS handshake
    queued_rpcs: int = 256  # calls waiting for a thread before gRPC answers RESOURCE_EXHAUSTED
    log_burst: int = 5  # refusal lines per caller per window
    log_window_s: float = 10.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"ServerLimits.{name} must be a positive number, got {value!r}")

    def link_workers(self, n_peers: int) -> int:
        """Threads for AgentLink: every neighbour's slots plus spares for quick refusals."""
        return min(self.max_workers, self.streams_per_caller * max(1, n_peers) + self.spare_workers)

    def health_workers(self) -> int:
        return self.max_watches + self.health_reserve

    def max_concurrent_rpcs(self, n_peers: int) -> int:
        return self.link_workers(n_peers) + self.health_workers() + self.queued_rpcs


DEFAULT_LIMITS = ServerLimits()


class ReassemblyBudget:
    """Bytes that chunked envelopes being reassembled may take, shared by a whole process.

    A stream reserves its header's announced size before it reads on, and
    gives it back when the envelope is delivered or refused.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"reassembly budget must be positive, got {capacity!r}")
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    def reserve(self, nbytes: int, timeout: float = 0.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + nbytes > self.capacity:
                left = deadline - time.monotonic()
                if nbytes > self.capacity or left <= 0:
                    return False
                self._cond.wait(left)
            self.used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self._cond.notify_all()


#: The process's budget (every transport of the process shares it by default).
PROCESS_BUDGET = ReassemblyBudget(REASSEMBLY_BUDGET_BYTES)


def _printable(text: str, limit: int = 128) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@dataclass(frozen=True)
class Caller:
    """Who is calling: the certificate's names (the identity the limits count by)."""

    key: str
    names: tuple[str, ...]
    common_name: str | None
    peer: str

    @classmethod
    def of(cls, context: grpc.ServicerContext) -> Caller:
        names = tuple(
            sorted(
                _printable(b.decode("utf-8", "replace")) for b in (context.peer_identities() or ())
            )
        )
        auth = context.auth_context() or {}
        cns = auth.get("x509_common_name") or []
        cn = _printable(cns[0].decode("utf-8", "replace")) if cns else None
        peer = _printable(context.peer() or "unknown")
        # Without TLS there is no identity: each connection counts for itself.
        key = "cert:" + ",".join(names) if names else "peer:" + peer
        return cls(key, names, cn, peer)

    def describe(self) -> str:
        if not self.names:
            return f"unauthenticated peer {self.peer}"
        return f"certificate CN={self.common_name} SAN={list(self.names)} at {self.peer}"


class CallerLog:
    """Warnings about callers, at most ``log_burst`` per caller per window (then a count)."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # key -> [start, lines, suppressed]

    def warn(self, caller: Caller, message: str) -> None:
        now = time.monotonic()
        window, burst = self.limits.log_window_s, self.limits.log_burst
        summary = None
        with self._lock:
            entry = self._windows.get(caller.key)
            if entry is None or now - entry[0] >= window:
                if entry is not None and entry[2]:
                    summary = int(entry[2])
                if len(self._windows) > 1024:  # forget quiet callers
                    self._windows = {k: v for k, v in self._windows.items() if now - v[0] < window}
                entry = self._windows[caller.key] = [now, 0, 0]
            emit = entry[1] < burst
            entry[1 if emit else 2] += 1
        if summary:
            log.warning(
                "%d more refusals or timeouts of %s were not logged", summary, caller.describe()
            )
        if emit:
            log.warning("%s", message)


class RefusedError(Exception):
    """A call or envelope the gate will not admit: a status code and a reason.

    ``reason`` goes back to the caller; ``detail`` (default: the reason) goes to
    the log and may say more (another sender's sequence state, the graph).
    """

    def __init__(self, code: grpc.StatusCode, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.detail = detail or reason


class _Call:
    __slots__ = (
        "caller",
        "cancelled",
        "context",
        "group",
        "last",
        "method",
        "opened",
        "phase",
        "reserved",
    )

    def __init__(
        self, method: str, group: str, caller: Caller, context: grpc.ServicerContext
    ) -> None:
        self.method = method
        self.group = group
        self.caller = caller
        self.context = context
        self.opened = self.last = time.monotonic()
        self.phase = FIRST
        self.reserved = 0
        self.cancelled: str | None = None


class CallGuard:
    """Every call an agent's server runs: per-caller limits, timeouts, the reassembly budget.

    One reaper thread (``start``/``stop``) cancels calls past their time; the
    handler thread blocked on the cancelled call's requests then returns.
    """

    def __init__(
        self,
        agent_id: AgentId | None,
        limits: ServerLimits,
        budget: ReassemblyBudget,
        calllog: CallerLog | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.limits = limits
        self.budget = budget
        self.log = calllog or CallerLog(limits)
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap, daemon=True, name=f"call-reaper-{self.agent_id}"
            )
            self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=2.0)

    def active(self, group: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self._calls if group is None or c.group == group)

    # -- calls -------------------------------------------------------------------------

    def _limit(self, group: str) -> int:
        lim = self.limits
        return {
            LINK: lim.streams_per_caller,
            CHECK: lim.checks_per_caller,
            WATCH: lim.watches_per_caller,
        }[group]

    def refuse(
        self, caller: Caller, method: str, context: grpc.ServicerContext, exc: RefusedError
    ) -> NoReturn:
        """Log (rate-limited, naming the caller) and end the call with ``exc``'s status."""
        self.log.warn(
            caller, f"agent {self.agent_id} refused {method} from {caller.describe()}: {exc.detail}"
        )
        context.abort(exc.code, exc.reason)
        raise AssertionError("context.abort returned")  # pragma: no cover

    def open(self, method: str, group: str, caller: Caller, context: grpc.ServicerContext) -> _Call:
        """Register a call, or refuse it (logged) when its caller has no slot left."""
        now = time.monotonic()
        victim = None
        refusal = None
        with self._lock:
            mine = [
                c
                for c in self._calls
                if c.group == group and c.caller.key == caller.key and not c.cancelled
            ]
            if len(mine) >= self._limit(group):
                idle = [
                    c
                    for c in mine
                    if c.phase in (FIRST, BODY) and now - c.last >= self.limits.evict_idle_s
                ]
                if idle:
                    victim = max(idle, key=lambda c: now - c.last)
                    victim.cancelled = (
                        f"idle for {now - victim.last:.1f} s; its slot went to a "
                        "newer call of the same caller"
                    )
                else:
                    refusal = (
                        f"{len(mine)} {group} calls of this caller already in progress "
                        f"(limit {self._limit(group)})"
                    )
            if (
                refusal is None
                and group == WATCH
                and sum(1 for c in self._calls if c.group == WATCH) >= self.limits.max_watches
            ):
                refusal = f"{self.limits.max_watches} Watch streams already open (limit)"
            if refusal is None:
                call = _Call(method, group, caller, context)
                self._calls.add(call)
        if victim is not None:
            self._cancel(victim)
        if refusal is not None:
            self.refuse(
                caller,
                method,
                context,
                RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many calls: {refusal}; try again"
                ),
            )
        return call

    def set_phase(self, call: _Call, phase: str) -> None:
        with self._lock:
            call.phase = phase
            call.last = time.monotonic()

    def touch(self, call: _Call) -> None:
        call.last = time.monotonic()

    def close(self, call: _Call) -> None:
        with self._lock:
            self._calls.discard(call)
            reserved, call.reserved = call.reserved, 0
        if reserved:
            self.budget.release(reserved)

    def reserve(self, call: _Call, nbytes: int) -> None:
        """Take ``nbytes`` of the reassembly budget for ``call`` or raise ``RefusedError``."""
        if nbytes <= 0:
            return
        if not self.budget.reserve(nbytes):
            self._evict_for(nbytes)
            self.set_phase(call, WAIT)
            if not self.budget.reserve(nbytes, self.limits.budget_wait_s):
                raise RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"no room to reassemble {nbytes} bytes now; try again",
                    f"reassembly budget full: {nbytes} bytes asked, {self.budget.used} of "
                    f"{self.budget.capacity} in use",
                )
        with self._lock:
            call.reserved = nbytes

    def _evict_for(self, nbytes: int) -> None:
        """Cancel idle streams holding budget (longest idle first) until ``nbytes`` could fit."""
        now = time.monotonic()
        need = nbytes - (self.budget.capacity - self.budget.used)
        victims = []
        with self._lock:
            idle = sorted(
                (
                    c
                    for c in self._calls
                    if c.reserved
                    and c.phase == BODY
                    and not c.cancelled
                    and now - c.last >= self.limits.evict_idle_s
                ),
                key=lambda c: c.last,
            )
            for c in idle:
                if need <= 0:
                    break
                c.cancelled = (
                    f"idle for {now - c.last:.1f} s while holding {c.reserved} bytes "
                    "of reassembly budget another stream needed"
                )
                need -= c.reserved
                victims.append(c)
        for c in victims:
            self._cancel(c)

    # -- timeouts ----------------------------------------------------------------------

    def _expired(self, call: _Call, now: float) -> str | None:
        lim = self.limits
        if call.phase == FIRST:
            first = lim.first_message_s if call.group == LINK else lim.check_s
            if now - call.opened > first:
                return f"no request within {first:g} s of opening the call"
        elif call.phase == BODY:
            if now - call.last > lim.idle_s:
                return f"stalled: no chunk for {now - call.last:.1f} s (limit {lim.idle_s:g} s)"
            if now - call.opened > lim.stream_s:
                return f"stream still open after {lim.stream_s:g} s (limit)"
        return None

    def _reap(self) -> None:
        lim = self.limits
        tick = max(0.02, min(0.25, lim.check_s / 4, lim.first_message_s / 4, lim.idle_s / 4))
        while not self._stop.wait(tick):
            now = time.monotonic()
            expired = []
            with self._lock:
                for call in self._calls:
                    if call.cancelled:
                        continue
                    reason = self._expired(call, now)
                    if reason:
                        call.cancelled = reason
                        expired.append(call)
            for call in expired:
                self._cancel(call)

    def _cancel(self, call: _Call) -> None:
        self.log.warn(
            call.caller,
            f"agent {self.agent_id} cancelled {call.method} from "
            f"{call.caller.describe()}: {call.cancelled}",
        )
        call.context.cancel()


def next_request(requests: Iterator[Any]) -> Any | None:
    """The next request of a stream, or None when it ended (or was cancelled)."""
    try:
        return next(requests)
    except StopIteration:
        return None


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

    def __init__(
        self,
        policy: GatePolicy,
        deliver: Callable[[Envelope], None],
        check_payload: PayloadCheck | None = None,
    ) -> None:
        self.policy = policy
        self._deliver = deliver
        self._check_payload = check_payload
        self._lock = threading.Lock()
        self._next_seq: dict[AgentId, int] = {}
        self._last_round: dict[AgentId, int] = {}
        self._peer_names = frozenset(agent_identity(j) for j in policy.peers)

    def check_caller(self, identities: Iterable[str] | None) -> None:
        """At call open: a certificate must name one of this agent's neighbours."""
        p = self.policy
        if not p.require_identity:
            return
        names = set(identities or ())
        if not names:
            raise RefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"no client certificate; agent {p.agent_id} refuses the call",
            )
        if not names & self._peer_names:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate identity {sorted(names)} may not send to agent {p.agent_id}: "
                "not a neighbour",
                f"certificate identity {sorted(names)} is not a neighbour of agent {p.agent_id} "
                f"(neighbours {sorted(p.peers)})",
            )

    def _check_route(self, env: Envelope, identities: Iterable[str] | None, nbytes: int) -> None:
        p = self.policy
        who = f"agent {env.sender} (round {env.round}, stage {env.stage!r})"
        if p.require_identity:
            names = set(identities or ())
            if not names:
                raise RefusedError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"no client certificate; refused envelope claiming {who}",
                )
            if agent_identity(env.sender) not in names:
                raise RefusedError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate identity {sorted(names)} may not send as {who}",
                )
        if env.job_id != p.job_id:
            raise RefusedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"envelope from {who} is for job {env.job_id!r}; this agent serves "
                f"job {p.job_id!r}",
            )
        if env.receiver != p.agent_id:
            raise RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"envelope from {who} is addressed to agent {env.receiver}, this is "
                f"agent {p.agent_id}",
            )
        if env.sender not in p.peers:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{who} is not a neighbour of agent {p.agent_id}",
                f"{who} is not a neighbour of agent {p.agent_id} (neighbours {sorted(p.peers)})",
            )
        if env.stage not in p.stages:
            raise RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown stage {env.stage!r} from {who} (known {sorted(p.stages)})",
            )
        if not -1 <= env.round <= p.max_round:
            raise RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"round {env.round} from {who} is outside -1..{p.max_round}",
            )
        if nbytes > p.max_payload_bytes:
            raise RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payload of {nbytes} bytes from {who} exceeds {p.max_payload_bytes}",
            )

    def _check_order(self, env: Envelope, seq: int) -> tuple[int, int]:
        """(expected seq, last round) for the sender, or ``RefusedError`` (call under the lock).

        The sender's sequence state goes back to the caller only when its
        certificate proved it is the sender; otherwise only to the log.
        """
        who = f"agent {env.sender} (round {env.round}, stage {env.stage!r})"
        expected = self._next_seq.get(env.sender, 0)
        last = self._last_round.get(env.sender, -1)
        verified = self.policy.require_identity
        if seq != expected:
            replay = seq < expected
            kind = "replayed" if replay else "out-of-order"
            code = grpc.StatusCode.ALREADY_EXISTS if replay else grpc.StatusCode.FAILED_PRECONDITION
            detail = f"{kind} envelope seq {seq} from {who}; expected seq {expected}"
            public = detail if verified else f"{kind} envelope seq {seq} from {who}"
            raise RefusedError(code, public, detail)
        if env.round < last - 1:
            detail = f"out-of-order envelope from {who}: already had round {last}"
            raise RefusedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                detail if verified else f"out-of-order envelope from {who}",
                detail,
            )
        return expected, last

    def precheck(
        self, env: Envelope, seq: int, identities: Iterable[str] | None, nbytes: int
    ) -> None:
        """Everything ``admit`` checks except the payload, on a chunked envelope's header."""
        self._check_route(env, identities, nbytes)
        with self._lock:
            self._check_order(env, seq)

    def admit(self, env: Envelope, seq: int, identities: Iterable[str] | None) -> None:
        """Deliver ``env`` or raise ``RefusedError``."""
        self._check_route(env, identities, env.nbytes)
        with self._lock:
            expected, last = self._check_order(env, seq)
            if self._check_payload is not None:
                try:
                    self._check_payload(env)
                except (ValueError, TypeError) as exc:
                    who = f"agent {env.sender} (round {env.round}, stage {env.stage!r})"
                    raise RefusedError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"malformed payload from {who}: {exc}"
                    ) from exc
            self._next_seq[env.sender] = expected + 1
            self._last_round[env.sender] = max(last, env.round)
            self._deliver(env)


class EnvelopeServicer:
    """``AgentLink``: ``Send`` (one envelope) and chunked ``SendChunks``, through one ``Gate``."""

    def __init__(self, gate: Gate, guard: CallGuard | None = None) -> None:
        self.gate = gate
        self.guard = guard or CallGuard(gate.policy.agent_id, DEFAULT_LIMITS, PROCESS_BUDGET)

    def _open(self, method: str, context: grpc.ServicerContext) -> tuple[Caller, _Call]:
        """The caller, checked before any request is read, and its slot."""
        caller = Caller.of(context)
        try:
            self.gate.check_caller(caller.names)
        except RefusedError as exc:
            self.guard.refuse(caller, method, context, exc)
        return caller, self.guard.open(method, LINK, caller, context)

    def _finish(
        self,
        method: str,
        caller: Caller,
        call: _Call,
        context: grpc.ServicerContext,
        received: Callable[[], tuple[Envelope, int] | None],
    ) -> pb.Ack:
        try:
            try:
                got = received()
                if got is None:  # cancelled (logged by the guard) or the caller went away
                    return pb.Ack()
                env, seq = got
                self.guard.set_phase(call, ADMIT)
                self.gate.admit(env, seq, caller.names)
            except WireError as exc:
                if not context.is_active():
                    return pb.Ack()
                raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        except RefusedError as exc:
            self.guard.refuse(caller, method, context, exc)
        finally:
            self.guard.close(call)
        log.debug("agent %s accepted %s seq %d", self.gate.policy.agent_id, env.describe(), seq)
        return pb.Ack(seq=seq)

    def send(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> pb.Ack:
        caller, call = self._open("Send", context)

        def received() -> tuple[Envelope, int] | None:
            raw = next_request(requests)
            if call.cancelled:
                return None
            if raw is None:
                raise WireError("Send call without an Envelope")
            return from_proto(parse_envelope(raw))

        return self._finish("Send", caller, call, context, received)

    def send_chunks(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> pb.Ack:
        caller, call = self._open("SendChunks", context)

        def received() -> tuple[Envelope, int] | None:
            raw = next_request(requests)
            if call.cancelled:
                return None
            if raw is None:
                raise WireError("empty chunk stream")
            limit = min(self.gate.policy.max_payload_bytes, self.guard.budget.capacity)
            r = Reassembler(limit)
            header, total = r.start(parse_chunk(raw))
            env, seq = from_proto(header, b"")
            # Identity, job, neighbour, stage, round, size, sequence: before buffering more.
            self.gate.precheck(env, seq, caller.names, total)
            self.guard.reserve(call, total)
            self.guard.set_phase(call, BODY)
            for raw in requests:
                self.guard.touch(call)
                r.add(parse_chunk(raw))
            if call.cancelled:
                return None
            return r.finish()

        return self._finish("SendChunks", caller, call, context, received)

    def handler(self) -> grpc.GenericRpcHandler:
        """Raw-bytes handlers: parse errors become our own clear status, not gRPC's."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Send": grpc.stream_unary_rpc_method_handler(
                    self.send, response_serializer=pb.Ack.SerializeToString
                ),
                "SendChunks": grpc.stream_unary_rpc_method_handler(
                    self.send_chunks, response_serializer=pb.Ack.SerializeToString
                ),
            },
        )
