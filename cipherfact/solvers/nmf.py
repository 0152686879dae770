"""Centralized NMF driver: the plaintext reference every distributed run is judged by.

Stopping follows scikit-learn: every ``check_every`` iterations the error
sqrt(2 * objective) is computed and the run stops once its decrease since the
last check, relative to the initial error, falls below ``tol``; hitting
``max_iter`` first raises a ``ConvergenceWarning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.solvers.base import LocalSolver
from cipherfact.solvers.factory import make_solver
from cipherfact.solvers.init import initialize
from cipherfact.solvers.validation import (
    as_matrix,
    check_factors,
    check_nonnegative_scalar,
    check_positive_int,
    check_rank,
)

__all__ = ["NMFResult", "nmf"]


@dataclass(frozen=True)
class NMFResult:
    """Factors and the run's trace; ``history`` holds the relative error at each check."""

    W: np.ndarray
    H: np.ndarray
    n_iter: int
    rel_error: float
    history: tuple[float, ...]
    converged: bool


def _objective(solver: LocalSolver, X: Any, W: np.ndarray, H: np.ndarray) -> float:
    objective = getattr(solver, "objective", None)
    return float(objective(X, W, H)) if callable(objective) else float(solver.loss(X, W, H))


def nmf(
    X: Any,
    n_components: int,
    *,
    init: str = "random",
    solver: LocalSolver | str | None = None,
    max_iter: int = 200,
    tol: float = 1e-4,
    seed: Any = 0,
    check_every: int = 10,
    W0: np.ndarray | None = None,
    H0: np.ndarray | None = None,
) -> NMFResult:
    """Factorize X ~= W H with W, H >= 0.

    ``solver`` is a ``LocalSolver`` or a backend name for ``make_solver``
    (default: numpy with HALS, scikit-learn's "cd"). ``W0``/``H0`` override
    ``init`` when both are given. Each iteration updates W, then H.
    """
    X = as_matrix(X, "X")
    r = check_rank(n_components, *X.shape)
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    tol = check_nonnegative_scalar(tol, "tol")
    if solver is None:
        solver = make_solver("numpy", rule="hals")
    elif isinstance(solver, str):
        solver = make_solver(solver, rule="hals")
    elif not isinstance(solver, LocalSolver):
        raise TypeError(
            f"solver must be a LocalSolver or backend name, got {type(solver).__name__}"
        )
    if (W0 is None) != (H0 is None):
        raise ValueError("W0 and H0 must be given together (got only one)")
    if W0 is not None:
        W, H = check_factors(X.shape, W0, H0)
        if W.shape[1] != r:
            raise ValueError(f"W0 has rank {W.shape[1]}; expected n_components = {r}")
    else:
        W, H = initialize(X, r, init, seed)

    x_norm = float(np.sqrt(2.0 * solver.loss(X, np.zeros_like(W), H)))
    if x_norm == 0.0:
        raise ValueError("X is all zeros (norm 0): there is nothing to factorize")

    def error() -> float:
        return float(np.sqrt(2.0 * _objective(solver, X, W, H)))

    err0 = previous = error()
    history = [float(np.sqrt(2.0 * solver.loss(X, W, H))) / x_norm]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        W = solver.update_w(X, W, H)
        H = solver.update_h(X, W, H)
        if tol > 0 and n_iter % check_every == 0:
            current = error()
            history.append(float(np.sqrt(2.0 * solver.loss(X, W, H))) / x_norm)
            if err0 > 0 and (previous - current) / err0 < tol:
                converged = True
                break
            previous = current
    if not converged and tol > 0:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(
            f"nmf did not converge in max_iter={max_iter} iterations (tol={tol}); "
            "raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    rel_error = float(np.sqrt(2.0 * solver.loss(X, W, H))) / x_norm
    if tol == 0:
        history.append(rel_error)
    return NMFResult(W, H, n_iter, rel_error, tuple(history), converged)
