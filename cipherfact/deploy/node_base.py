"""What every deployed party does, whatever the protocol: serve, pump, fail loudly.

A node owns one protocol role and one ``GrpcTransport``. It feeds received
envelopes to the role in arrival order, lets the role begin its next outer
iteration when the protocol says so, watches for silent peers (bounded, then
an error naming the peer, the round and the peer's health), passes any failure
on to its peers as an ``abort`` envelope so that no party hangs, and writes
``result.json`` whatever happens. Subclasses say how the role is built, who
its peers are, what a well-formed payload looks like and what to write.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cipherfact.agents.agent import Agent, AgentError
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import TransportError
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.party_checkpoint import PartyCheckpoints
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.deploy.transport import GrpcTransport, check_health
from cipherfact.protocols.base import ProtocolError
from cipherfact.simulations.checkpoint import CheckpointError

log = logging.getLogger("cipherfact.deploy")

STAGE_ABORT = "abort"
MAX_ABORT_BYTES = 2000
POLL_S = 0.2
ABORT_BUDGET_S = 1.0  # all abort notices of one failure together
STOP_GRACE_S = 0.2  # server shutdown grace once stopped by a signal
# Sent by a gRPC thread to the main thread when a peer's abort notice arrives, so
# that a send being retried (or any other wait) ends at once.
WAKE_SIGNAL = signal.SIGUSR1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class NodeError(RuntimeError):
    """The party stopped before finishing: names the agent, the peer and the round."""


class NodeStoppedError(NodeError):
    """Stopped on request (SIGTERM, SIGINT)."""


class PeerAbortedError(NodeError):
    """A peer's abort notice arrived while this party was busy (a send, a retry)."""


def check_abort_payload(env: Envelope) -> None:
    """An abort notice is a short UTF-8 reason; anything else is refused at the RPC."""
    if env.nbytes > MAX_ABORT_BYTES:
        raise ValueError(f"abort reason of {env.nbytes} bytes is too long")
    try:
        bytes(env.payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a valid abort payload: {exc}") from exc


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def one_line(text: str, limit: int = 1500) -> str:
    """A reason as one line (result.json, logs, abort notices)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class NodeTransport(GrpcTransport):
    """``GrpcTransport`` that also counts gRPC bytes per round (a resumed part leaves
    its repeated key exchange out of the job's totals) and envelopes per peer, and
    refuses to start a send once the node has been asked to stop or a peer has
    aborted."""

    def __init__(
        self, *args: Any, before_send: Callable[[], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.grpc_bytes_by_round: dict[int, int] = defaultdict(int)
        #: envelopes each peer has accepted from this one (abort notices follow them)
        self.delivered: dict[AgentId, int] = defaultdict(int)
        self.in_doubt: set[AgentId] = set()
        self._before_send = before_send

    def send(self, env: Envelope) -> None:
        if self._before_send is not None:
            self._before_send()
        before = self.grpc_bytes_sent
        try:
            super().send(env)
            self.delivered[env.receiver] += 1
        except BaseException:
            self.in_doubt.add(env.receiver)  # cut short: it may or may not have arrived
            raise
        finally:
            self.grpc_bytes_by_round[env.round] += self.grpc_bytes_sent - before


class BaseNode(ABC):
    """Runs one party of a deployed job to completion; ``stop`` (SIGTERM) ends it cleanly."""

    #: the protocol's stages (``abort`` is added by the node)
    stages: frozenset[str] = frozenset()
    #: whether the party keeps checkpoints and may be given ``resume_from``
    supports_resume: bool = False
    #: whether the protocol itself relies on the job certificates (no insecure jobs)
    needs_certificates: bool = False
    #: ``"module:function(deploy, results, codes, wall_s, out, *, interrupted)"``: merges
    #: the parties' folders after a run (``deploy local``, ``deploy gather``)
    gatherer: str = "cipherfact.deploy.app_node:gather_app"

    def __init__(
        self,
        deploy: DeployJob,
        agent_id: AgentId,
        *,
        resume_from: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.deploy = deploy
        self.agent_id = agent_id
        self.stop = stop or threading.Event()
        self.out = deploy.agent_out(agent_id)
        self.transport: GrpcTransport | None = None
        self.role: Any = None
        self.job_id = ""
        self.metrics_path = self.out / "metrics.jsonl"
        self._heard: dict[AgentId, tuple[int, float]] = {}
        self._sent_before = (0, 0, 0)
        #: what asked this party to stop ("SIGTERM"), once something has
        self.stop_signal: str | None = None
        #: the job's counters saved with the checkpoint this part resumed from
        self.base_counters: dict[str, float] | None = None
        #: the outer iteration this part resumes after (nodes that ``supports_resume``)
        self.resume_from = resume_from
        #: this party's own checkpoints (``open_checkpoints``), if it keeps any
        self.checkpoints: PartyCheckpoints | None = None
        self._started = time.perf_counter()
        self._armed = False  # a stop request may raise in the running thread now
        self._run_thread: int | None = None
        self._signals = False  # install_signal_handlers was called for this node
        self._peer_abort: str | None = None  # a peer's abort notice, described

    # -- what a protocol says --------------------------------------------------------

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        """How many agent processes a job of ``scenario`` has."""
        return int(scenario.n_agents)

    @classmethod
    def describe_parties(cls, n: int) -> str:
        """How agent ids 0..n-1 are assigned, for messages ("RS (0), CSP (1), ...")."""
        return f"n_agents = {n}"

    @classmethod
    def role_title(cls, agent_id: AgentId) -> str:
        """What agent ``agent_id`` is in this protocol ("agent 3", "the CSP")."""
        return f"agent {agent_id}"

    @classmethod
    def keeps_checkpoints(cls, agent_id: AgentId) -> bool:
        """Whether party ``agent_id`` writes checkpoints (if the protocol resumes at all):
        a party that carries no state across outer iterations (a csr_fhe_mf user, which
        uploads again on resume) has none, and is left out of the common resume point."""
        return cls.supports_resume

    @classmethod
    def checkpoint_config(cls, scenario: Any, parties: int) -> dict[str, Any]:
        """The public configuration the parties' checkpoints record, from the scenario
        alone, so that ``deploy local --resume`` refuses a changed job before any party
        starts: the scenario after overrides and the number of parties."""
        from cipherfact.simulations.checkpoint import public_config

        return {**public_config(scenario), "job.parties": int(parties)}

    def open_checkpoints(
        self, config: dict[str, Any], total: int, **codec: Any
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Set up this party's checkpoints (``config``: the job's public configuration,
        ``total``: its outer iterations; ``codec``: ``encode``/``decode`` of the role's
        state). On resume, returns (the role's state, the node's ``past_*`` history) and
        keeps the job's counters; a missing checkpoint or a changed job is refused in one
        line, before the party makes its key."""
        self.checkpoints = PartyCheckpoints(
            f"agent {self.agent_id}", self.out, config, self.deploy.checkpoint_every, total, **codec
        )
        if self.resume_from is None:
            return None
        try:
            state, past, self.base_counters = self.checkpoints.load(self.resume_from)
        except CheckpointError as exc:
            raise NodeError(str(exc)) from exc
        return state, past

    @abstractmethod
    def prepare(self) -> None:
        """Build the role (and its key); set ``self.role`` and ``self.job_id``."""

    @abstractmethod
    def peers(self) -> list[AgentId]:
        """The parties this one exchanges envelopes with (both directions)."""

    @abstractmethod
    def max_round(self) -> int:
        """The highest round an envelope of this job may carry."""

    @abstractmethod
    def current_round(self) -> int:
        """The role's round, for error messages and abort notices."""

    def position(self) -> str:
        """Where the role is, for messages ("round 5 (outer 2)")."""
        return f"round {self.current_round()}"

    def payload_check(self) -> PayloadCheck | None:
        """The protocol's cheap format check of one payload (servicer side)."""
        return None

    def should_begin(self) -> bool:
        """Whether this party starts the next outer iteration now."""
        return False

    def begin(self, agent: Agent) -> None:
        """Start the next outer iteration (send what ``begin_outer`` returns)."""
        agent.send(self.role.begin_outer())

    def after_deliver(self) -> None:
        """Called after each delivered envelope (metrics of finished iterations)."""
        return None

    def finish(self) -> None:
        """Called once the role is done, before the transport closes."""
        return None

    def waiting_on(self) -> list[AgentId]:
        """The peers this party expects to hear from next (named when they go silent)."""
        return self.peers()

    def silence_limit(self) -> float:
        """Seconds without any message that count as a failed peer."""
        return self.deploy.peer_timeout_s

    def result_fields(self) -> dict[str, Any]:
        """Protocol-specific fields of ``result.json``."""
        return {}

    def write_outputs(self) -> None:
        """Write the party's own results after a successful run."""
        return None

    # -- stopping ----------------------------------------------------------------------

    def request_stop(self, why: str = "request") -> None:
        """Ask the party to stop (``why``: the signal's name). Called in the thread that
        runs the node (the signal handler), it stops whatever the node is doing at
        once: generating its key, waiting for peers, retrying a send."""
        if self.stop_signal is None:
            self.stop_signal = why
        self.stop.set()
        self._raise_if_armed(self._stopped)

    def wake(self) -> None:
        """``WAKE_SIGNAL`` handler: a peer's abort notice has arrived."""
        if self._peer_abort is not None:
            self._raise_if_armed(self._peer_aborted)

    def _stopped(self) -> NodeStoppedError:
        why = f": stopped by {self.stop_signal}" if self.stop_signal else ""
        return NodeStoppedError(f"agent {self.agent_id} stopped by signal at {self._where()}{why}")

    def _peer_aborted(self) -> PeerAbortedError:
        return PeerAbortedError(self._peer_abort or f"agent {self.agent_id}: a peer aborted")

    def _raise_if_armed(self, make: Callable[[], NodeError]) -> None:
        if self._armed and threading.get_ident() == self._run_thread:
            self._armed = False
            raise make()

    def _check_interrupts(self) -> None:
        """Raise if a stop was requested or a peer aborted (before a send, after a
        critical section)."""
        if self.stop.is_set():
            raise self._stopped()
        if self._peer_abort is not None:
            raise self._peer_aborted()

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Writing a file: a stop request waits until it is complete, then takes effect."""
        armed, self._armed = self._armed, False
        try:
            yield
        finally:
            self._armed = armed
        if armed:
            self._check_interrupts()

    def _note_abort(self, env: Envelope) -> None:
        """A peer's abort notice passed the gate (a gRPC thread): wake the node."""
        if self._peer_abort is None:
            self._peer_abort = self._describe_abort(env)
        main = threading.main_thread().ident
        if self._signals and self._armed and self._run_thread == main and main is not None:
            signal.pthread_kill(main, WAKE_SIGNAL)

    def _where(self) -> str:
        try:
            return self.position() if self.role is not None else "start-up (round -1)"
        except Exception:  # a half-built role
            return "start-up (round -1)"

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the party; returns its result record (also written to ``result.json``).

        Whatever ends the run (success, a failure before or after start, a
        peer's abort, a stop request, an unexpected error), ``result.json`` says
        so in one line, and peers that can be reached get an abort notice.
        Failures raise ``NodeError`` (``NodeStoppedError`` on a stop request).
        """
        started = self._started = time.perf_counter()
        self._run_thread = threading.get_ident()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(
                f"agent {self.agent_id}: cannot create its output folder {str(self.out)!r}: "
                f"{exc.strerror or exc}"
            ) from exc
        status = "failed"
        running = False  # the protocol has started (the transport is up)
        try:
            try:
                self._armed = True
                self._check_interrupts()
                self.prepare()
                self.transport = self._open_transport()
                running = True
                self._loop(Agent(self.agent_id, self.role, self.transport), self.transport)
                status = "completed"
            finally:
                self._armed = False
        except NodeStoppedError as exc:
            status = f"stopped: {one_line(str(exc))}"
            self._abort(str(exc))
            raise
        except (TransportError, PeerAbortedError) as exc:
            # A peer that aborted closes its server, which fails our send to it; its
            # abort notice, naming the root cause, is then already in our inbox.
            notice = self._abort_notice() if running else self._peer_abort
            reason = one_line(notice or str(exc))
            status = f"failed: {reason}" if running else f"failed before start: {reason}"
            if not running and notice is None:
                status = f"failed before start: {type(exc).__name__}: {reason}"
            self._abort(reason)
            raise NodeError(reason) from exc
        except (NodeError, AgentError, ProtocolError) as exc:
            reason = one_line(str(exc))
            status = (
                f"failed: {reason}"
                if running
                else f"failed before start: {type(exc).__name__}: {reason}"
            )
            self._abort(reason)
            if isinstance(exc, NodeError):
                raise
            raise NodeError(reason) from exc
        except Exception as exc:  # bad files or parameters, certificates, anything else
            reason = one_line(f"{type(exc).__name__}: {exc}")
            status = f"failed: {reason}" if running else f"failed before start: {reason}"
            self._abort(reason)
            raise NodeError(one_line(f"agent {self.agent_id}: {exc}")) from exc
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: still say so
            status = f"stopped: {type(exc).__name__}"
            self._abort(status)
            raise
        finally:
            result = self._result(status, time.perf_counter() - started)
            self._write_result(result)
            if self.transport is not None:
                self.transport.close(grace=STOP_GRACE_S if self.stop.is_set() else 1.0)
        try:
            self.write_outputs()
        except OSError as exc:  # the protocol is done, the peers need not hear of it
            reason = one_line(
                f"agent {self.agent_id}: cannot write its results into {str(self.out)!r}: {exc}"
            )
            result["status"] = f"failed: {reason}"
            self._write_result(result)
            raise NodeError(reason) from exc
        return result

    def _open_transport(self) -> GrpcTransport:
        spec = self.deploy.agent(self.agent_id)
        check = self.payload_check()

        def check_payload(env: Envelope) -> None:
            if env.stage == STAGE_ABORT:
                check_abort_payload(env)
                self._note_abort(env)
            elif check is not None:
                check(env)

        transport = NodeTransport(
            self.agent_id,
            self.job_id,
            spec.listen,
            {j: self.deploy.agent(j).address for j in self.peers()},
            self.deploy.tls_files(self.agent_id),
            stages=self.stages | {STAGE_ABORT},
            max_round=self.max_round(),
            retry=self.deploy.retry,
            check_payload=check_payload,
            before_send=self._check_interrupts,
        )
        try:
            transport.start()
        except BaseException:
            transport.close(grace=0)
            raise
        return transport

    def _loop(self, agent: Agent, transport: GrpcTransport) -> None:
        role = self.role
        agent.start()
        log.info("agent %s started; peers %s", self.agent_id, self.peers())
        last_progress = time.monotonic()
        while not role.done:
            if self.stop.is_set():
                raise self._stopped()
            if self.should_begin():
                self.begin(agent)
                continue
            envs = transport.recv(self.agent_id, timeout=POLL_S)
            if not envs:
                self._check_silence(last_progress)
                continue
            last_progress = time.monotonic()
            for env in envs:
                self._heard[env.sender] = (env.round, last_progress)
                if env.stage == STAGE_ABORT:
                    raise NodeError(self._describe_abort(env))
                agent.deliver(env)
                self.after_deliver()
        self.finish()

    def _describe_abort(self, env: Envelope) -> str:
        reason = bytes(env.payload).decode("utf-8", "replace")
        return (
            f"agent {self.agent_id}: agent {env.sender} aborted the job at round "
            f"{env.round}: {reason}"
        )

    def _abort_notice(self, wait_s: float = 0.5) -> str | None:
        """A peer's abort notice, described (None if there is none): one already seen
        at the gate, or one arriving in the inbox within ``wait_s``."""
        if self._peer_abort is not None:
            return self._peer_abort
        if self.transport is None:
            return None
        for env in self.transport.recv(self.agent_id, timeout=wait_s):
            if env.stage == STAGE_ABORT:
                return self._describe_abort(env)
        return self._peer_abort

    def _check_silence(self, last_progress: float) -> None:
        limit = self.silence_limit()
        silent = time.monotonic() - last_progress
        if silent < limit:
            return
        now = time.monotonic()
        waiting = self.waiting_on() or self.peers()
        heard = []
        for j in waiting:
            if j in self._heard:
                r, t = self._heard[j]
                heard.append(f"agent {j} at round {r} {now - t:.1f} s ago")
            else:
                heard.append(f"agent {j} never")
        stalest = min(waiting, key=lambda j: self._heard.get(j, (-2, 0.0)))
        health = check_health(
            self.deploy.agent(stalest).address, stalest, self.deploy.tls_files(self.agent_id)
        )
        raise NodeError(
            f"agent {self.agent_id}: no message from any peer for {silent:.1f} s "
            f"(limit {limit:g} s) at {self.position()}; last heard: {', '.join(heard)}; "
            f"agent {stalest} health: {health}"
        )

    def _abort(self, reason: str) -> None:
        """Tell every peer, in parallel and within ``ABORT_BUDGET_S`` in all, so that
        the failure spreads instead of a hang. Never raises."""
        try:
            peers = self.peers()
        except Exception:  # a half-built party
            return
        if not peers or not self.job_id:
            return
        try:
            round_index = max(self.current_round(), -1) if self.role is not None else -1
        except Exception:
            round_index = -1
        text = one_line(reason).encode("utf-8")[: MAX_ABORT_BYTES - 100]
        deadline = time.monotonic() + ABORT_BUDGET_S
        threads = [
            threading.Thread(
                target=self._send_abort,
                args=(j, round_index, text, deadline),
                name=f"abort-{j}",
                daemon=True,
            )
            for j in peers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _send_abort(self, peer: AgentId, round_index: int, text: bytes, deadline: float) -> None:
        """One abort notice over a channel of its own (works whether or not this
        party's server ever started). Its sequence number follows the envelopes
        this party delivered to ``peer``; a send cut short by a stop request may
        or may not have arrived, so a "replayed" or "out of order" answer is
        tried once more with the other number."""
        import grpc

        from cipherfact.deploy import envelope_v1_pb2_grpc as pb_grpc
        from cipherfact.deploy.transport import open_channel
        from cipherfact.deploy.wire import to_proto

        delivered = getattr(self.transport, "delivered", {})
        seq = int(delivered.get(peer, 0))
        # a send cut short by a stop request has usually arrived: try its successor first
        order = (
            (seq + 1, seq) if peer in getattr(self.transport, "in_doubt", ()) else (seq, seq + 1)
        )
        retry = (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)
        env = Envelope(self.job_id, round_index, STAGE_ABORT, self.agent_id, peer, text)
        try:
            channel = open_channel(
                self.deploy.agent(peer).address, peer, self.deploy.tls_files(self.agent_id)
            )
        except Exception as exc:  # unreadable certificate files, ...
            log.debug("no abort notice to agent %s: %s", peer, exc)
            return
        try:
            stub = pb_grpc.AgentLinkStub(channel)
            for attempt in order:
                left = deadline - time.monotonic()
                if left <= 0.02:
                    return
                try:
                    stub.Send(to_proto(env, attempt), timeout=left)
                    return
                except grpc.RpcError as exc:
                    if exc.code() not in retry:  # replayed / out of order: the other number
                        log.debug("abort notice to agent %s failed: %s", peer, exc.code())
                        return
        except Exception as exc:  # never let a notice hide the failure
            log.debug("abort notice to agent %s failed: %s", peer, exc)
        finally:
            channel.close()

    # -- output helpers -----------------------------------------------------------------

    def traffic_since_last(self) -> tuple[int, int, int]:
        """(payload bytes, messages, gRPC bytes) sent since the previous call."""
        assert self.transport is not None
        stats = self.transport.stats
        now = (stats.bytes_total, stats.messages_total, self.transport.grpc_bytes_sent)
        before, self._sent_before = self._sent_before, now
        return now[0] - before[0], now[1] - before[1], now[2] - before[2]

    def append_metrics(self, line: dict[str, Any]) -> None:
        with self.critical(), self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def job_counters(self, before_round: int | None = None) -> dict[str, float]:
        """The job's traffic and time so far, across the parts of a resumed run.

        A first part counts what it sent (in rounds before ``before_round``, if
        given: a checkpoint counts only the outer iterations it holds). A resumed
        part adds what it sent, less its repeated key exchange (round -1), to
        the counters saved with the checkpoint it resumed from, so the totals
        equal an uninterrupted run's; ``resume_setup_bytes_sent`` is what the
        repeated key exchanges cost.
        """
        wall = time.perf_counter() - self._started
        base = self.base_counters
        t = self.transport

        def total(by_round: Any) -> int:
            return sum(
                int(v)
                for r, v in dict(by_round).items()
                if (before_round is None or r < before_round) and not (base is not None and r == -1)
            )

        if t is None:
            sent = {"bytes_sent": 0, "messages_sent": 0, "grpc_bytes_sent": 0}
            setup = 0
        else:
            stats = t.stats
            sent = {
                "bytes_sent": total(stats.bytes_by_round),
                "messages_sent": total(stats.messages_by_round),
                "grpc_bytes_sent": total(getattr(t, "grpc_bytes_by_round", {})),
            }
            setup = int(stats.bytes_by_round.get(-1, 0))
        if base is None:
            return {**sent, "setup_bytes_sent": setup, "wall_s": wall, "resume_setup_bytes_sent": 0}
        out: dict[str, float] = {k: int(base.get(k, 0)) + v for k, v in sent.items()}
        out.update(
            setup_bytes_sent=int(base.get("setup_bytes_sent", 0)),
            wall_s=float(base.get("wall_s", 0.0)) + wall,
            resume_setup_bytes_sent=int(base.get("resume_setup_bytes_sent", 0)) + setup,
        )
        return out

    def _write_result(self, result: dict[str, Any]) -> None:
        """Never raises: a full disk must not hide the failure being reported."""
        try:
            write_atomic(
                self.out / "result.json",
                (json.dumps(result, indent=2, sort_keys=True) + "\n").encode("utf-8"),
            )
        except OSError as exc:
            log.error(
                "agent %s could not write %s: %s", self.agent_id, self.out / "result.json", exc
            )

    def _result(self, status: str, wall: float) -> dict[str, Any]:
        transport = self.transport
        stats = transport.stats if transport is not None else None
        try:
            round_index = self.current_round() if self.role is not None else None
            neighbors = self.peers()
            extra = self.result_fields()
        except Exception:  # a half-built party: report what is known
            round_index, neighbors, extra = None, [], {}
        job = self.job_counters()
        return {
            "agent_id": self.agent_id,
            "job_id": self.job_id,
            "protocol": self.deploy.scenario.protocol,
            "status": status,
            "stop_signal": self.stop_signal,
            "round": round_index,
            "neighbors": neighbors,
            "tls": not self.deploy.insecure,
            "wall_s": wall,
            "bytes_sent": stats.bytes_total if stats else 0,
            "messages_sent": stats.messages_total if stats else 0,
            "grpc_bytes_sent": transport.grpc_bytes_sent if transport else 0,
            "traffic": stats.to_dict() if stats else {},
            "setup_bytes_sent": stats.bytes_by_round.get(-1, 0) if stats else 0,
            **{f"job_{k}": v for k, v in job.items() if not k.startswith("resume_")},
            "resume_setup_bytes_sent": job["resume_setup_bytes_sent"],
            **extra,
        }


def install_signal_handlers(node: BaseNode) -> Callable[[], None]:
    """SIGTERM and SIGINT stop ``node`` at once, whatever it is doing (generating its
    key, waiting for its neighbours, retrying a send); a peer's abort notice wakes
    it the same way (``WAKE_SIGNAL``). Call from the main thread, which must run
    ``node.run()``. Returns a function that restores the previous handlers."""

    def on_stop(signum: int, _frame: Any) -> None:
        node.request_stop(signal.Signals(signum).name)

    def on_wake(_signum: int, _frame: Any) -> None:
        node.wake()

    previous = {sig: signal.signal(sig, on_stop) for sig in STOP_SIGNALS}
    previous[WAKE_SIGNAL] = signal.signal(WAKE_SIGNAL, on_wake)
    node._signals = True

    def restore() -> None:
        node._signals = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
