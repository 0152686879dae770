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

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.agents.agent import Agent
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.crypto.masking import ClearMaskedSum, MaskedSum, PaillierMaskedSum
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.data.matrix_io import load_matrix
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.node_base import (
    STAGE_ABORT,
    BaseNode,
    NodeError,
    NodeStoppedError,
)
from cipherfact.deploy.party_checkpoint import (
    check_resume_config,
    checkpoint_path,
    latest_checkpoint,
    read_checkpoint_info,
    truncate_metrics,
)
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.protocols.ppdnmf import (
    STAGE_KEY,
    STAGE_OFFER,
    STAGE_PEERS,
    STAGE_REPLY,
    STAGE_SHARE,
    STAGES,
    PPDNMFAgent,
    load_state_npz,
    save_state_npz,
    secagg,
)
from cipherfact.protocols.ppdnmf.job import (
    PPDNMFJob,
    build_role,
    check_graph,
    check_matrix,
    codec_for,
    generate_key,
    peer_loader,
    prepare_job,
)
from cipherfact.simulations.checkpoint import public_config
from cipherfact.simulations.topology import Graph

__all__ = [
    "STAGE_ABORT",
    "Node",
    "NodeError",
    "NodeStoppedError",
    "check_resume_config",
    "checkpoint_path",
    "latest_checkpoint",
    "plan_node",
    "read_checkpoint_info",
]

log = logging.getLogger("cipherfact.deploy")


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
        check_graph(scenario, graph)
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

    A malformed key, peer list or ciphertext is refused with
    ``INVALID_ARGUMENT`` at the RPC and never reaches the protocol, so the
    agent keeps serving. Peer keys go through the job's ``peer_loader``, so
    the key-size floor applies here as in the role.
    """

    def __init__(self, job: PPDNMFJob, own: Scheme) -> None:
        self._secagg = job.config.exchange == "secagg"
        self._load_peer = peer_loader(job)
        self._own = own.public()
        self._peers: dict[AgentId, Scheme] = {}
        self._size = job.config.rank * job.X.shape[0]
        if not self._secagg:
            self._shares: MaskedSum | None = None
        elif isinstance(self._own, PaillierScheme):
            self._shares = PaillierMaskedSum(self._own)
        else:
            self._shares = ClearMaskedSum(job.codec)

    def __call__(self, env: Envelope) -> None:
        payload = bytes(env.payload)
        try:
            if env.stage == STAGE_KEY:
                if self._secagg:
                    _, key = secagg.decode_key_message(payload)
                    if key is not None:
                        self._peers[env.sender] = self._load_peer(key)
                else:
                    self._peers[env.sender] = self._load_peer(payload)
            elif env.stage == STAGE_OFFER:
                peer = self._peers.get(env.sender)
                if peer is None:
                    raise ValueError("offer before the sender's public key")
                peer.from_bytes(payload)
            elif env.stage == STAGE_REPLY:
                self._own.from_bytes(payload)
            elif env.stage == STAGE_PEERS:
                secagg.decode_peers_message(payload)
            elif env.stage == STAGE_SHARE and self._shares is not None:
                self._shares.check(payload, self._size)
        except CryptoError as exc:
            raise ValueError(f"not a valid {env.stage} payload: {exc}") from exc


def node_config(plan: NodePlan) -> dict[str, Any]:
    """The public configuration an agent's checkpoints record: the scenario after
    overrides, the graph and the codec (never the private seeds)."""
    return public_config(plan.job.scenario, plan.graph.edges, plan.job.codec)


class Node(BaseNode):
    """One ppdnmf agent: checkpoints at outer boundaries and begins each outer by itself."""

    stages = STAGES["pairwise"] | STAGES["secagg"]  # the role refuses the other exchange's
    supports_resume = True
    gatherer = "cipherfact.deploy.ppdnmf_gather:gather_ppdnmf"

    def __init__(
        self,
        deploy: DeployJob,
        agent_id: AgentId,
        *,
        resume_from: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(deploy, agent_id, resume_from=resume_from, stop=stop)
        self.plan: NodePlan | None = None
        self.scheme: Scheme | None = None
        self.config: dict[str, Any] = {}
        self._x_sq_norm: float | None = None
        self._reported = 0
        self._outer_started = 0.0

    @classmethod
    def checkpoint_config(cls, scenario: Any, parties: int) -> dict[str, Any]:
        """The scenario after overrides, the scenario's graph and the codec."""
        job = prepare_job(scenario)
        return public_config(job.scenario, job.graph.edges, job.codec)

    # -- building --------------------------------------------------------------------

    def prepare(self) -> None:
        plan = self.plan = plan_node(self.deploy, self.agent_id)
        self.job_id = plan.job.config.job_id  # known from here: failures reach the peers
        self.config = node_config(plan)
        # a bad resume is refused before the key is generated
        resumed = self.open_checkpoints(
            self.config, plan.job.config.outer_iters, encode=save_state_npz, decode=load_state_npz
        )
        state = resumed[0] if resumed is not None else None
        self.scheme = generate_key(plan.job)
        role = self.role = node_role(plan, self.scheme)
        if state is not None:
            role.restore_state(state)
            log.info(
                "agent %s resuming at outer %d (round %d)", self.agent_id, role.outer, role.round
            )
        if self.resume_from is None or not self.metrics_path.exists():
            self.metrics_path.write_text("", encoding="utf-8")
        else:
            truncate_metrics(self.metrics_path, "outer", role.outer)
        self._reported = len(role.records)
        self._outer_started = time.perf_counter()

    def peers(self) -> list[AgentId]:
        if self.role is not None:
            return list(self.role.neighbors)
        return list(self.plan.graph.neighbors(self.agent_id)) if self.plan is not None else []

    def max_round(self) -> int:
        assert self.plan is not None
        return self.plan.job.config.total_rounds

    def current_round(self) -> int:
        return int(self.role.round) if self.role is not None else -1

    def position(self) -> str:
        if self.role is None:
            return "start-up (round -1)"
        if not self.role.keys_ready:
            return "the key exchange (round -1)"
        return f"round {self.role.round} (outer {self.role.outer})"

    def payload_check(self) -> PayloadCheck:
        assert self.plan is not None and self.scheme is not None
        return PayloadFormat(self.plan.job, self.scheme)

    def silence_limit(self) -> float:
        return self.deploy.peer_timeout_s if self.role.keys_ready else self.deploy.retry.startup_s

    # -- the loop's hooks --------------------------------------------------------------

    def should_begin(self) -> bool:
        return bool(self.role.at_boundary)

    def begin(self, agent: Agent) -> None:
        self._checkpoint()
        super().begin(agent)

    def _sq_norm(self) -> float:
        """||X_i||_F^2 of this agent's block (computed once)."""
        assert self.plan is not None  # metrics are written only after setup
        if self._x_sq_norm is None:
            X = self.plan.X
            self._x_sq_norm = float(np.vdot(X, X))
        return self._x_sq_norm

    def _shape(self) -> tuple[int, ...]:
        assert self.plan is not None
        return tuple(self.plan.X.shape)

    def after_deliver(self) -> None:
        role = self.role
        while len(role.records) > self._reported:
            record = role.records[self._reported]
            payload, messages, grpc_bytes = self.traffic_since_last()
            self.append_metrics(
                {
                    "outer": record.outer,
                    "local_sq_error": record.local_sq_error,
                    # with the squared norm and shape of X_i, the gather computes the
                    # relative error of agents' own data without seeing the data
                    "local_sq_norm": self._sq_norm(),
                    "local_shape": list(self._shape()),
                    "crypto_s": record.seconds.get("crypto", 0.0),
                    "compute_s": record.seconds.get("compute", 0.0),
                    "wall_s": time.perf_counter() - self._outer_started,
                    "bytes_sent": payload,
                    "messages_sent": messages,
                    "grpc_bytes_sent": grpc_bytes,
                }
            )
            log.info(
                "agent %s finished outer %d (round %d)", self.agent_id, record.outer, role.round
            )
            self._outer_started = time.perf_counter()
            self._reported += 1

    def finish(self) -> None:
        self._checkpoint()

    def _checkpoint(self) -> None:
        role, ck = self.role, self.checkpoints
        if ck is None or not ck.due(int(role.outer)):
            return
        # what the outer iterations before this boundary (and one key exchange) cost
        counters = self.job_counters(before_round=int(role.round))
        with self.critical():
            ck.save(int(role.outer), role.checkpoint_state(), {}, counters)

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        role = self.role
        return {
            "outer_iters_completed": role.outer if role is not None else 0,
            "resumed_from": self.resume_from,
            "key_fingerprint": self.scheme.fingerprint if self.scheme is not None else None,
        }

    def write_outputs(self) -> None:
        assert self.plan is not None
        arrays: dict[str, Any] = {"W": self.role.W, "H": self.role.H}
        if self.plan.columns is not None:
            arrays["columns"] = self.plan.columns
        np.savez(self.out / "factors.npz", **arrays)
