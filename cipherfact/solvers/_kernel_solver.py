"""``LocalSolver`` on top of the shared kernels: validation, conversion, caching.

A backend only says how to convert arrays and which ``Ops`` to use; the
checks, the rule selection and the float64 numpy-in/numpy-out contract live
here once, so the backends cannot drift apart.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from cipherfact.solvers import _kernels as kern
from cipherfact.solvers.base import LocalSolver, Matrix
from cipherfact.solvers.validation import (
    as_matrix,
    check_factor,
    check_factors,
    check_nonnegative_scalar,
    check_positive_int,
)

RULES = ("mu", "hals")


class KernelSolver(LocalSolver):
    """Shared implementation of every ``LocalSolver`` method.

    X is checked (sign, finiteness, shape) and converted once per X *object*:
    the solver remembers the last X it saw by identity, since protocols call it
    hundreds of times on the same block. Do not modify X in place between calls.
    """

    def __init__(self, rule: str = "mu", *, l1: float = 0.0, l2: float = 0.0) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        self.reg = kern.Reg(
            l1=check_nonnegative_scalar(l1, "l1"), l2=check_nonnegative_scalar(l2, "l2")
        )
        self._cached_x: object | None = None
        self._cached_prepared: kern.Prepared | None = None

    # -- backend hooks -------------------------------------------------
    @property
    @abstractmethod
    def ops(self) -> kern.Ops:
        """The backend's array primitives."""

    @abstractmethod
    def _prepare_checked(self, X: Matrix) -> kern.Prepared:
        """Convert an already-validated float64 X to the backend."""

    @abstractmethod
    def _to_backend(self, a: np.ndarray) -> Any:
        """numpy float64 -> backend array (on the solver's device)."""

    @abstractmethod
    def _to_numpy(self, a: Any) -> np.ndarray:
        """Backend array -> fresh numpy float64 array."""

    # -- helpers ---------------------------------------------------------
    def _prepare(self, X: Matrix) -> kern.Prepared:
        if X is self._cached_x and self._cached_prepared is not None:
            return self._cached_prepared
        checked = as_matrix(X, "X")
        prepared = self._prepare_checked(checked)
        self._cached_x, self._cached_prepared = X, prepared
        return prepared

    def _inputs(self, X: Matrix, W: Any, H: Any) -> tuple[kern.Prepared, Any, Any]:
        P = self._prepare(X)
        shape = (P.data.shape[0], P.data.shape[1])
        Wn, Hn = check_factors(shape, W, H)
        return P, self._to_backend(Wn), self._to_backend(Hn)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule!r}, l1={self.reg.l1}, l2={self.reg.l2})"

    # -- LocalSolver -----------------------------------------------------
    def update_h(self, X: Matrix, W: np.ndarray, H: np.ndarray, *, n_sweeps: int = 1) -> np.ndarray:
        n_sweeps = check_positive_int(n_sweeps, "n_sweeps")
        P, Wb, Hb = self._inputs(X, W, H)
        return self._to_numpy(kern.update_h(self.ops, P, Wb, Hb, self.rule, self.reg, n_sweeps))

    def update_w(self, X: Matrix, W: np.ndarray, H: np.ndarray, *, n_sweeps: int = 1) -> np.ndarray:
        n_sweeps = check_positive_int(n_sweeps, "n_sweeps")
        P, Wb, Hb = self._inputs(X, W, H)
        return self._to_numpy(kern.update_w(self.ops, P, Wb, Hb, self.rule, self.reg, n_sweeps))

    def w_gradient(self, X: Matrix, W: np.ndarray, H: np.ndarray) -> np.ndarray:
        P, Wb, Hb = self._inputs(X, W, H)
        return self._to_numpy(kern.w_gradient(self.ops, P, Wb, Hb, self.reg))

    def w_lipschitz(self, H: np.ndarray) -> float:
        H = np.asarray(H, dtype=np.float64)
        if H.ndim != 2:
            raise ValueError(f"H must be 2-D, got shape {H.shape}")
        H = check_factor(H, "H", H.shape)
        return kern.w_lipschitz(self.ops, self._to_backend(H), self.reg)

    def linearized_w_step(
        self, X: Matrix, W: np.ndarray, H: np.ndarray, consensus: np.ndarray, step: float
    ) -> np.ndarray:
        step = check_nonnegative_scalar(step, "step", strict=True)
        P, Wb, Hb = self._inputs(X, W, H)
        shape = (int(Wb.shape[0]), int(Wb.shape[1]))
        C = check_factor(consensus, "consensus", shape, nonnegative=False)
        out = kern.linearized_w_step(self.ops, P, Wb, Hb, self._to_backend(C), step, self.reg)
        return self._to_numpy(out)

    def loss(self, X: Matrix, W: np.ndarray, H: np.ndarray) -> float:
        P, Wb, Hb = self._inputs(X, W, H)
        return kern.loss(self.ops, P, Wb, Hb)

    def objective(self, X: Matrix, W: np.ndarray, H: np.ndarray) -> float:
        """Loss plus the L1/L2 penalty: the quantity the updates decrease."""
        P, Wb, Hb = self._inputs(X, W, H)
        return kern.loss(self.ops, P, Wb, Hb) + kern.penalty(self.ops, Wb, Hb, self.reg)
