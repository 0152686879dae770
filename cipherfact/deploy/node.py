"""One deployed ppdnmf agent: build its own role, run it over gRPC, write its results.

Each process derives what it needs from JOB.toml alone: the graph and the
public parameters from the scenario, its data block from the scenario's seed
(or its own ``data_path``), its key pair from the OS's randomness. It starts
its next outer iteration by itself as soon as it finishes one (no barrier),
checkpoints at outer boundaries, and writes ``factors.npz``, ``metrics.jsonl``
and ``result.json`` into its own folder. Any failure, its own or a
neighbour's, stops it with an error naming the peer and the round, and is
passed on to its neighbours as an ``abort`` envelope so no agent hangs.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.agent import Agent, AgentError
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import TransportError
from cipherfact.crypto import load_public_scheme
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.data.matrix_io import load_matrix
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.transport import GrpcTransport, check_health
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf import (
    STAGE_KEY,
    STAGE_OFFER,
    STAGE_REPLY,
    PPDNMFAgent,
    load_state_npz,
    save_state_npz,
)
from cipherfact.simulations.ppdnmf_job import (
    PPDNMFJob,
    build_role,
    check_matrix,
    codec_for,
    generate_key,
    prepare_job,
)
from cipherfact.simulations.topology import Graph

log = logging.getLogger("cipherfact.deploy")

STAGE_ABORT = "abort"
STAGES = frozenset({STAGE_KEY, STAGE_OFFER, STAGE_REPLY, STAGE_ABORT})
MAX_ABORT_BYTES = 2000
POLL_S = 0.2


class NodeError(RuntimeError):
    """The agent stopped before finishing: names the agent, the peer and the round."""


class NodeStoppedError(NodeError):
    """Stopped on request (SIGTERM)."""


@dataclass
class NodePlan:
    """Everything one agent derives from the job file before it generates its key."""

    agent_id: AgentId
    job: PPDNMFJob
    graph: Graph
    X: np.ndarray
    columns: np.ndarray | None
    weight_seed: int
    h_seed: int


def plan_node(deploy: DeployJob, agent_id: AgentId) -> NodePlan:
    """Data block, graph and seeds for ``agent_id`` (same seed -> same as ``simulate``)."""
    spec = deploy.agent(agent_id)
    scenario = deploy.scenario
    if spec.data_path is not None:
        X_i = np.ascontiguousarray(load_matrix(spec.data_path), dtype=np.float64)
        check_matrix(X_i, scenario.rank, 1)
        # Public parameters, graph and seeds do not depend on the data's values:
        # a stand-in of the right height lets prepare_job fix them all.
        stub = np.ones((X_i.shape[0], max(scenario.n_agents, scenario.rank)))
        job = prepare_job(scenario, X=stub)
        columns = None
    else:
        job = prepare_job(scenario)
        X_i = job.blocks[agent_id]
        columns = job.columns[agent_id]
    graph = job.graph
    if deploy.edges is not None:
        graph = Graph.from_edges(scenario.n_agents, deploy.edges)
        job.codec = codec_for(scenario, graph.max_degree)
    if deploy.private_seeds:
        weight_seed, h_seed = secrets.randbits(64), secrets.randbits(64)
    else:
        weight_seed, h_seed = job.weight_seeds[agent_id], job.h_seeds[agent_id]
    return NodePlan(agent_id, job, graph, X_i, columns, weight_seed, h_seed)


def node_role(plan: NodePlan, scheme: Scheme) -> PPDNMFAgent:
    """The agent's state machine; the node (not the role) begins each outer iteration,
    so that it can checkpoint at the boundary first."""
    return build_role(
        plan.job,
        plan.agent_id,
        scheme,
        X=plan.X,
        neighbors=plan.graph.neighbors(plan.agent_id),
        weight_seed=plan.weight_seed,
        h_seed=plan.h_seed,
        auto_advance=False,
    )


class PayloadFormat:
    """Cheap format check of each payload before it is accepted (servicer side).

    A malformed key or ciphertext is refused with ``INVALID_ARGUMENT`` at the
    RPC and never reaches the protocol, so the agent keeps serving.
    """

    def __init__(self, job: PPDNMFJob, own: Scheme) -> None:
        self._name = job.scenario.crypto.scheme
        self._codec = job.codec
        self._own = own.public()
        self._peers: dict[AgentId, Scheme] = {}

    def __call__(self, env: Envelope) -> None:
        try:
            if env.stage == STAGE_ABORT:
                if env.nbytes > MAX_ABORT_BYTES:
                    raise ValueError(f"abort reason of {env.nbytes} bytes is too long")
                bytes(env.payload).decode("utf-8")
            elif env.stage == STAGE_KEY:
                self._peers[env.sender] = load_public_scheme(
                    self._name, bytes(env.payload), codec=self._codec
                )
            elif env.stage == STAGE_OFFER:
                peer = self._peers.get(env.sender)
                if peer is None:
                    raise ValueError("offer before the sender's public key")
                peer.from_bytes(bytes(env.payload))
            elif env.stage == STAGE_REPLY:
                self._own.from_bytes(bytes(env.payload))
        except (CryptoError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a valid {env.stage} payload: {exc}") from exc


def checkpoint_path(out: Path, outer: int) -> Path:
    return out / "checkpoints" / f"outer-{outer:05d}.npz"


def latest_checkpoint(out: Path) -> int | None:
    """The highest outer iteration with a checkpoint in ``out`` (None if none)."""
    found = sorted((out / "checkpoints").glob("outer-*.npz"))
    return int(found[-1].stem.split("-")[1]) if found else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class Node:
    """Runs one agent to completion; ``stop`` (set by SIGTERM) ends it cleanly."""

    def __init__(self, deploy: DeployJob, agent_id: AgentId, *, resume_from: int | None = None,
                 stop: threading.Event | None = None) -> None:
        self.deploy = deploy
        self.agent_id = agent_id
        self.resume_from = resume_from
        self.stop = stop or threading.Event()
        self.out = deploy.agent_out(agent_id)
        self.transport: GrpcTransport | None = None
        self.role: PPDNMFAgent | None = None
        self._heard: dict[AgentId, tuple[int, float]] = {}
        self._metrics_path = self.out / "metrics.jsonl"

    # -- public --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the agent; returns its result record (also written to result.json)."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        plan = plan_node(self.deploy, self.agent_id)
        scheme = generate_key(plan.job)
        role = self.role = node_role(plan, scheme)
        if self.resume_from is not None:
            path = checkpoint_path(self.out, self.resume_from)
            if not path.is_file():
                raise NodeError(f"agent {self.agent_id}: no checkpoint {path} to resume from")
            role.restore_state(load_state_npz(path.read_bytes()))
            log.info("agent %s resuming at outer %d (round %d)", self.agent_id, role.outer,
                     role.round)
        if self.resume_from is None or not self._metrics_path.exists():
            self._metrics_path.write_text("", encoding="utf-8")
        else:
            self._truncate_metrics(role.outer)
        peers = {j: self.deploy.agent(j).address for j in role.neighbors}
        spec = self.deploy.agent(self.agent_id)
        transport = self.transport = GrpcTransport(
            self.agent_id,
            plan.job.config.job_id,
            spec.listen,
            peers,
            self.deploy.tls_files(self.agent_id),
            stages=STAGES,
            max_round=plan.job.config.total_rounds,
            retry=self.deploy.retry,
            check_payload=PayloadFormat(plan.job, scheme),
        )
        status = "failed"
        try:
            transport.start()
            self._loop(Agent(self.agent_id, role, transport), role, transport)
            status = "completed"
        except NodeStoppedError as exc:
            status = f"stopped: {exc}"
            self._abort(str(exc))
            raise
        except (NodeError, TransportError, AgentError, ProtocolError, ValueError) as exc:
            status = f"failed: {exc}"
            self._abort(str(exc))
            raise NodeError(str(exc)) from exc
        finally:
            result = self._result(plan, scheme, status, time.perf_counter() - started)
            (self.out / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True)
                                                  + "\n", encoding="utf-8")
            transport.close()
        arrays: dict[str, Any] = {"W": role.W, "H": role.H}
        if plan.columns is not None:
            arrays["columns"] = plan.columns
        np.savez(self.out / "factors.npz", **arrays)
        return result

    # -- the loop ----------------------------------------------------------------

    def _loop(self, agent: Agent, role: PPDNMFAgent, transport: GrpcTransport) -> None:
        agent.start()
        log.info("agent %s sent its public key to neighbours %s", self.agent_id,
                 list(role.neighbors))
        last_progress = time.monotonic()
        outer_started = time.perf_counter()
        reported = len(role.records)
        sent_before = (0, 0, 0)
        while not role.done:
            if self.stop.is_set():
                raise NodeStoppedError(
                    f"agent {self.agent_id} stopped by signal at round {role.round} "
                    f"(outer {role.outer})"
                )
            if role.at_boundary:
                self._checkpoint(role)
                agent.send(role.begin_outer())
                continue
            envs = transport.recv(self.agent_id, timeout=POLL_S)
            if not envs:
                self._check_silence(role, last_progress)
                continue
            last_progress = time.monotonic()
            for env in envs:
                self._heard[env.sender] = (env.round, last_progress)
                if env.stage == STAGE_ABORT:
                    reason = bytes(env.payload).decode("utf-8", "replace")
                    raise NodeError(
                        f"agent {self.agent_id}: neighbour agent {env.sender} aborted the job "
                        f"at round {env.round}: {reason}"
                    )
                agent.deliver(env)
                while len(role.records) > reported:
                    record = role.records[reported]
                    stats = transport.stats
                    now_sent = (stats.bytes_total, stats.messages_total,
                                transport.grpc_bytes_sent)
                    self._write_metrics(record, outer_started, now_sent, sent_before)
                    log.info("agent %s finished outer %d (round %d)", self.agent_id,
                             record.outer, role.round)
                    sent_before, outer_started = now_sent, time.perf_counter()
                    reported += 1
        self._checkpoint(role)

    def _checkpoint(self, role: PPDNMFAgent) -> None:
        every = self.deploy.checkpoint_every
        if not every or role.outer == 0 or (role.outer % every and not role.done):
            return
        path = checkpoint_path(self.out, role.outer)
        if not path.exists():
            _write_atomic(path, save_state_npz(role.checkpoint_state()))

    def _check_silence(self, role: PPDNMFAgent, last_progress: float) -> None:
        limit = self.deploy.peer_timeout_s if role.keys_ready else self.deploy.retry.startup_s
        silent = time.monotonic() - last_progress
        if silent < limit:
            return
        now = time.monotonic()
        heard = []
        for j in role.neighbors:
            if j in self._heard:
                r, t = self._heard[j]
                heard.append(f"agent {j} at round {r} {now - t:.1f} s ago")
            else:
                heard.append(f"agent {j} never")
        stalest = min(role.neighbors, key=lambda j: self._heard.get(j, (-2, 0.0)))
        health = check_health(self.deploy.agent(stalest).address, stalest,
                              self.deploy.tls_files(self.agent_id))
        raise NodeError(
            f"agent {self.agent_id}: no message from any neighbour for {silent:.1f} s "
            f"(limit {limit:g} s) at round {role.round} (outer {role.outer}); last heard: "
            f"{', '.join(heard)}; agent {stalest} health: {health}"
        )

    def _abort(self, reason: str) -> None:
        """Tell every neighbour (one short try each) so the failure spreads, not a hang."""
        if self.transport is None or self.role is None:
            return
        text = reason.encode("utf-8")[: MAX_ABORT_BYTES - 100]
        for j in self.role.neighbors:
            env = Envelope(self.transport.job_id, max(self.role.round, -1), STAGE_ABORT,
                           self.agent_id, j, text)
            self.transport.send_best_effort(env)

    # -- output ------------------------------------------------------------------

    def _write_metrics(self, record: Any, started: float, now: tuple[int, int, int],
                       before: tuple[int, int, int]) -> None:
        line = {
            "outer": record.outer,
            "local_sq_error": record.local_sq_error,
            "crypto_s": record.seconds.get("crypto", 0.0),
            "compute_s": record.seconds.get("compute", 0.0),
            "wall_s": time.perf_counter() - started,
            "bytes_sent": now[0] - before[0],
            "messages_sent": now[1] - before[1],
            "grpc_bytes_sent": now[2] - before[2],
        }
        with self._metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def _truncate_metrics(self, keep_outer: int) -> None:
        lines = [ln for ln in self._metrics_path.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and json.loads(ln)["outer"] < keep_outer]
        self._metrics_path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")

    def _result(self, plan: NodePlan, scheme: Scheme, status: str, wall: float) -> dict[str, Any]:
        role, transport = self.role, self.transport
        stats = transport.stats if transport is not None else None
        return {
            "agent_id": self.agent_id,
            "job_id": plan.job.config.job_id,
            "status": status,
            "round": role.round if role else None,
            "outer_iters_completed": role.outer if role else 0,
            "resumed_from": self.resume_from,
            "neighbors": list(role.neighbors) if role else [],
            "key_fingerprint": scheme.fingerprint,
            "tls": not self.deploy.insecure,
            "wall_s": wall,
            "bytes_sent": stats.bytes_total if stats else 0,
            "messages_sent": stats.messages_total if stats else 0,
            "grpc_bytes_sent": transport.grpc_bytes_sent if transport else 0,
            "traffic": stats.to_dict() if stats else {},
            "setup_bytes_sent": stats.bytes_by_round.get(-1, 0) if stats else 0,
        }
