"""What every ppdnmf agent does whatever its exchange: H updates, the ADMM step,
outer boundaries, routing checks and checkpoints.

A subclass supplies the exchange: how the agent obtains, each round,
d_i = sum_j rho_ij (W_j - W_i) from its neighbours (``PairwiseAgent``,
``SecAggAgent``), and calls ``_advance(d)`` with it.
"""

from __future__ import annotations

import io
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.batch import DecryptBatch
from cipherfact.crypto.packed import PackedScheme
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.crypto.prefetch import FactorPrefetcher
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.protocols.ppdnmf.config import OuterRecord, PPDNMFConfig, initial_h
from cipherfact.solvers.base import LocalSolver

PublicSchemeLoader = Callable[[bytes], Scheme]
#: decryptions a host collects from its agents: each resumes as (agent, its envelopes)
HostDecryptBatch = DecryptBatch[tuple[AgentId, list[Envelope]]]


class PPDNMFAgent(StateMachine):
    """One agent's role in ppdnmf (abstract: the exchange is a subclass's).

    ``scheme`` holds this agent's own key pair; ``load_peer_scheme`` turns a
    neighbour's public-key bytes into a public-only scheme. With
    ``auto_advance`` the agent starts each outer iteration by itself (a
    deployment); without it a driver calls ``begin_outer`` once every agent
    has finished the previous one (simulations use that barrier for metrics
    and checkpoints; the numbers are the same either way).
    """

    #: neighbours an agent needs at least (secagg needs 2)
    min_neighbors = 1

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
        if len(set(neighbors)) < self.min_neighbors:
            raise ValueError(
                f"agent {agent_id} has {len(set(neighbors))} neighbour(s); the "
                f"{config.exchange} exchange needs at least {self.min_neighbors}"
            )
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
        self._prefetcher: FactorPrefetcher | None = None
        self._batch: HostDecryptBatch | None = None
        self._private_seed = weight_seed

        self.W = config.initial_w(X.shape[0])
        self.H = initial_h(config, h_seed, agent_id, X.shape[1])
        self._W_prev: np.ndarray | None = None
        self._alpha = np.zeros_like(self.W)
        self._step = 1.0
        self.round = 0  # W holds W^round
        self.outer = 0  # outer iteration the current round belongs to
        self._started_outer = -1
        self.records: list[OuterRecord] = []

    # -- public state -------------------------------------------------------

    @property
    @abstractmethod
    def keys_ready(self) -> bool:
        """Whether the exchange's setup is complete."""

    @property
    def at_boundary(self) -> bool:
        """Finished outer iteration ``outer - 1`` and not yet begun ``outer``."""
        return self.keys_ready and self._started_outer < self.outer and not self.done

    @property
    def done(self) -> bool:
        return self.round >= self.config.total_rounds

    def local_sq_error(self) -> float:
        return 2.0 * self.solver.loss(self._X, self.W, self.H)

    # -- the outer loop ------------------------------------------------------

    def begin_outer(self) -> list[Envelope]:
        """Update H locally, then send the outer iteration's first round of messages."""
        if not self.keys_ready:
            raise ProtocolError(f"agent {self.agent_id} cannot begin: {self._setup_missing()}")
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
        return self._open_round()

    @abstractmethod
    def _setup_missing(self) -> str:
        """What the setup still waits for (for the error message)."""

    @abstractmethod
    def _open_round(self) -> list[Envelope]:
        """Send this round's messages and handle any buffered for it."""

    def _advance(self, d: np.ndarray) -> list[Envelope]:
        """The ADMM update with this round's d_i; then the next round or the boundary."""
        with self.profiler.section("compute"):
            if self.round > 0:
                self._alpha -= d
            W_next = self.solver.linearized_w_step(
                self._X, self.W, self.H, self._alpha - d, self._step
            )
        self._W_prev, self.W = self.W, W_next
        self.round += 1
        if self.round % self.config.inner_iters == 0:
            self.records.append(
                OuterRecord(self.outer, self.local_sq_error(), self.profiler.take())
            )
            self.outer += 1
            if self.auto_advance and not self.done:
                return self.begin_outer()
            return self._at_boundary()
        return self._open_round()

    def _at_boundary(self) -> list[Envelope]:
        """Work to do on reaching an outer boundary before a driver begins the next."""
        return []

    # -- crypto services ---------------------------------------------------------

    def use_prefetcher(self, prefetcher: FactorPrefetcher | None) -> None:
        """Draw Paillier randomness (own key, and every neighbour key loaded from now
        on) from ``prefetcher``: computed ahead on another core, same results.

        The own key's CRT randomness goes too (its primes to a child process of
        this host, as ``crypto.processes`` does): in the pairwise exchange the
        offers' randomness took ~15 ms per round of the host's thread (cProfile
        of 4 outer iterations of ``ppdnmf-synthetic``, 10 agents).
        """
        self._prefetcher = prefetcher
        self._attach(self.scheme)

    def use_decrypt_batch(self, batch: HostDecryptBatch | None) -> None:
        """Queue this agent's round decryption in ``batch`` (shared by the agents of a
        host, which flushes it when idle) instead of decrypting at once.

        The agent then waits, mid-round, until the flush resumes it; the numbers
        are the same, only the order of work on the host changes.
        """
        self._batch = batch

    def _decrypt_then(
        self, ct: Ciphertext, then: Callable[[Callable[[], np.ndarray]], list[Envelope]]
    ) -> list[Envelope]:
        """Decrypt ``ct`` under the own key and continue with ``then(plaintext)``:
        now, or at the host batch's next flush. ``then`` receives a function
        returning the plaintext (raising ``CryptoError`` as ``decrypt`` does)."""
        scheme = self.scheme
        if self._batch is None or not isinstance(scheme, PackedScheme):
            return then(lambda: scheme.decrypt(ct))

        def resume(
            plain: Callable[[], np.ndarray], seconds: float
        ) -> tuple[AgentId, list[Envelope]]:
            self.profiler.seconds["crypto"] += seconds  # this item's share of the batch
            return self.agent_id, then(plain)

        self._batch.add(scheme, ct, resume)
        return []

    def _attach(self, scheme: Scheme) -> None:
        if isinstance(scheme, PaillierScheme):
            scheme.use_prefetcher(self._prefetcher)

    def _load_peer(self, payload: bytes) -> Scheme:
        """A neighbour's public-key bytes as a scheme (raises ``CryptoError``)."""
        peer = self._load_peer_scheme(payload)
        self._attach(peer)
        return peer

    # -- helpers ---------------------------------------------------------------

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
