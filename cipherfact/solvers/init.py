"""Initial factors: seeded random, or NNDSVD (Boutsidis & Gallopoulos 2008).

Randomness comes only from an explicit ``numpy.random.Generator`` (or a seed
that builds one), so the same seed gives the same start on every machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from cipherfact.solvers.base import Matrix
from cipherfact.solvers.validation import as_matrix, check_rank

INITS = ("random", "nndsvd", "nndsvda")


def as_generator(seed: Any, name: str = "seed") -> np.random.Generator:
    """Accept a Generator or an int seed; refuse global-state sources (None, RandomState)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{name} must be >= 0, got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"{name} must be an int or numpy.random.Generator, got {type(seed).__name__}")


def _mean(X: Matrix) -> float:
    m, n = X.shape
    total = float(X.sum()) if isinstance(X, np.ndarray) else float(np.asarray(X.data).sum())
    return total / (m * n)


def random_init(X: Matrix, n_components: int, seed: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """|N(0, s^2)| entries, s = sqrt(mean(X) / r): W H starts at X's scale (scikit-learn's rule)."""
    m, n = X.shape
    rng = as_generator(seed)
    scale = np.sqrt(_mean(X) / n_components)
    W = scale * np.abs(rng.standard_normal((m, n_components)))
    H = scale * np.abs(rng.standard_normal((n_components, n)))
    return W, H


def _leading_svd(X: Matrix, k: int, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    """Top-k singular triplets, descending; ARPACK's start vector comes from ``rng``."""
    m, n = X.shape
    if k >= min(m, n) - 1 or (not sp.issparse(X) and min(m, n) <= 500):
        dense = X if isinstance(X, np.ndarray) else X.toarray()
        U, S, Vt = np.linalg.svd(dense, full_matrices=False)
        return U[:, :k], S[:k], Vt[:k]
    v0 = rng.uniform(-1.0, 1.0, min(m, n))
    U, S, Vt = svds(X, k=k, v0=v0)
    order = np.argsort(S)[::-1]
    return U[:, order], S[order], Vt[order]


def nndsvd_init(
    X: Matrix, n_components: int, *, variant: str = "nndsvd", seed: Any = 0
) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD: keep the dominant sign pattern of each singular pair.

    ``nndsvda`` fills the zeros with mean(X), which lets multiplicative updates
    move them (plain NNDSVD zeros stay zero under MU).
    """
    rng = as_generator(seed)
    U, S, Vt = _leading_svd(X, n_components, rng)
    m, n = X.shape
    W = np.zeros((m, n_components))
    H = np.zeros((n_components, n))
    # The first pair can be taken nonnegative whole (Perron-Frobenius).
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0, :] = np.sqrt(S[0]) * np.abs(Vt[0, :])
    for j in range(1, n_components):
        x, y = U[:, j], Vt[j, :]
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        xpn, ypn = np.linalg.norm(xp), np.linalg.norm(yp)
        xnn, ynn = np.linalg.norm(xn), np.linalg.norm(yn)
        mp, mn = xpn * ypn, xnn * ynn
        if max(mp, mn) == 0.0:
            continue  # a pair with no usable sign pattern: leave the component at zero
        if mp > mn:
            u, v, sigma = xp / xpn, yp / ypn, mp
        else:
            u, v, sigma = xn / xnn, yn / ynn, mn
        lbd = np.sqrt(S[j] * sigma)
        W[:, j] = lbd * u
        H[j, :] = lbd * v
    W[W < 1e-6] = 0.0
    H[H < 1e-6] = 0.0
    if variant == "nndsvda":
        avg = _mean(X)
        W[W == 0] = avg
        H[H == 0] = avg
    return W, H


def initialize(
    X: Any, n_components: int, init: str = "random", seed: Any = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Checked entry point: validate X and the rank, then dispatch on ``init``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    X = as_matrix(X, "X")
    r = check_rank(n_components, *X.shape)
    if init == "random":
        return random_init(X, r, seed)
    return nndsvd_init(X, r, variant=init, seed=seed)
