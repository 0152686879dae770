"""One deployed ppdnmf agent: build its own role, run it over gRPC, write its results.

Each process derives what it needs from JOB.toml alone: the graph and the
public parameters from the scenario, its data block from the scenario's seed
(or its own ``data_path``), its key pair from the OS's randomness. It starts
its next outer iteration by itself as soon as it finishes one (no barrier),
checkpoints at outer boundaries, and writes ``factors.npz``, ``metrics.jsonl``
and ``result.json`` into its own folder (``gather_ppdnmf`` merges them). Any failure, its own or a
neighbour's, stops it with an error naming the peer and the round, and is
passed on to its neighbours as an ``abort`` envelope so no agent hangs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.crypto.masking import ClearMaskedSum, MaskedSum, PaillierMaskedSum
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.data.matrix_io import load_matrix
from cipherfact.deploy.gather import GatherRun, job_totals
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.node_base import BaseNode, save_npz
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
    consensus_spread,
    generate_key,
    peer_loader,
    prepare_job,
)
from cipherfact.protocols.references import relative_error
from cipherfact.simulations.checkpoint import public_config
from cipherfact.simulations.topology import Graph

__all__ = ["Node", "PayloadFormat", "gather_ppdnmf", "plan_node"]


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
    """One ppdnmf agent: begins each outer by itself and checkpoints at its boundaries."""

    stages = STAGES["pairwise"] | STAGES["secagg"]  # the role refuses the other exchange's
    supports_resume = True
    completed_key = "outer_iters_completed"
    drivers = None  # every agent begins its own next outer iteration (no barrier)
    plan: NodePlan | None = None
    scheme: Scheme | None = None

    @classmethod
    def checkpoint_config(cls, scenario: Any, parties: int) -> dict[str, Any]:
        """The scenario after overrides, the scenario's graph and the codec."""
        job = prepare_job(scenario)
        return public_config(job.scenario, job.graph.edges, job.codec)

    @classmethod
    def gather(cls, run: GatherRun) -> dict[str, Any]:
        return gather_ppdnmf(run)

    # -- building --------------------------------------------------------------------

    def prepare(self) -> None:
        plan = self.plan = plan_node(self.deploy, self.agent_id)
        self.job_id = plan.job.config.job_id  # known from here: failures reach the peers
        self.config = node_config(plan)
        # a bad resume is refused before the key is generated
        resumed = self.open_checkpoints(
            plan.job.config.outer_iters, self.config, encode=save_state_npz, decode=load_state_npz
        )
        self.scheme = generate_key(plan.job)
        self.role = node_role(plan, self.scheme)
        if resumed is not None:
            self.role.restore_state(resumed[0])
        X = plan.X  # with its shape, the gather computes the agents' relative error
        self._x_facts = {"local_sq_norm": float(np.vdot(X, X)), "local_shape": list(X.shape)}

    def peers(self) -> list[AgentId]:
        if self.role is not None:
            return list(self.role.neighbors)
        return list(self.plan.graph.neighbors(self.agent_id)) if self.plan is not None else []

    def max_round(self) -> int:
        assert self.plan is not None
        return self.plan.job.config.total_rounds

    def current_round(self) -> int:
        return int(self.role.round) if self.role is not None else -1

    def boundaries_done(self) -> int:
        return int(self.role.outer)

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

    def on_boundary(self, index: int) -> dict[str, Any]:
        # the role's records start at this part's first outer iteration
        record = self.role.records[index - (self.resume_from or 0)]
        # the squared error and norm of X_i, not X_i: the gather never sees the data
        return {
            "local_sq_error": record.local_sq_error,
            **self._x_facts,
            **self.timing(record.seconds),
        }

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        return {"key_fingerprint": self.scheme.fingerprint if self.scheme is not None else None}

    def write_outputs(self) -> None:
        assert self.plan is not None
        arrays: dict[str, Any] = {"W": self.role.W, "H": self.role.H}
        if self.plan.columns is not None:
            arrays["columns"] = self.plan.columns
        save_npz(self.out / "factors.npz", arrays)


def gather_ppdnmf(run: GatherRun) -> dict[str, Any]:
    """Every agent's W_i, H_i and metrics: ``metrics.jsonl`` (the relative error per
    outer iteration from the agents' local errors) and ``factors.npz``."""
    deploy, scenario = run.deploy, run.deploy.scenario
    job = prepare_job(scenario)
    n = job.n_agents
    summary = run.summary(
        ("status", "round", "bytes_sent", "grpc_bytes_sent", "wall_s"),
        scheme=scenario.crypto.scheme,
        n_agents=n,
        data_shape=list(job.X.shape),
        graph={**job.graph.to_dict(), "average_degree": job.graph.average_degree},
    )
    per_agent = [{m["outer"]: m for m in run.metrics(i) if "outer" in m} for i in range(n)]
    # Agents with their own data_path files: the gatherer never sees the data, so
    # the error comes from what each agent reports about its own block (its squared
    # error and squared norm), never from the scenario's generated matrix.
    own_data = any(deploy.agent(i).data_path is not None for i in range(n))
    norm2 = float(np.linalg.norm(job.X) ** 2)
    common = sorted(set.intersection(*(set(m) for m in per_agent))) if per_agent else []
    if own_data:
        summary["data_shape"] = _own_shape(per_agent, common)
    rel_by_outer: dict[int, float] = {}
    for t in common:
        rows = [per_agent[i][t] for i in range(n)]
        sq = sum(r["local_sq_error"] for r in rows)
        total = sum(r["local_sq_norm"] for r in rows) if own_data else norm2
        rel_by_outer[t] = float(np.sqrt(sq / total)) if total else 0.0
        run.writer.append_metrics(
            {
                "outer": t,
                "rel_error": rel_by_outer[t],
                "bytes": sum(r["bytes_sent"] for r in rows),
                "messages": sum(r["messages_sent"] for r in rows),
                "grpc_bytes": sum(r["grpc_bytes_sent"] for r in rows),
                "crypto_s": sum(r["crypto_s"] for r in rows),
                "compute_s": sum(r["compute_s"] for r in rows),
                "wall_s": max(r["wall_s"] for r in rows),
            }
        )
    if run.ok:
        Ws, Hs = [], []
        for i in range(n):
            with np.load(deploy.agent_out(i) / "factors.npz", allow_pickle=False) as f:
                Ws.append(f["W"])
                Hs.append(f["H"])
        run.writer.write_factors(Ws, Hs, None if own_data else job.columns)
        summary.update(
            rel_error=rel_by_outer[common[-1]] if own_data else relative_error(job.blocks, Ws, Hs),
            consensus_spread=consensus_spread(Ws),
            outer_iters_completed=scenario.outer_iters,
        )
    return {**summary, **job_totals(run.results)}


def _own_shape(per_agent: list[dict[int, dict[str, Any]]], common: list[int]) -> list[int] | None:
    """The whole matrix's shape from the agents' reported block shapes (rows shared,
    columns added); None before any common outer iteration."""
    if not common:
        return None
    shapes = [per_agent[i][common[0]]["local_shape"] for i in range(len(per_agent))]
    return [int(shapes[0][0]), int(sum(s[1] for s in shapes))]
