"""ppdnmf: privacy-preserving decentralized NMF over a graph (one agent's role).

Agent i holds X_i (m x n_i), its private H_i (r x n_i) and a local copy W_i of
the shared left factor. Block coordinate descent alternates a local H_i update
with S rounds of decentralized linearized ADMM (DLM, Ling et al. 2015) on the
W_i, projected to W_i >= 0::

    d_i      = sum_j rho_ij (W_j - W_i)                  (secure exchange)
    alpha_i += -d_i                                       (dual, skipped on the first round)
    W_i      = max(0, W_i - tau_i (grad f_i(W_i) + alpha_i - d_i))

with rho_ij = c * a_ij * a_ji / 4^b for fresh private integer weights a_ij in
[2^(b-1), 2^b) drawn by each agent every round (Ruan, Gao & Wang 2019), so
nobody knows any rho_ij. The step tau_i = 1 / (L_i + 2 deg_i c) uses only what
i knows: L_i = ||H_i H_i^T||_2 and the public bound c on rho_ij.

The exchange for one round k (per agent i, per neighbour j):

1. "offer": i encrypts -W_i under its own key (fresh randomness every
   round) and sends the ciphertext to each neighbour;
2. "reply": j adds W_j in plaintext, multiplies by a_ji, re-randomizes with
   fresh randomness under i's key and sends it back;
3. i multiplies each reply by a_ij, sums them homomorphically and decrypts
   once: it learns d_i (scaled by 4^b / c) and nothing about any single W_j.

Neighbours are never more than one round apart (i finishes round k only after
every neighbour has answered round k), so an agent keeps W for its current and
previous round and buffers offers for the next one. Messages for any other
round, stage or sender raise ``ProtocolError``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.solvers.base import LocalSolver

STAGE_KEY = "key"
STAGE_OFFER = "offer"
STAGE_REPLY = "reply"
SETUP_ROUND = -1

PublicSchemeLoader = Callable[[bytes], Scheme]


@dataclass(frozen=True)
class PPDNMFConfig:
    """Public parameters of a ppdnmf job: every agent holds the same copy."""

    job_id: str
    rank: int
    outer_iters: int = 100
    inner_iters: int = 30
    penalty: float = 10.0
    weight_bits: int = 6
    h_sweeps: int = 1
    init_seed: int = 0
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rank", "outer_iters", "inner_iters", "h_sweeps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 1 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits must be in [1, 16], got {self.weight_bits}")
        if not self.penalty > 0:
            raise ValueError(f"penalty must be > 0, got {self.penalty}")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")

    @property
    def total_rounds(self) -> int:
        return self.outer_iters * self.inner_iters

    def initial_w(self, n_rows: int) -> np.ndarray:
        """The common starting W: public, derived from the job's init seed."""
        rng = np.random.default_rng([self.init_seed, 0x57])
        return self.init_scale * rng.uniform(0.0, 1.0, size=(n_rows, self.rank))

    @property
    def weight_max(self) -> int:
        """Public bound on every private weight (passed as ``k_max``)."""
        return 2**self.weight_bits - 1

    def weight_scale(self) -> float:
        """rho_ij = weight_scale * a_ij * a_ji."""
        return self.penalty / float(4**self.weight_bits)


def round_weights(
    weight_seed: int, round_index: int, neighbors: tuple[AgentId, ...], bits: int
) -> dict[AgentId, int]:
    """Agent i's private weights a_ij for one round.

    Drawn from a generator keyed by (private seed, round), so the values do not
    depend on message arrival order: the same run on any transport draws the
    same weights. In a deployment the seed is each agent's secret.
    """
    rng = np.random.default_rng([weight_seed, round_index])
    draws = rng.integers(2 ** (bits - 1), 2**bits, size=len(neighbors))
    return {j: int(a) for j, a in zip(neighbors, draws, strict=True)}


def initial_h(config: PPDNMFConfig, h_seed: int, agent_id: AgentId, n_cols: int) -> np.ndarray:
    """Agent i's private starting H_i, from its private seed."""
    rng = np.random.default_rng([h_seed, agent_id])
    return config.init_scale * rng.uniform(0.0, 1.0, size=(config.rank, n_cols))


@dataclass
class OuterRecord:
    """What one agent measured during one outer iteration."""

    outer: int
    local_sq_error: float
    seconds: dict[str, float] = field(default_factory=dict)


class PPDNMFAgent(StateMachine):
    """One agent's role in ppdnmf.

    ``scheme`` holds this agent's own key pair; ``load_peer_scheme`` turns a
    neighbour's public-key bytes into a public-only scheme. With
    ``auto_advance`` the agent starts each outer iteration by itself (a
    deployment); without it a driver calls ``begin_outer`` once every agent
    has finished the previous one (simulations use that barrier for metrics
    and checkpoints; the numbers are the same either way).
    """

    def __init__(
        self,
        agent_id: AgentId,
        X: np.ndarray,
        neighbors: tuple[AgentId, ...],
        config: PPDNMFConfig,
        scheme: Scheme,
        load_peer_scheme: PublicSchemeLoader,
        solver: LocalSolver,
        *,
        weight_seed: int,
        h_seed: int,
        auto_advance: bool = False,
        profiler: Profiler | None = None,
    ) -> None:
        if not neighbors:
            raise ValueError(f"agent {agent_id} has no neighbours; the graph must be connected")
        if agent_id in neighbors:
            raise ValueError(f"agent {agent_id} lists itself as a neighbour")
        if not scheme.has_secret_key:
            raise ValueError(f"agent {agent_id} needs its own secret key, got {scheme!r}")
        self.agent_id = agent_id
        self.neighbors = tuple(sorted(neighbors))
        self.config = config
        self.scheme = scheme
        self.solver = solver
        self.profiler = profiler or Profiler()
        self.auto_advance = auto_advance
        self._X = X
        self._load_peer_scheme = load_peer_scheme
        self._weight_seed = weight_seed
        self._peers: dict[AgentId, Scheme] = {}

        self.W = config.initial_w(X.shape[0])
        self.H = initial_h(config, h_seed, agent_id, X.shape[1])
        self._W_prev: np.ndarray | None = None
        self._alpha = np.zeros_like(self.W)
        self._step = 1.0
        self.round = 0  # W holds W^round
        self.outer = 0  # outer iteration the current round belongs to
        self._offered = False  # whether our offers for `round` are out
        self._started_outer = -1
        self._replies: dict[AgentId, Ciphertext] = {}
        self._answered: set[tuple[int, AgentId]] = set()
        self._buffered: list[Envelope] = []
        self._weight_cache: dict[int, dict[AgentId, int]] = {}
        self.records: list[OuterRecord] = []

    # -- public state -------------------------------------------------------

    @property
    def keys_ready(self) -> bool:
        return len(self._peers) == len(self.neighbors)

    @property
    def at_boundary(self) -> bool:
        """Finished outer iteration ``outer - 1`` and not yet begun ``outer``."""
        return self.keys_ready and self._started_outer < self.outer and not self.done

    @property
    def done(self) -> bool:
        return self.round >= self.config.total_rounds

    def local_sq_error(self) -> float:
        return 2.0 * self.solver.loss(self._X, self.W, self.H)

    # -- state machine -----------------------------------------------------

    def start(self) -> list[Envelope]:
        payload = self.scheme.public_bytes()
        return [self._envelope(SETUP_ROUND, STAGE_KEY, j, payload) for j in self.neighbors]

    def begin_outer(self) -> list[Envelope]:
        """Update H locally, then send the offers of the outer iteration's first round."""
        if not self.keys_ready:
            raise ProtocolError(
                f"agent {self.agent_id} cannot begin: public keys missing from "
                f"{sorted(set(self.neighbors) - set(self._peers))}"
            )
        if not self.at_boundary:
            raise ProtocolError(
                f"agent {self.agent_id} is not at an outer boundary (round {self.round}, "
                f"outer {self.outer})"
            )
        self._started_outer = self.outer
        with self.profiler.section("compute"):
            self.H = self.solver.update_h(self._X, self.W, self.H, n_sweeps=self.config.h_sweeps)
            lipschitz = self.solver.w_lipschitz(self.H)
            bound = self.config.penalty * len(self.neighbors)
            self._step = 1.0 / (lipschitz + 2.0 * bound)
        out = self._send_offers()
        out += self._drain_buffer()
        return out

    def step(self, env: Envelope) -> list[Envelope]:
        self._check_routing(env)
        if env.stage == STAGE_KEY:
            return self._on_key(env)
        if env.stage == STAGE_OFFER:
            return self._on_offer(env)
        if env.stage == STAGE_REPLY:
            return self._on_reply(env)
        raise ProtocolError(
            f"agent {self.agent_id}: unknown stage {env.stage!r} from agent {env.sender} "
            f"(expected one of {STAGE_KEY!r}, {STAGE_OFFER!r}, {STAGE_REPLY!r})"
        )

    # -- handlers ------------------------------------------------------------

    def _on_key(self, env: Envelope) -> list[Envelope]:
        if env.round != SETUP_ROUND:
            raise ProtocolError(
                f"agent {self.agent_id}: key from agent {env.sender} for round {env.round}, "
                f"expected round {SETUP_ROUND}"
            )
        if env.sender in self._peers:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate public key from agent {env.sender}"
            )
        try:
            peer = self._load_peer_scheme(env.payload)
        except CryptoError as exc:
            raise ProtocolError(
                f"agent {self.agent_id}: bad public key from agent {env.sender}: {exc}"
            ) from exc
        self._peers[env.sender] = peer
        if self.keys_ready and self.auto_advance:
            return self.begin_outer()
        return []

    def _on_offer(self, env: Envelope) -> list[Envelope]:
        r = env.round
        low, high = max(self.round - 1, 0), min(self.round + 1, self.config.total_rounds - 1)
        if not low <= r <= high or (r == self.round - 1 and self._W_prev is None):
            raise ProtocolError(
                f"agent {self.agent_id}: offer for round {r} from agent {env.sender}; "
                f"expected a round in {low}..{high}"
            )
        if (r, env.sender) in self._answered:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate offer for round {r} from agent {env.sender}"
            )
        if env.sender not in self._peers:
            raise ProtocolError(
                f"agent {self.agent_id}: offer from agent {env.sender} before its public key"
            )
        if r == self.round + 1:
            self._buffered.append(env)
            return []
        W_then = self.W if r == self.round else self._W_prev
        if W_then is None:  # unreachable: round k-1 offers need W_prev (checked above)
            raise ProtocolError(f"agent {self.agent_id}: no W kept for round {r}")
        return [self._reply(env, W_then)]

    def _reply(self, env: Envelope, W_then: np.ndarray) -> Envelope:
        """Step 2: Enc_i(-W_i) -> rerand(a_ji * (Enc_i(-W_i) + W_j)) under i's key."""
        peer = self._peers[env.sender]
        weight = self._weights(env.round)[env.sender]
        with self.profiler.section("crypto"):
            try:
                offer = peer.from_bytes(env.payload)
            except CryptoError as exc:
                raise ProtocolError(
                    f"agent {self.agent_id}: bad offer for round {env.round} from agent "
                    f"{env.sender}: {exc}"
                ) from exc
            if offer.size != W_then.size:
                raise ProtocolError(
                    f"agent {self.agent_id}: offer for round {env.round} from agent {env.sender} "
                    f"has {offer.size} values, expected {W_then.size}"
                )
            diff = peer.add_plain(offer, W_then.ravel())
            # k_max: the ciphertext's public metadata must not reveal the private weight.
            reply = peer.rerandomize(peer.mul_scalar(diff, weight, k_max=self.config.weight_max))
            payload = peer.to_bytes(reply)
        self._answered.add((env.round, env.sender))
        return self._envelope(env.round, STAGE_REPLY, env.sender, payload)

    def _on_reply(self, env: Envelope) -> list[Envelope]:
        if env.round != self.round or not self._offered:
            raise ProtocolError(
                f"agent {self.agent_id}: reply for round {env.round} from agent {env.sender}; "
                f"expected round {self.round}" + ("" if self._offered else " after our offer")
            )
        if env.sender in self._replies:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate reply for round {env.round} from agent "
                f"{env.sender}"
            )
        with self.profiler.section("crypto"):
            try:
                reply = self.scheme.from_bytes(env.payload)
            except CryptoError as exc:
                raise ProtocolError(
                    f"agent {self.agent_id}: bad reply for round {env.round} from agent "
                    f"{env.sender}: {exc}"
                ) from exc
        if reply.size != self.W.size:
            raise ProtocolError(
                f"agent {self.agent_id}: reply for round {env.round} from agent {env.sender} has "
                f"{reply.size} values, expected {self.W.size}"
            )
        self._replies[env.sender] = reply
        if len(self._replies) < len(self.neighbors):
            return []
        return self._finish_round()

    # -- the round's local work -------------------------------------------------

    def _finish_round(self) -> list[Envelope]:
        """Step 3 and the ADMM update; then move to the next round."""
        weights = self._weights(self.round)
        with self.profiler.section("crypto"):
            weighted = [
                self.scheme.mul_scalar(self._replies[j], weights[j], k_max=self.config.weight_max)
                for j in self.neighbors
            ]
            total = self.scheme.sum(weighted)
            d = self.scheme.decrypt(total).reshape(self.W.shape) * self.config.weight_scale()
        with self.profiler.section("compute"):
            if self.round > 0:
                self._alpha -= d
            W_next = self.solver.linearized_w_step(
                self._X, self.W, self.H, self._alpha - d, self._step
            )
        self._W_prev, self.W = self.W, W_next
        self._replies.clear()
        self._offered = False
        self._answered = {(r, s) for (r, s) in self._answered if r >= self.round}
        self.round += 1
        if self.round % self.config.inner_iters == 0:
            self.records.append(
                OuterRecord(self.outer, self.local_sq_error(), self.profiler.take())
            )
            self.outer += 1
            if self.auto_advance and not self.done:
                return self.begin_outer()
            # Answer offers for the new round even before a driver begins it.
            return self._drain_buffer()
        return self._send_offers() + self._drain_buffer()

    def _send_offers(self) -> list[Envelope]:
        """Step 1: one fresh encryption of -W_i per round, the same bytes to every neighbour.

        A fresh encryption is freshly randomized, and the neighbours learn from
        identical bytes only what the protocol already tells them (that i sent
        them the same offer); re-randomizing per neighbour would triple the cost
        of this step for no gain.
        """
        with self.profiler.section("crypto"):
            payload = self.scheme.to_bytes(self.scheme.encrypt(-self.W.ravel()))
        self._offered = True
        return [self._envelope(self.round, STAGE_OFFER, j, payload) for j in self.neighbors]

    def _drain_buffer(self) -> list[Envelope]:
        pending, self._buffered = self._buffered, []
        out: list[Envelope] = []
        for env in pending:
            out += self._on_offer(env)
        return out

    # -- helpers ---------------------------------------------------------------

    def _weights(self, round_index: int) -> dict[AgentId, int]:
        """This round's private weights (drawn once per round, used for every neighbour)."""
        cached = self._weight_cache.get(round_index)
        if cached is None:
            cached = round_weights(
                self._weight_seed, round_index, self.neighbors, self.config.weight_bits
            )
            # neighbours are at most one round apart: keep rounds k-1..k+1 only
            self._weight_cache = {
                r: w for r, w in self._weight_cache.items() if abs(r - round_index) <= 1
            }
            self._weight_cache[round_index] = cached
        return cached

    def _check_routing(self, env: Envelope) -> None:
        if env.job_id != self.config.job_id:
            raise ProtocolError(
                f"agent {self.agent_id}: envelope for job {env.job_id!r}, expected "
                f"{self.config.job_id!r}"
            )
        if env.receiver != self.agent_id:
            raise ProtocolError(
                f"agent {self.agent_id}: envelope addressed to agent {env.receiver}"
            )
        if env.sender not in self.neighbors:
            raise ProtocolError(
                f"agent {self.agent_id}: message from agent {env.sender}, which is not a "
                f"neighbour (neighbours {list(self.neighbors)})"
            )

    def _envelope(
        self, round_index: int, stage: str, receiver: AgentId, payload: bytes
    ) -> Envelope:
        return Envelope(self.config.job_id, round_index, stage, self.agent_id, receiver, payload)

    # -- checkpointing -----------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """Arrays and counters to resume from an outer boundary (no keys, no data)."""
        if not self.at_boundary and not self.done:
            raise ProtocolError(
                f"agent {self.agent_id}: checkpoints are taken at outer boundaries only"
            )
        return {
            "W": self.W.copy(),
            "H": self.H.copy(),
            "alpha": self._alpha.copy(),
            "W_prev": None if self._W_prev is None else self._W_prev.copy(),
            "round": self.round,
            "outer": self.outer,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Resume at an outer boundary saved by ``checkpoint_state``."""
        for key in ("W", "H", "alpha"):
            expected = getattr(self, key if key != "alpha" else "_alpha").shape
            if np.shape(state[key]) != expected:
                raise ValueError(
                    f"checkpoint {key} for agent {self.agent_id} has shape "
                    f"{np.shape(state[key])}, expected {expected}"
                )
        self.W = np.array(state["W"], dtype=np.float64)
        self.H = np.array(state["H"], dtype=np.float64)
        self._alpha = np.array(state["alpha"], dtype=np.float64)
        prev = state.get("W_prev")
        self._W_prev = None if prev is None else np.array(prev, dtype=np.float64)
        self.round = int(state["round"])
        self.outer = int(state["outer"])
        self._started_outer = self.outer - 1


def save_state_npz(state: Mapping[str, Any]) -> bytes:
    """Checkpoint bytes as ``.npz`` (numbers only: no pickle)."""
    buf = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in state.items() if v is not None}
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_state_npz(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        out: dict[str, Any] = {k: f[k] for k in f.files}
    out.setdefault("W_prev", None)
    return out
