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
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from cipherfact.agents.agent import Agent, AgentError
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import TransportError
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.deploy.transport import GrpcTransport, check_health
from cipherfact.protocols.base import ProtocolError

log = logging.getLogger("cipherfact.deploy")

STAGE_ABORT = "abort"
MAX_ABORT_BYTES = 2000
POLL_S = 0.2


class NodeError(RuntimeError):
    """The party stopped before finishing: names the agent, the peer and the round."""


class NodeStoppedError(NodeError):
    """Stopped on request (SIGTERM)."""


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


class BaseNode(ABC):
    """Runs one party of a deployed job to completion; ``stop`` (SIGTERM) ends it cleanly."""

    #: the protocol's stages (``abort`` is added by the node)
    stages: frozenset[str] = frozenset()

    def __init__(self, deploy: DeployJob, agent_id: AgentId, *,
                 stop: threading.Event | None = None) -> None:
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

    # -- what a protocol says --------------------------------------------------------

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

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the party; returns its result record (also written to ``result.json``)."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self.prepare()
        except (NodeError, OSError, ValueError, TypeError) as exc:  # bad file or parameters
            status = f"failed before start: {type(exc).__name__}: {exc}"
            self._write_result(self._result(status, time.perf_counter() - started))
            if isinstance(exc, NodeError):
                raise
            raise NodeError(f"agent {self.agent_id}: {exc}") from exc
        spec = self.deploy.agent(self.agent_id)
        check = self.payload_check()

        def check_payload(env: Envelope) -> None:
            if env.stage == STAGE_ABORT:
                check_abort_payload(env)
            elif check is not None:
                check(env)

        transport = self.transport = GrpcTransport(
            self.agent_id,
            self.job_id,
            spec.listen,
            {j: self.deploy.agent(j).address for j in self.peers()},
            self.deploy.tls_files(self.agent_id),
            stages=self.stages | {STAGE_ABORT},
            max_round=self.max_round(),
            retry=self.deploy.retry,
            check_payload=check_payload,
        )
        status = "failed"
        try:
            transport.start()
            self._loop(Agent(self.agent_id, self.role, transport), transport)
            status = "completed"
        except NodeStoppedError as exc:
            status = f"stopped: {exc}"
            self._abort(str(exc))
            raise
        except TransportError as exc:
            # A peer that aborted closes its server, which fails our send to it; its
            # abort notice, naming the root cause, is then already in our inbox.
            notice = self._abort_notice(transport)
            status = f"failed: {notice or exc}"
            self._abort(notice or str(exc))
            raise NodeError(notice or str(exc)) from exc
        except (NodeError, AgentError, ProtocolError, ValueError) as exc:
            status = f"failed: {exc}"
            self._abort(str(exc))
            raise NodeError(str(exc)) from exc
        finally:
            result = self._result(status, time.perf_counter() - started)
            self._write_result(result)
            transport.close()
        self.write_outputs()
        return result

    def _loop(self, agent: Agent, transport: GrpcTransport) -> None:
        role = self.role
        agent.start()
        log.info("agent %s started; peers %s", self.agent_id, self.peers())
        last_progress = time.monotonic()
        while not role.done:
            if self.stop.is_set():
                raise NodeStoppedError(
                    f"agent {self.agent_id} stopped by signal at {self.position()}"
                )
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
        return (f"agent {self.agent_id}: agent {env.sender} aborted the job at round "
                f"{env.round}: {reason}")

    def _abort_notice(self, transport: GrpcTransport, wait_s: float = 0.5) -> str | None:
        """A peer's abort notice waiting in the inbox, described (None if there is none)."""
        for env in transport.recv(self.agent_id, timeout=wait_s):
            if env.stage == STAGE_ABORT:
                return self._describe_abort(env)
        return None

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
        health = check_health(self.deploy.agent(stalest).address, stalest,
                              self.deploy.tls_files(self.agent_id))
        raise NodeError(
            f"agent {self.agent_id}: no message from any peer for {silent:.1f} s "
            f"(limit {limit:g} s) at {self.position()}; last heard: {', '.join(heard)}; "
            f"agent {stalest} health: {health}"
        )

    def _abort(self, reason: str) -> None:
        """Tell every peer (one short try each) so the failure spreads, not a hang."""
        if self.transport is None or self.role is None:
            return
        text = reason.encode("utf-8")[: MAX_ABORT_BYTES - 100]
        for j in self.peers():
            env = Envelope(self.job_id, max(self.current_round(), -1), STAGE_ABORT,
                           self.agent_id, j, text)
            self.transport.send_best_effort(env)

    # -- output helpers -----------------------------------------------------------------

    def traffic_since_last(self) -> tuple[int, int, int]:
        """(payload bytes, messages, gRPC bytes) sent since the previous call."""
        assert self.transport is not None
        stats = self.transport.stats
        now = (stats.bytes_total, stats.messages_total, self.transport.grpc_bytes_sent)
        before, self._sent_before = self._sent_before, now
        return now[0] - before[0], now[1] - before[1], now[2] - before[2]

    def append_metrics(self, line: dict[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def _write_result(self, result: dict[str, Any]) -> None:
        (self.out / "result.json").write_text(
            json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    def _result(self, status: str, wall: float) -> dict[str, Any]:
        transport = self.transport
        stats = transport.stats if transport is not None else None
        return {
            "agent_id": self.agent_id,
            "job_id": self.job_id,
            "protocol": self.deploy.scenario.protocol,
            "status": status,
            "round": self.current_round() if self.role is not None else None,
            "neighbors": self.peers() if self.role is not None else [],
            "tls": not self.deploy.insecure,
            "wall_s": wall,
            "bytes_sent": stats.bytes_total if stats else 0,
            "messages_sent": stats.messages_total if stats else 0,
            "grpc_bytes_sent": transport.grpc_bytes_sent if transport else 0,
            "traffic": stats.to_dict() if stats else {},
            "setup_bytes_sent": stats.bytes_by_round.get(-1, 0) if stats else 0,
            **self.result_fields(),
        }
