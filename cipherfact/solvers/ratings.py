"""Rating matrix factorization on CSR: the plaintext twin of the recommendation protocols.

Model: r_ui ~= mu + b_u + c_i + U_u . V_i (biases optional; without them the
prediction is U_u . V_i, as in csr_fhe_mf). Objective over stored ratings:

    1/2 sum_(u,i) e_ui^2 + reg/2 (||U||^2 + ||V||^2 [+ ||b||^2 + ||c||^2])

Methods: ``"gd"`` full-batch gradient descent (gradients are sums over
ratings, U and V stepped simultaneously from the same residuals: exactly the
linear steps csr_fhe_mf's CSP applies), ``"sgd"`` one rating at a time in a
seeded random order, and ``"als"`` exact alternating ridge solves. Work is
proportional to the number of ratings, never users x items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.solvers.init import as_generator
from cipherfact.solvers.validation import (
    check_nonnegative_scalar,
    check_positive_int,
    check_rank,
)

__all__ = ["METHODS", "MFResult", "fit_ratings_mf", "predict", "rmse"]

METHODS = ("als", "gd", "sgd")


@dataclass(frozen=True)
class MFResult:
    """Fitted factors; ``history`` is the training RMSE at start and after each epoch."""

    U: np.ndarray
    V: np.ndarray
    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    history: tuple[float, ...]
    method: str


def check_ratings(R: Any, name: str = "R") -> sp.csr_matrix:
    """Ratings must be a non-empty, finite scipy CSR matrix (signs are free)."""
    if not (sp.issparse(R) and R.format == "csr"):
        kind = f"sparse format {R.format!r}" if sp.issparse(R) else type(R).__name__
        raise TypeError(f"{name} must be a scipy CSR matrix of ratings, got {kind}")
    R = sp.csr_matrix(R, dtype=np.float64)
    if R.shape[0] == 0 or R.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {R.shape})")
    if R.nnz == 0:
        raise ValueError(f"{name} has no stored ratings (shape {R.shape})")
    if not np.isfinite(R.data).all():
        bad = R.data[~np.isfinite(R.data)][0]
        raise ValueError(f"NaN or infinite values in {name} (first {bad})")
    R.sort_indices()
    return R


def _coords(R: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(R.shape[0], dtype=np.int64), np.diff(R.indptr))
    return rows, R.indices.astype(np.int64)


def predict(model: MFResult, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predicted ratings for (user, item) index pairs."""
    dots = np.einsum("ef,ef->e", model.U[users], model.V[items])
    return model.global_mean + model.user_bias[users] + model.item_bias[items] + dots


def rmse(model: MFResult, R: Any) -> float:
    """Root mean squared error of ``model`` on the stored ratings of R."""
    R = check_ratings(R)
    if R.shape[0] > model.U.shape[0] or R.shape[1] > model.V.shape[0]:
        raise ValueError(
            f"R has shape {R.shape} but the model knows {model.U.shape[0]} users and "
            f"{model.V.shape[0]} items"
        )
    rows, cols = _coords(R)
    err = R.data - predict(model, rows, cols)
    return float(np.sqrt(err @ err / err.size))


def _ridge_rows(
    R: sp.csr_matrix, target: np.ndarray, F: np.ndarray, reg: float, augment: bool
) -> tuple[np.ndarray, np.ndarray]:
    """For each row u of R: argmin_x ||t_u - [F_i (, 1)] x||^2 + reg ||x||^2 over its entries.

    Returns the factor rows and (when ``augment``) the bias column. Rows with no
    entries get zeros, the ridge solution with no data.
    """
    k = F.shape[1] + (1 if augment else 0)
    out = np.zeros((R.shape[0], k))
    eye = reg * np.eye(k)
    for u in range(R.shape[0]):
        lo, hi = R.indptr[u], R.indptr[u + 1]
        if lo == hi:
            continue
        A = F[R.indices[lo:hi]]
        if augment:
            A = np.hstack([A, np.ones((hi - lo, 1))])
        t = target[lo:hi]
        if reg > 0:
            out[u] = np.linalg.solve(A.T @ A + eye, A.T @ t)
        else:
            out[u] = np.linalg.lstsq(A, t, rcond=None)[0]
    if augment:
        return out[:, :-1].copy(), out[:, -1].copy()
    return out, np.zeros(R.shape[0])


def fit_ratings_mf(
    R: Any,
    n_factors: int,
    *,
    method: str = "als",
    reg: float = 0.1,
    lr: float = 0.01,
    epochs: int = 20,
    seed: Any = 0,
    biases: bool = False,
    init_scale: float = 0.1,
) -> MFResult:
    """Fit r_ui ~= [mu + b_u + c_i +] U_u . V_i on the stored ratings of CSR ``R``.

    U and V start as N(0, init_scale^2) from ``seed``; biases start at zero and
    mu is the mean training rating (fixed). ``lr`` is used by gd and sgd only.
    """
    R = check_ratings(R)
    m, n = R.shape
    f = check_rank(n_factors, m, n, name="n_factors")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    reg = check_nonnegative_scalar(reg, "reg")
    lr = check_nonnegative_scalar(lr, "lr", strict=True)
    epochs = check_positive_int(epochs, "epochs")
    init_scale = check_nonnegative_scalar(init_scale, "init_scale", strict=True)
    rng = as_generator(seed)
    U = init_scale * rng.standard_normal((m, f))
    V = init_scale * rng.standard_normal((n, f))
    mu = float(R.data.mean()) if biases else 0.0
    b, c = np.zeros(m), np.zeros(n)
    rows, cols = _coords(R)
    Rt = R.T.tocsr()
    Rt.sort_indices()
    _, t_cols = _coords(Rt)  # item-major order: (item, user)

    def model() -> MFResult:
        return MFResult(U, V, mu, b, c, (), method)

    def train_rmse() -> float:
        err = R.data - predict(model(), rows, cols)
        return float(np.sqrt(err @ err / err.size))

    history = [train_rmse()]
    order_rng = rng  # sgd's visiting order continues the same stream
    for _ in range(epochs):
        if method == "als":
            target = R.data - mu - c[cols]
            U, b_new = _ridge_rows(R, target, V, reg, biases)
            b = b_new if biases else b
            target_t = Rt.data - mu - b[t_cols]
            V, c_new = _ridge_rows(Rt, target_t, U, reg, biases)
            c = c_new if biases else c
        elif method == "gd":
            err = R.data - predict(model(), rows, cols)
            E = sp.csr_matrix((err, R.indices, R.indptr), shape=R.shape)
            gU = reg * U - E @ V
            gV = reg * V - E.T @ U
            U, V = U - lr * gU, V - lr * gV
            if biases:
                gb = reg * b - np.asarray(E.sum(axis=1)).ravel()
                gc = reg * c - np.asarray(E.sum(axis=0)).ravel()
                b, c = b - lr * gb, c - lr * gc
        else:
            U, V, b, c = U.copy(), V.copy(), b.copy(), c.copy()
            for e in order_rng.permutation(R.nnz):
                u, i = rows[e], cols[e]
                pred = mu + b[u] + c[i] + U[u] @ V[i]
                err_e = R.data[e] - pred
                du = lr * (err_e * V[i] - reg * U[u])
                V[i] += lr * (err_e * U[u] - reg * V[i])
                U[u] += du
                if biases:
                    b[u] += lr * (err_e - reg * b[u])
                    c[i] += lr * (err_e - reg * c[i])
        history.append(train_rmse())
    return MFResult(U, V, mu, b, c, tuple(history), method)
