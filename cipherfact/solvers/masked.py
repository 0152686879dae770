"""NMF / MF with missing entries: the loss counts observed entries only.

Objective: 1/2 sum_{(i,j) observed} (X_ij - (W H)_ij)^2 + l2/2 (||W||^2 + ||H||^2).
The observed set is a boolean ``mask`` or, for CSR X without a mask, the
stored entries (explicit zeros included). Unobserved values are never read,
so they may be anything, NaN included: changing them cannot change a result.

Updates are exact coordinate minimization (HALS) over one factor row at a
time, computed on the observed entries only (work ~ r * nnz, never m * n).
With ``nonnegative=False`` the same updates are plain masked MF (ALS by rows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.solvers.init import as_generator
from cipherfact.solvers.nmf import NMFResult
from cipherfact.solvers.validation import (
    check_factors,
    check_nonnegative_scalar,
    check_positive_int,
    check_rank,
)

__all__ = [
    "Observed",
    "masked_loss",
    "masked_nmf",
    "masked_update_h",
    "masked_update_w",
    "observed_entries",
]


@dataclass(frozen=True)
class Observed:
    """Observed entries in coordinate form, sorted row-major."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]


def observed_entries(X: Any, mask: Any = None, *, nonnegative: bool = True) -> Observed:
    """Extract (and check) the observed entries of X; unobserved values are not inspected."""
    if isinstance(X, Observed):
        return X
    if sp.issparse(X):
        if X.format != "csr":
            raise TypeError(f"X must be a dense array or scipy CSR, got sparse format {X.format!r}")
        shape = (int(X.shape[0]), int(X.shape[1]))
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got {X.ndim}-D with shape {X.shape}")
        shape = (int(X.shape[0]), int(X.shape[1]))
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"X is empty (shape {shape})")
    if mask is None:
        if sp.issparse(X):
            coo = sp.csr_matrix(X).tocoo()
            rows, cols, values = coo.row, coo.col, np.asarray(coo.data, dtype=np.float64)
        else:
            rows, cols = np.nonzero(np.ones(shape, dtype=bool))
            values = X.ravel()
    else:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
        if mask.shape != shape:
            raise ValueError(f"mask has shape {mask.shape}; expected X's shape {shape}")
        rows, cols = np.nonzero(mask)
        if sp.issparse(X):
            values = np.asarray(sp.csr_matrix(X)[rows, cols], dtype=np.float64).ravel()
        else:
            values = X[rows, cols]
    if values.size == 0:
        raise ValueError(f"X has no observed entries (shape {shape})")
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)][0]
        raise ValueError(f"NaN or infinite values in observed entries of X (first {bad})")
    if nonnegative and values.min() < 0:
        raise ValueError(f"Negative values in observed entries of X (min {values.min():g})")
    order = np.lexsort((cols, rows))
    return Observed(
        rows[order].astype(np.int64),
        cols[order].astype(np.int64),
        np.array(values[order], dtype=np.float64),
        shape,
    )


def _residual(obs: Observed, W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """x_ij - w_i . h_j on the observed entries."""
    return obs.values - np.einsum("ek,ke->e", W[obs.rows], H[:, obs.cols])


def _cd_rows(
    F: np.ndarray,
    G: np.ndarray,
    own: np.ndarray,
    other: np.ndarray,
    resid: np.ndarray,
    l2: float,
    nonnegative: bool,
) -> np.ndarray:
    """Coordinate minimization over each row k of F (r x p), entry by entry.

    ``own[e]`` indexes F's columns, ``other[e]`` G's columns for observed entry e;
    ``resid`` is updated in place as F changes.
    """
    F = np.array(F, dtype=np.float64, copy=True)
    p = F.shape[1]
    for k in range(F.shape[0]):
        g = G[k, other]
        f_old = F[k, own]
        num = np.bincount(own, weights=g * (resid + g * f_old), minlength=p)
        den = np.bincount(own, weights=g * g, minlength=p) + l2
        new = np.divide(num, den, out=F[k].copy(), where=den > 0)
        if nonnegative:
            new = np.maximum(new, 0.0)
        resid -= g * (new[own] - f_old)
        F[k] = new
    return F


def _prepare(X: Any, W: Any, H: Any, mask: Any, nonnegative: bool) -> tuple[Observed, Any, Any]:
    obs = observed_entries(X, mask, nonnegative=nonnegative)
    Wc, Hc = check_factors(obs.shape, W, H, nonnegative=nonnegative)
    return obs, Wc, Hc


def masked_update_h(
    X: Any,
    W: np.ndarray,
    H: np.ndarray,
    mask: Any = None,
    *,
    l2: float = 0.0,
    nonnegative: bool = True,
    n_sweeps: int = 1,
) -> np.ndarray:
    """Improve H for fixed W using observed entries only."""
    obs, W, H = _prepare(X, W, H, mask, nonnegative)
    l2 = check_nonnegative_scalar(l2, "l2")
    resid = _residual(obs, W, H)
    for _ in range(check_positive_int(n_sweeps, "n_sweeps")):
        H = _cd_rows(H, W.T, obs.cols, obs.rows, resid, l2, nonnegative)
    return H


def masked_update_w(
    X: Any,
    W: np.ndarray,
    H: np.ndarray,
    mask: Any = None,
    *,
    l2: float = 0.0,
    nonnegative: bool = True,
    n_sweeps: int = 1,
) -> np.ndarray:
    """Improve W for fixed H using observed entries only."""
    obs, W, H = _prepare(X, W, H, mask, nonnegative)
    l2 = check_nonnegative_scalar(l2, "l2")
    resid = _residual(obs, W, H)
    Wt = W.T
    for _ in range(check_positive_int(n_sweeps, "n_sweeps")):
        Wt = _cd_rows(Wt, H, obs.rows, obs.cols, resid, l2, nonnegative)
    return np.ascontiguousarray(Wt.T)


def masked_loss(X: Any, W: np.ndarray, H: np.ndarray, mask: Any = None) -> float:
    """1/2 sum of squared residuals over the observed entries."""
    obs, W, H = _prepare(X, W, H, mask, nonnegative=False)
    resid = _residual(obs, W, H)
    return 0.5 * float(resid @ resid)


def masked_nmf(
    X: Any,
    n_components: int,
    *,
    mask: Any = None,
    nonnegative: bool = True,
    l2: float = 0.0,
    max_iter: int = 200,
    tol: float = 1e-4,
    seed: Any = 0,
    check_every: int = 10,
) -> NMFResult:
    """Factorize the observed part of X; ``rel_error`` and ``history`` are over observed entries.

    Same stopping rule and ``ConvergenceWarning`` as ``nmf``. Starts from
    |N(0, s^2)| factors, s = sqrt(mean of observed values / r).
    """
    obs = observed_entries(X, mask, nonnegative=nonnegative)
    m, n = obs.shape
    r = check_rank(n_components, m, n)
    l2 = check_nonnegative_scalar(l2, "l2")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    tol = check_nonnegative_scalar(tol, "tol")
    x_norm = float(np.linalg.norm(obs.values))
    if x_norm == 0.0:
        raise ValueError("observed entries of X are all zeros (norm 0): nothing to factorize")
    rng = as_generator(seed)
    scale = np.sqrt(abs(float(obs.values.mean())) / r) or 1.0 / np.sqrt(r)
    W = scale * np.abs(rng.standard_normal((m, r)))
    H = scale * np.abs(rng.standard_normal((r, n)))

    def error(W: np.ndarray, H: np.ndarray) -> float:
        resid = _residual(obs, W, H)
        return float(np.sqrt(resid @ resid + l2 * (np.sum(W * W) + np.sum(H * H))))

    def rel(W: np.ndarray, H: np.ndarray) -> float:
        return float(np.linalg.norm(_residual(obs, W, H))) / x_norm

    err0 = previous = error(W, H)
    history = [rel(W, H)]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        resid = _residual(obs, W, H)
        W = np.ascontiguousarray(_cd_rows(W.T, H, obs.rows, obs.cols, resid, l2, nonnegative).T)
        H = _cd_rows(H, W.T, obs.cols, obs.rows, resid, l2, nonnegative)
        if tol > 0 and n_iter % check_every == 0:
            current = error(W, H)
            history.append(rel(W, H))
            if err0 > 0 and (previous - current) / err0 < tol:
                converged = True
                break
            previous = current
    if not converged and tol > 0:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(
            f"masked_nmf did not converge in max_iter={max_iter} iterations (tol={tol})",
            ConvergenceWarning,
            stacklevel=2,
        )
    final = rel(W, H)
    if tol == 0:
        history.append(final)
    return NMFResult(W, H, n_iter, final, tuple(history), converged)
