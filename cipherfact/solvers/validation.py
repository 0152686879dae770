"""Boundary checks shared by every solver entry point.

One module so that the numpy backend, the torch backend, the centralized
driver and the rating MF all reject bad input with the same message: a
``ValueError`` (bad value) or ``TypeError`` (bad kind) that names the input and
the offending value, scikit-learn style.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.solvers.base import Matrix

__all__ = [
    "as_matrix",
    "check_factor",
    "check_factors",
    "check_nonnegative_scalar",
    "check_positive_int",
    "check_rank",
    "is_sparse",
]


def is_sparse(X: object) -> bool:
    """True for scipy CSR input (matrix or array flavour)."""
    return sp.issparse(X) and X.format == "csr"  # type: ignore[attr-defined]


def _values(X: Matrix) -> np.ndarray:
    if isinstance(X, np.ndarray):
        return X
    return np.asarray(X.data)


def _check_finite(values: np.ndarray, name: str) -> None:
    if values.size and not np.isfinite(values).all():
        bad = values[~np.isfinite(values)][0]
        count = int((~np.isfinite(values)).sum())
        raise ValueError(f"NaN or infinite values in {name} ({count} entries, first {bad})")


def _check_nonnegative(values: np.ndarray, name: str) -> None:
    if values.size:
        low = float(values.min())
        if low < 0:
            raise ValueError(f"Negative values in {name} (min {low:g})")


def as_matrix(X: Any, name: str = "X", *, nonnegative: bool = True) -> Matrix:
    """Return X as float64 dense ndarray or float64 CSR, checked; never densifies CSR.

    Other sparse formats are refused rather than silently converted, because
    a conversion inside an inner loop would copy the data at every call.
    """
    if sp.issparse(X):
        if X.format != "csr":
            raise TypeError(
                f"{name} must be a dense array or scipy CSR, got sparse format {X.format!r} "
                f"(convert once with .tocsr())"
            )
        if X.dtype != np.float64:
            X = X.astype(np.float64)
    else:
        if isinstance(X, (str, bytes)) or X is None:
            raise TypeError(f"{name} must be a 2-D array or scipy CSR, got {type(X).__name__}")
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric, got {type(X).__name__}: {exc}") from None
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {X.ndim}-D with shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    values = _values(X)
    _check_finite(values, name)
    if nonnegative:
        _check_nonnegative(values, name)
    return X


def check_factor(
    F: Any, name: str, shape: tuple[int, int], *, nonnegative: bool = True
) -> np.ndarray:
    """Check one factor's shape, finiteness and sign; return it as float64."""
    if sp.issparse(F):
        raise TypeError(f"{name} must be a dense array, got sparse {type(F).__name__}")
    F = np.asarray(F, dtype=np.float64)
    if F.shape != shape:
        raise ValueError(f"{name} has shape {F.shape}; expected {shape}")
    _check_finite(F, name)
    if nonnegative:
        _check_nonnegative(F, name)
    return F


def check_factors(
    x_shape: tuple[int, int], W: Any, H: Any, *, nonnegative: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Check W (m x r) and H (r x n) against X's shape (m, n); r is taken from W."""
    m, n = x_shape
    W = np.asarray(W, dtype=np.float64) if not sp.issparse(W) else W
    if getattr(W, "ndim", 0) != 2 or W.shape[0] != m:
        raise ValueError(
            f"W has shape {getattr(W, 'shape', None)}; expected ({m}, r) for X of shape {x_shape}"
        )
    r = W.shape[1]
    check_rank(r, m, n, name="W's rank")
    W = check_factor(W, "W", (m, r), nonnegative=nonnegative)
    H = check_factor(H, "H", (r, n), nonnegative=nonnegative)
    return W, H


def check_rank(r: Any, m: int, n: int, name: str = "n_components") -> int:
    """Rank must be an integer in [1, min(m, n)]."""
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(r).__name__} {r!r}")
    if r < 1 or r > min(m, n):
        raise ValueError(f"{name} must be in [1, min(m, n) = {min(m, n)}], got {r}")
    return int(r)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (iteration counts, sweeps, epochs)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative_scalar(value: Any, name: str, *, strict: bool = False) -> float:
    """A finite real >= 0 (> 0 when ``strict``): regularization, tolerances, steps."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value
