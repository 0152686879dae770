"""What every deployed party does, whatever the protocol: serve, pump, fail loudly.

A node owns one protocol role and one ``GrpcTransport``. It feeds received
envelopes to the role in arrival order, lets the role begin its next outer
iteration when the protocol says so, watches for silent peers (bounded, then
an error naming the peer, the round and the peer's health), passes any failure
on to its peers as an ``abort`` envelope so that no party hangs, and writes
``result.json`` whatever happens. It also writes one ``metrics.jsonl`` line
per finished outer iteration and, where the protocol resumes, this party's
checkpoint at the boundary. Subclasses say only what is theirs: how the role
(and its key) is built, who its peers are, what a boundary reports, what a
checkpoint holds, what a well-formed payload looks like and what to write.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cipherfact.agents.agent import Agent, AgentError
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import TransportError
from cipherfact.deploy.gather import GatherRun, gather_reports
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.party_checkpoint import PartyCheckpoints, truncate_metrics
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.deploy.transport import GrpcTransport, check_health
from cipherfact.protocols.base import Profiler, ProtocolError
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


def save_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """A party's result file: numbers only, written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def numbered(name: str, arrays: Sequence[Any]) -> dict[str, Any]:
    """``{name_0: arrays[0], ...}``: one array per outer iteration, as the result files
    and a checkpoint's history hold them."""
    return {f"{name}_{e}": a for e, a in enumerate(arrays)}


def series(saved: Mapping[str, Any], name: str, count: int, who: str) -> list[np.ndarray]:
    """``name_0 .. name_<count-1>`` from a checkpoint's history (one line if one is missing)."""
    try:
        return [np.asarray(saved[f"{name}_{e}"]) for e in range(count)]
    except KeyError as exc:
        raise NodeError(f"{who}: checkpoint lacks {exc}") from exc


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


class BaseNode:
    """Runs one party of a deployed job to completion; ``stop`` (SIGTERM) ends it cleanly.

    Used as is (a subclass setting only ``stages`` and the ``factory`` hooks), it
    deploys a protocol whose simulation role factory (``simulations.grid.
    RoleFactory``) can build one party's role alone: the *drivers* begin every
    outer iteration (deployed parties share no barrier, so the others only
    answer messages) and write one ``metrics.jsonl`` line per outer iteration
    with what the factory's ``report`` says. A protocol with keys, checkpoints
    or result files of its own overrides ``prepare`` and the hooks below; the
    loop, the metrics lines, the checkpoints, ``result.json`` and the gathering
    step's common part stay here, so that every protocol gets them alike.
    """

    #: the protocol's stages (``abort`` is added by the node)
    stages: frozenset[str] = frozenset()
    #: whether the party keeps checkpoints and may be given ``resume_from``
    supports_resume: bool = False
    #: whether the protocol itself relies on the job certificates (no insecure jobs)
    needs_certificates: bool = False
    #: what one outer iteration is called (``metrics.jsonl``'s key, messages)
    unit: str = "outer"
    #: ``result.json``'s count of finished outer iterations (None: not reported)
    completed_key: str | None = None
    #: the agents that begin every outer iteration when at a boundary (None: all)
    drivers: frozenset[AgentId] | None = frozenset({0})
    #: parties with a name of their own (``result.json``'s ``party``, logs)
    party_names: ClassVar[Mapping[AgentId, str]] = {}
    #: what those parties are, where more than their name (kit READMEs, messages)
    party_titles: ClassVar[Mapping[AgentId, str]] = {}
    #: the agent id of user 0 where the other parties are users (None: "agent <id>")
    first_user: int | None = None
    #: how agent ids are assigned ({n}: the parties, {users}: those from ``first_user``)
    parties_text: str = "n_agents = {n}"

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
        #: the job's public parameters as this party derives them (``prepare``)
        self.config: Any = None
        #: the role's seconds, taken at each boundary (roles given it at ``prepare``)
        self.profiler = Profiler()
        self.metrics_path = self.out / "metrics.jsonl"
        #: outer iterations whose metrics line is written (a resumed part's earlier ones too)
        self.reported = 0
        self._begun = 0  # outer iterations this part began
        self._line_started = 0.0  # when the previous metrics line was written
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

    # -- who the parties are -------------------------------------------------------------

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        """How many agent processes a job of ``scenario`` has."""
        return int(scenario.n_agents)

    @classmethod
    def describe_parties(cls, n: int) -> str:
        """How agent ids 0..n-1 are assigned, for messages ("RS (0), CSP (1), ...")."""
        return cls.parties_text.format(n=n, users=n - (cls.first_user or 0))

    @classmethod
    def party_name(cls, agent_id: AgentId) -> str:
        """Agent ``agent_id``'s short name ("rs", "user 3", "agent 2")."""
        if agent_id in cls.party_names:
            return cls.party_names[agent_id]
        if cls.first_user is None:
            return f"agent {agent_id}"
        return f"user {agent_id - cls.first_user}"

    @classmethod
    def role_title(cls, agent_id: AgentId) -> str:
        """What agent ``agent_id`` is in this protocol ("agent 3", "the CSP")."""
        return cls.party_titles.get(agent_id) or cls.party_name(agent_id)

    # -- a role built by the protocol's simulation factory (the defaults) ---------------

    @classmethod
    def factory(cls, scenario: Any) -> Any:
        """The protocol's role factory (``agents -> LocalRoles``) for ``scenario``;
        needed only by a node that keeps the default ``prepare``."""
        raise NotImplementedError(f"{cls.__name__} builds its role in prepare()")

    @classmethod
    def neighbours(cls, scenario: Any, agent_id: AgentId) -> list[AgentId]:
        """The parties ``agent_id`` exchanges envelopes with (default ``peers``)."""
        raise NotImplementedError(f"{cls.__name__} names its peers in peers()")

    @classmethod
    def last_round(cls, scenario: Any) -> int:
        """The highest round an envelope of the job carries (default ``max_round``)."""
        raise NotImplementedError(f"{cls.__name__} says its last round in max_round()")

    @classmethod
    def job_id_of(cls, scenario: Any) -> str:
        """The job id the factory's roles put into their envelopes."""
        return str(scenario.name)

    def prepare(self) -> None:
        """Build the role (and its key); set ``self.role`` and ``self.job_id``. A bad
        resume must be refused (``open_checkpoints``) before any key is made."""
        scenario = self.deploy.scenario
        self.local = self.factory(scenario)([self.agent_id])
        self.role = self.local.roles[self.agent_id]
        self.job_id = self.job_id_of(scenario)

    def peers(self) -> list[AgentId]:
        """The parties this one exchanges envelopes with (both directions)."""
        return list(self.neighbours(self.deploy.scenario, self.agent_id))

    def max_round(self) -> int:
        """The highest round an envelope of this job may carry."""
        return int(self.last_round(self.deploy.scenario))

    def current_round(self) -> int:
        """The role's round, for error messages and abort notices."""
        return int(getattr(self.role, "round", -1))

    def boundaries_done(self) -> int:
        """How many outer iterations this party has finished (one metrics line each).
        By default those a driver began, less one still running: an answering party
        writes no lines."""
        role = self.role
        return self._begun - (0 if role.done or role.at_boundary else 1) if self._begun else 0

    def on_boundary(self, index: int) -> dict[str, Any]:
        """Outer iteration ``index`` has finished: keep what the result files need of it
        and return the protocol's fields of its metrics line (``timing``'s seconds,
        what the role reports; the node adds the index and the traffic)."""
        report = self.local.report(self.role) if self.local.report is not None else None
        if isinstance(report, np.ndarray | np.generic):
            report = report.tolist()
        return {"report": report}

    # -- what a protocol may change -----------------------------------------------------

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

    @classmethod
    def gather(cls, run: GatherRun) -> dict[str, Any]:
        """The job's ``summary.json`` from the parties' folders (``deploy local``,
        ``deploy gather``): the common fields and the drivers' metrics lines."""
        return gather_reports(run, sorted(cls.drivers or range(len(run.results))))

    def open_checkpoints(
        self, total: int, config: dict[str, Any] | None = None, **codec: Any
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Set up this party's checkpoints, if it keeps any (``total``: the job's outer
        iterations; ``config``: its public configuration, by default
        ``checkpoint_config``'s; ``codec``: ``encode``/``decode`` of the role's state).
        On resume, returns (the role's state, the node's ``past_*`` history) and keeps
        the job's counters; a missing checkpoint or a changed job is refused in one
        line, before the party makes its key."""
        if not self.keeps_checkpoints(self.agent_id):
            return None
        if config is None:
            config = self.checkpoint_config(self.deploy.scenario, len(self.deploy.agents))
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

    def checkpoint_state(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """What this party's checkpoint holds: its role's state and the node's own
        history that its result files need (saved as ``past_*``; see ``series``)."""
        return self.role.checkpoint_state(), {}

    def in_setup(self) -> bool:
        """Whether the job is still setting up (keys, structure): peers may still be
        starting or generating keys, so silence is allowed for longer."""
        return False

    def position(self) -> str:
        """Where the role is, for messages ("epoch 5 (round 5)")."""
        if self.in_setup():
            return "setup (round -1)"
        r = self.current_round()
        return f"round {r}" if self.unit == "outer" else f"{self.unit} {r} (round {r})"

    def payload_check(self) -> PayloadCheck | None:
        """The protocol's cheap format check of one payload (servicer side)."""
        return None

    def should_begin(self) -> bool:
        """Whether this party starts the next outer iteration now."""
        role = self.role
        driver = self.drivers is None or self.agent_id in self.drivers
        return driver and bool(role.at_boundary) and not role.done

    def begin(self, agent: Agent) -> None:
        """Start the next outer iteration (send what ``begin_outer`` returns)."""
        self._begun += 1
        agent.send(self.role.begin_outer())

    def after_deliver(self) -> None:
        """After each delivered envelope: one metrics line per finished outer iteration,
        then this party's checkpoint when one is due."""
        while self.reported < self.boundaries_done():
            self.append_report(self.reported, self.on_boundary(self.reported))
        self._checkpoint()

    def finish(self) -> None:
        """Called once the role is done, before the transport closes."""
        return None

    def waiting_on(self) -> list[AgentId]:
        """The peers this party expects to hear from next (named when they go silent)."""
        return self.peers()

    def silence_limit(self) -> float:
        """Seconds without any message that count as a failed peer (during the setup at
        least the start-up budget)."""
        limit = self.deploy.peer_timeout_s
        return max(limit, self.deploy.retry.startup_s) if self.in_setup() else limit

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
                self._open_metrics()
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
            if self.stop.is_set():
                # This party was told to stop too, before or while it looked for the
                # notice (an operator's SIGTERM to a whole job reaches the parties one
                # after the other, and a peer that stopped first can break our send
                # in any way, even a garbled answer): the stop is why the run ended.
                stopped = self._stopped()
                status = f"stopped: {one_line(str(stopped))}"
                self._abort(str(stopped))
                raise stopped from exc
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

    def _open_metrics(self) -> None:
        """A fresh ``metrics.jsonl``; a resumed part keeps the lines up to its checkpoint
        (it redoes the outer iterations after it, and drops a line cut short)."""
        if self.base_counters is None:
            self.metrics_path.write_text("", encoding="utf-8")
        else:
            truncate_metrics(self.metrics_path, self.unit, int(self.resume_from or 0))
            self.reported = int(self.resume_from or 0)
            log.info("agent %s resuming after %s %d", self.agent_id, self.unit, self.reported)
        self._line_started = time.perf_counter()
        log.info(
            "agent %s (%s) joins job %r", self.agent_id, self.party_name(self.agent_id), self.job_id
        )

    def timing(self, seconds: Mapping[str, float], *, wall: bool = True) -> dict[str, float]:
        """A metrics line's seconds: the role's ``crypto`` and ``compute`` sections and
        (``wall``) the wall time since the previous line."""
        out = {"crypto_s": seconds.get("crypto", 0.0), "compute_s": seconds.get("compute", 0.0)}
        if wall:
            out["wall_s"] = time.perf_counter() - self._line_started
        return out

    def boundary_traffic(self, index: int) -> tuple[int, int, int]:
        """What a metrics line counts as sent for outer iteration ``index``: (payload
        bytes, messages, gRPC bytes), by default all since the previous line."""
        return self.traffic_since_last()

    def append_report(self, index: int, fields: Mapping[str, Any]) -> None:
        """Append the metrics line of outer iteration ``index`` (-1: the setup) with its
        traffic; the iteration counts as reported once its line is written."""
        payload, messages, grpc_bytes = self.boundary_traffic(index)
        line = {
            self.unit: index,
            **fields,
            "bytes_sent": payload,
            "messages_sent": messages,
            "grpc_bytes_sent": grpc_bytes,
        }
        with self.critical(), self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
            self.reported = max(self.reported, index + 1)
        self._line_started = time.perf_counter()
        if index >= 0:
            log.info(
                "agent %s (%s) finished %s %d",
                self.agent_id,
                self.party_name(self.agent_id),
                self.unit,
                index,
            )

    def _checkpoint(self) -> None:
        """This party's checkpoint once an outer iteration is reported, when one is due;
        its counters hold what the rounds before the current one cost."""
        ck, done = self.checkpoints, self.reported
        if ck is None or not ck.due(done) or done != self.boundaries_done():
            return
        state, past = self.checkpoint_state()
        counters = self.job_counters(before_round=self.current_round())
        with self.critical():
            ck.save(done, state, past, counters)

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
        common: dict[str, Any] = {}
        if self.first_user is not None:
            common["party"] = self.party_name(self.agent_id)
        if self.completed_key is not None:
            common[self.completed_key] = self.reported
        if self.supports_resume:
            common["resumed_from"] = self.resume_from
        try:
            round_index = self.current_round() if self.role is not None else None
            neighbors = self.peers()
            extra = {**common, **self.result_fields()}
        except Exception:  # a half-built party: report what is known
            round_index, neighbors, extra = None, [], common
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
