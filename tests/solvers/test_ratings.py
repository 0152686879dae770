"""Rating MF on CSR: it learns, and each method matches a dense reference on a tiny problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cipherfact.solvers import MFResult, fit_ratings_mf, predict, rmse


def _ratings(m: int, n: int, f: int, density: float, seed: int):
    rng = np.random.default_rng(seed)
    full = 3.0 + 0.7 * rng.standard_normal((m, f)) @ rng.standard_normal((f, n))
    mask = rng.random((m, n)) < density
    mask[np.arange(m), rng.integers(0, n, m)] = True  # every user rates something
    mask[rng.integers(0, m, n), np.arange(n)] = True  # every item is rated
    rows, cols = np.nonzero(mask)
    return sp.csr_matrix((full[rows, cols], (rows, cols)), shape=(m, n)), full, mask


@pytest.fixture(scope="module")
def ratings():
    return _ratings(60, 45, 3, 0.3, seed=4)


@pytest.mark.parametrize(
    "method,lr,epochs",
    [("als", 0.01, 15), ("gd", 0.01, 150), ("sgd", 0.03, 25)],
)
@pytest.mark.parametrize("biases", [False, True])
def test_training_reduces_rmse(ratings, method, lr, epochs, biases):
    R = ratings[0]
    res = fit_ratings_mf(R, 3, method=method, reg=0.05, lr=lr, epochs=epochs, seed=0, biases=biases)
    assert len(res.history) == epochs + 1
    assert res.history[-1] < 0.5 * res.history[0]
    assert rmse(res, R) == pytest.approx(res.history[-1], rel=1e-12)
    assert rmse(res, R) < 0.65  # ratings spread ~1.2 around their mean of 3
    if biases:
        assert res.global_mean == pytest.approx(R.data.mean())


def test_als_generalizes_on_held_out_ratings(ratings):
    R, full, mask = ratings
    res = fit_ratings_mf(R, 3, method="als", reg=0.5, epochs=20, seed=0, biases=True)
    rows, cols = np.nonzero(~mask)
    err = full[rows, cols] - predict(res, rows, cols)
    assert np.sqrt(np.mean(err**2)) < 0.6  # ratings have std ~1.2 around 3


def _dense_gd_step(Rd, M, U, V, reg, lr):
    E = M * (Rd - U @ V.T)
    return U + lr * (E @ V - reg * U), V + lr * (E.T @ U - reg * V)


def test_gd_matches_dense_reference():
    R, _, M = _ratings(6, 5, 2, 0.5, seed=1)
    Rd = R.toarray()
    res = fit_ratings_mf(R, 2, method="gd", reg=0.1, lr=0.05, epochs=3, seed=9)
    rng = np.random.default_rng(9)
    U, V = 0.1 * rng.standard_normal((6, 2)), 0.1 * rng.standard_normal((5, 2))
    for _ in range(3):
        U, V = _dense_gd_step(Rd, M, U, V, 0.1, 0.05)
    np.testing.assert_allclose(res.U, U, rtol=1e-12)
    np.testing.assert_allclose(res.V, V, rtol=1e-12)


def test_als_matches_dense_reference():
    R, _, M = _ratings(6, 5, 2, 0.5, seed=2)
    Rd = R.toarray()
    reg = 0.2
    res = fit_ratings_mf(R, 2, method="als", reg=reg, epochs=2, seed=3)
    rng = np.random.default_rng(3)
    U, V = 0.1 * rng.standard_normal((6, 2)), 0.1 * rng.standard_normal((5, 2))
    for _ in range(2):
        # Per-row ridge through the dense mask: diag(M_u) selects the rated items.
        U = np.stack(
            [
                np.linalg.solve(V.T @ np.diag(M[u]) @ V + reg * np.eye(2), V.T @ (M[u] * Rd[u]))
                for u in range(6)
            ]
        )
        V = np.stack(
            [
                np.linalg.solve(
                    U.T @ np.diag(M[:, i]) @ U + reg * np.eye(2), U.T @ (M[:, i] * Rd[:, i])
                )
                for i in range(5)
            ]
        )
    np.testing.assert_allclose(res.U, U, rtol=1e-10)
    np.testing.assert_allclose(res.V, V, rtol=1e-10)


def test_gd_with_biases_matches_dense_reference():
    R, _, M = _ratings(5, 4, 2, 0.6, seed=5)
    Rd = R.toarray()
    mu = R.data.mean()
    res = fit_ratings_mf(R, 2, method="gd", reg=0.1, lr=0.05, epochs=2, seed=0, biases=True)
    rng = np.random.default_rng(0)
    U, V = 0.1 * rng.standard_normal((5, 2)), 0.1 * rng.standard_normal((4, 2))
    b, c = np.zeros(5), np.zeros(4)
    for _ in range(2):
        E = M * (Rd - mu - b[:, None] - c[None, :] - U @ V.T)
        U, V, b, c = (
            U + 0.05 * (E @ V - 0.1 * U),
            V + 0.05 * (E.T @ U - 0.1 * V),
            b + 0.05 * (E.sum(1) - 0.1 * b),
            c + 0.05 * (E.sum(0) - 0.1 * c),
        )
    np.testing.assert_allclose(res.user_bias, b, rtol=1e-9)
    np.testing.assert_allclose(res.item_bias, c, rtol=1e-9)
    np.testing.assert_allclose(res.U, U, rtol=1e-9)


def test_seeded_runs_are_identical(ratings):
    R = ratings[0]
    a = fit_ratings_mf(R, 3, method="sgd", epochs=2, seed=1)
    b = fit_ratings_mf(R, 3, method="sgd", epochs=2, seed=1)
    assert np.array_equal(a.U, b.U) and np.array_equal(a.V, b.V)
    assert isinstance(a, MFResult) and a.method == "sgd"


@pytest.mark.parametrize(
    "R,kwargs,exc,match",
    [
        (np.ones((3, 3)), {}, TypeError, r"R must be a scipy CSR matrix of ratings, got ndarray"),
        (sp.coo_matrix(np.ones((3, 3))), {}, TypeError, r"got sparse format 'coo'"),
        (sp.csr_matrix((3, 3)), {}, ValueError, r"R has no stored ratings \(shape \(3, 3\)\)"),
        (sp.csr_matrix((0, 3)), {}, ValueError, r"R is empty \(shape \(0, 3\)\)"),
        (
            sp.csr_matrix(np.array([[np.nan, 1.0]])),
            {"n_factors": 1},
            ValueError,
            r"NaN or infinite values in R \(first nan\)",
        ),
        (
            sp.csr_matrix(np.ones((3, 3))),
            {"n_factors": 4},
            ValueError,
            r"n_factors must be in \[1, min\(m, n\) = 3\], got 4",
        ),
        (
            sp.csr_matrix(np.ones((3, 3))),
            {"method": "svd"},
            ValueError,
            r"method must be one of \('als', 'gd', 'sgd'\), got 'svd'",
        ),
        (sp.csr_matrix(np.ones((3, 3))), {"lr": 0.0}, ValueError, r"lr must be finite and > 0"),
        (sp.csr_matrix(np.ones((3, 3))), {"reg": -1.0}, ValueError, r"reg must be finite and >= 0"),
        (sp.csr_matrix(np.ones((3, 3))), {"epochs": 0}, ValueError, r"epochs must be >= 1, got 0"),
    ],
)
def test_validation(R, kwargs, exc, match):
    args = {"n_factors": 2, **kwargs}
    with pytest.raises(exc, match=match):
        fit_ratings_mf(R, **args)


def test_rmse_refuses_unknown_users(ratings):
    res = fit_ratings_mf(ratings[0], 2, epochs=1)
    with pytest.raises(ValueError, match=r"R has shape \(61, 45\) but the model knows 60 users"):
        rmse(res, sp.csr_matrix(np.ones((61, 45))))


def test_reg_zero_als_uses_least_squares(ratings):
    res = fit_ratings_mf(ratings[0], 2, method="als", reg=0.0, epochs=3)
    assert np.isfinite(res.U).all() and res.history[-1] < res.history[0]
