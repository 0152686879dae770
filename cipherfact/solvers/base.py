"""The ``LocalSolver`` interface: one agent's local NMF / MF math.

Solvers are pure computation: no I/O, no crypto, no global RNG. The numpy and
torch backends implement the same interface and agree to floating-point
tolerance; each is deterministic for a fixed input (so twin runs are
bit-identical).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

Matrix: TypeAlias = np.ndarray | sp.csr_matrix


class LocalSolver(ABC):
    """NMF updates for X ~= W H with W (m x r) >= 0 and H (r x n) >= 0.

    Inputs and outputs are numpy arrays (float64) whatever the backend, so a
    protocol never sees a torch tensor; X may be dense or scipy CSR and is
    never densified.
    """

    name: str

    @abstractmethod
    def update_h(self, X: Matrix, W: np.ndarray, H: np.ndarray, *, n_sweeps: int = 1) -> np.ndarray:
        """Improve H for fixed W (``n_sweeps`` passes of the configured rule)."""

    @abstractmethod
    def update_w(self, X: Matrix, W: np.ndarray, H: np.ndarray, *, n_sweeps: int = 1) -> np.ndarray:
        """Improve W for fixed H (centralized update)."""

    @abstractmethod
    def w_gradient(self, X: Matrix, W: np.ndarray, H: np.ndarray) -> np.ndarray:
        """Gradient of 1/2 ||X - W H||_F^2 (+ regularization) with respect to W."""

    @abstractmethod
    def w_lipschitz(self, H: np.ndarray) -> float:
        """Lipschitz constant of ``w_gradient`` in W: the spectral norm of H H^T (+ l2)."""

    @abstractmethod
    def linearized_w_step(
        self, X: Matrix, W: np.ndarray, H: np.ndarray, consensus: np.ndarray, step: float
    ) -> np.ndarray:
        """Projected step used by decentralized ADMM: max(0, W - step * (grad_W + consensus))."""

    @abstractmethod
    def loss(self, X: Matrix, W: np.ndarray, H: np.ndarray) -> float:
        """1/2 ||X - W H||_F^2 (sparse X handled without densifying)."""
