"""``DistributedNMF``: the ppdnmf simulation behind a scikit-learn-like estimator.

    model = DistributedNMF(n_components=5, n_agents=10, topology="geometric",
                           scheme="paillier").fit(X)
    model.W_          # consensus left factor (mean of the agents' copies)
    model.agent_H_    # each agent's private H_i

The columns of X are split over the agents; every exchange between graph
neighbours is encrypted under the receiving agent's own key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cipherfact.simulations.ppdnmf_job import (
    consensus_spread,
    generate_keys,
    prepare_job,
    run_inmemory,
)
from cipherfact.simulations.scenario import (
    AdmmSpec,
    CryptoSpec,
    DataSpec,
    PPDNMFScenario,
    SolverSpec,
    TopologySpec,
)


class DistributedNMF:
    """Privacy-preserving decentralized NMF of a column-partitioned matrix."""

    def __init__(
        self,
        n_components: int = 5,
        *,
        n_agents: int = 10,
        topology: str = "geometric",
        degree: float | None = 3.0,
        scheme: str = "paillier",
        exchange: str = "secagg",
        key_bits: int = 2048,
        insecure_test_keys: bool = False,
        outer_iters: int = 100,
        inner_iters: int = 30,
        penalty: float = 10.0,
        frac_bits: int = 15,
        int_bits: int = 6,
        solver: str = "numpy",
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_agents = n_agents
        self.topology = topology
        self.degree = degree
        self.scheme = scheme
        self.exchange = exchange
        self.key_bits = key_bits
        self.insecure_test_keys = insecure_test_keys
        self.outer_iters = outer_iters
        self.inner_iters = inner_iters
        self.penalty = penalty
        self.frac_bits = frac_bits
        self.int_bits = int_bits
        self.solver = solver
        self.device = device
        self.seed = seed

    def _scenario(self, X: np.ndarray) -> PPDNMFScenario:
        degree = (
            self.degree if self.topology in ("geometric", "erdos_renyi", "small_world") else None
        )
        return PPDNMFScenario(
            name="estimator",
            seed=self.seed,
            n_agents=self.n_agents,
            rank=self.n_components,
            outer_iters=self.outer_iters,
            inner_iters=self.inner_iters,
            exchange=self.exchange,
            # secagg needs >= 2 neighbours per agent: the graph guarantees it
            topology=TopologySpec(
                kind=self.topology,
                degree=degree,
                min_degree=2 if self.exchange == "secagg" and self.n_agents > 2 else None,
            ),
            data=DataSpec(kind="file", rows=X.shape[0], cols=X.shape[1], path="<array>"),
            crypto=CryptoSpec(
                scheme=self.scheme,
                key_bits=self.key_bits,
                insecure_test_keys=self.insecure_test_keys,
                frac_bits=self.frac_bits,
                int_bits=self.int_bits,
            ),
            admm=AdmmSpec(penalty=self.penalty),
            solver=SolverSpec(backend=self.solver, device=self.device),
        )

    def fit(self, X: Any) -> DistributedNMF:
        """Factorize X (m x n, nonnegative); columns are split over the agents."""
        X = np.asarray(X, dtype=np.float64)
        job = prepare_job(self._scenario(X), X=X)
        schemes = generate_keys(job)
        history: list[float] = []
        bytes_total = 0
        last = None
        for last in run_inmemory(job, schemes=schemes):
            history.append(last.metrics.rel_error)
            bytes_total += last.metrics.bytes
        if last is None:  # unreachable: outer_iters >= 1 is validated
            raise RuntimeError("no outer iteration ran")
        self.agent_W_ = last.Ws
        self.agent_H_ = last.Hs
        self.agent_columns_ = job.columns
        self.W_ = sum(self.agent_W_) / job.n_agents
        H = np.zeros((self.n_components, X.shape[1]))
        for cols, h in zip(job.columns, self.agent_H_, strict=True):
            H[:, cols] = h
        self.H_ = H
        self.graph_ = job.graph
        self.history_ = history
        self.rel_error_ = history[-1]
        self.consensus_spread_ = consensus_spread(self.agent_W_)
        self.bytes_total_ = bytes_total
        return self
