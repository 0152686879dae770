"""numpy / scipy backend: the reference solver, needs nothing beyond the core deps."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.solvers import _kernels as kern
from cipherfact.solvers._kernel_solver import KernelSolver
from cipherfact.solvers.base import Matrix


class NumpyOps:
    """numpy spellings of the kernel primitives; sparse X stays scipy CSR."""

    def relu(self, a: np.ndarray) -> np.ndarray:
        return np.maximum(a, 0.0)

    def axpy_relu_row(self, F: np.ndarray, k: int, step: np.ndarray, scale: float) -> None:
        row = F[k]
        row += scale * step
        np.maximum(row, 0.0, out=row)

    def clone(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np.float64, order="C", copy=True)

    def floor(self, a: np.ndarray, value: float) -> np.ndarray:
        return np.maximum(a, value)

    def x_ht(self, P: kern.Prepared, H: np.ndarray) -> np.ndarray:
        return np.asarray(P.data @ H.T)

    def wt_x(self, P: kern.Prepared, W: np.ndarray) -> np.ndarray:
        if P.sparse:
            return np.ascontiguousarray(np.asarray(P.data_t @ W).T)
        return W.T @ P.data

    def diag_list(self, S: np.ndarray) -> list[float]:
        return [float(v) for v in np.diag(S)]

    def scalar(self, a: Any) -> float:
        return float(a)

    def max_eig(self, S: np.ndarray) -> float:
        return float(np.linalg.eigvalsh(S)[-1])

    def residual_sqnorm(self, P: kern.Prepared, W: np.ndarray, H: np.ndarray) -> float:
        R = P.data - W @ H
        return float(np.einsum("ij,ij->", R, R))


class NumpySolver(KernelSolver):
    """NMF updates on numpy (dense) or scipy CSR (sparse) X.

    ``rule`` is ``"mu"`` (Lee-Seung multiplicative updates) or ``"hals"``
    (hierarchical alternating least squares, i.e. scikit-learn's "cd" solver
    without shuffling); ``l1`` / ``l2`` penalize both factors.
    """

    name = "numpy"
    device = "cpu"
    _OPS = NumpyOps()

    @property
    def ops(self) -> kern.Ops:
        return self._OPS

    def _prepare_checked(self, X: Matrix) -> kern.Prepared:
        if sp.issparse(X):
            csr = sp.csr_matrix(X)
            return kern.Prepared(csr, csr.T.tocsr(), True, float(csr.data @ csr.data))
        return kern.Prepared(X, None, False, float(np.einsum("ij,ij->", X, X)))

    def _to_backend(self, a: np.ndarray) -> np.ndarray:
        return a

    def _to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float64)
