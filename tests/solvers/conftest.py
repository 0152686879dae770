"""Shared seeded problems and the backend list for the solver contract tests."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp

HAS_TORCH = importlib.util.find_spec("torch") is not None
BACKENDS = [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
]


def low_rank(m: int, n: int, r: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """Exponential factors plus uniform noise: a nonnegative, nearly rank-r matrix."""
    rng = np.random.default_rng(seed)
    X = rng.exponential(size=(m, r)) @ rng.exponential(size=(r, n))
    return X + noise * X.mean() * rng.random((m, n))


@pytest.fixture(scope="session")
def problem() -> dict[str, np.ndarray]:
    """A 30 x 24 rank-4 problem with a random positive start and a sparse sample."""
    rng = np.random.default_rng(7)
    X = low_rank(30, 24, 4, seed=7)
    keep = rng.random(X.shape) < 0.3
    return {
        "X": X,
        "Xs_dense": np.where(keep, X, 0.0),
        "W": rng.random((30, 4)) + 0.1,
        "H": rng.random((4, 24)) + 0.1,
        "C": rng.standard_normal((30, 4)),
    }


@pytest.fixture(scope="session")
def sparse_x(problem: dict[str, np.ndarray]) -> sp.csr_matrix:
    return sp.csr_matrix(problem["Xs_dense"])
