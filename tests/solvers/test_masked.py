"""Masked NMF / MF: only observed entries count, whatever the unobserved hold."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cipherfact.solvers import (
    make_solver,
    masked_loss,
    masked_nmf,
    masked_update_h,
    masked_update_w,
    observed_entries,
)
from tests.solvers.conftest import low_rank


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = low_rank(25, 20, 3, seed=11)
    mask = rng.random(X.shape) < 0.5
    return X, mask, rng.random((25, 3)) + 0.1, rng.random((3, 20)) + 0.1


def _scramble(X, mask, value):
    Y = X.copy()
    Y[~mask] = value
    return Y


@pytest.mark.parametrize("nonnegative", [True, False])
@pytest.mark.parametrize("fill", [0.0, 1e6, np.nan, -5.0])
def test_unobserved_values_do_not_matter(data, nonnegative, fill):
    X, mask, W, H = data
    Y = _scramble(X, mask, fill)
    for fn in (masked_update_h, masked_update_w):
        a = fn(X, W, H, mask, l2=0.1, nonnegative=nonnegative, n_sweeps=2)
        b = fn(Y, W, H, mask, l2=0.1, nonnegative=nonnegative, n_sweeps=2)
        assert np.array_equal(a, b)
    assert masked_loss(X, W, H, mask) == masked_loss(Y, W, H, mask)
    ra = masked_nmf(X, 3, mask=mask, nonnegative=nonnegative, max_iter=20, tol=0.0)
    rb = masked_nmf(Y, 3, mask=mask, nonnegative=nonnegative, max_iter=20, tol=0.0)
    assert np.array_equal(ra.W, rb.W) and np.array_equal(ra.H, rb.H)


def test_csr_stored_entries_are_the_mask(data):
    X, mask, W, H = data
    rows, cols = np.nonzero(mask)
    R = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
    a = masked_update_h(R, W, H)
    b = masked_update_h(X, W, H, mask)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # The same CSR with an explicit mask gives the same answer.
    np.testing.assert_allclose(
        masked_update_w(R, W, H, mask), masked_update_w(X, W, H, mask), rtol=1e-12
    )


def test_full_mask_equals_unmasked_hals(data):
    X, _, W, H = data
    full = np.ones(X.shape, dtype=bool)
    np.testing.assert_allclose(
        masked_update_h(X, W, H, full, l2=0.2),
        make_solver(rule="hals", l2=0.2).update_h(X, W, H),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        masked_update_w(X, W, H), make_solver(rule="hals").update_w(X, W, H), rtol=1e-10
    )
    assert masked_loss(X, W, H) == pytest.approx(make_solver().loss(X, W, H), rel=1e-12)


def test_updates_minimize_observed_loss(data):
    X, mask, W, H = data
    before = masked_loss(X, W, H, mask)
    H2 = masked_update_h(X, W, H, mask)
    W2 = masked_update_w(X, W, H2, mask)
    assert masked_loss(X, W, H2, mask) < before
    assert masked_loss(X, W2, H2, mask) <= masked_loss(X, W, H2, mask)


def test_unconstrained_update_is_the_least_squares_solution(data):
    # nonnegative=False, many sweeps: each H column solves its masked least squares.
    X, mask, W, H = data
    Hn = masked_update_h(X, W, H, mask, nonnegative=False, n_sweeps=300)
    for j in [0, 7, 19]:
        rows = mask[:, j]
        ref = np.linalg.lstsq(W[rows], X[rows, j], rcond=None)[0]
        np.testing.assert_allclose(Hn[:, j], ref, rtol=1e-6, atol=1e-8)


def test_masked_nmf_recovers_missing_entries():
    X = low_rank(40, 30, 3, seed=11, noise=0.01)
    mask = np.random.default_rng(0).random(X.shape) < 0.6
    res = masked_nmf(X, 3, mask=mask, max_iter=2000, tol=1e-8)
    held_out = np.linalg.norm((X - res.W @ res.H)[~mask]) / np.linalg.norm(X[~mask])
    assert res.converged and res.rel_error < 0.01 and held_out < 0.02


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        (
            (np.ones((3, 3)),),
            {"mask": np.ones((3, 3))},
            TypeError,
            r"mask must be a boolean array, got dtype float64",
        ),
        (
            (np.ones((3, 3)),),
            {"mask": np.ones((2, 3), bool)},
            ValueError,
            r"mask has shape \(2, 3\); expected X's shape \(3, 3\)",
        ),
        (
            (np.ones((3, 3)),),
            {"mask": np.zeros((3, 3), bool)},
            ValueError,
            r"X has no observed entries \(shape \(3, 3\)\)",
        ),
        (
            (-np.ones((3, 3)),),
            {},
            ValueError,
            r"Negative values in observed entries of X \(min -1\)",
        ),
        (
            (np.full((3, 3), np.nan),),
            {},
            ValueError,
            r"NaN or infinite values in observed entries of X \(first nan\)",
        ),
        ((np.ones(3),), {}, ValueError, r"X must be 2-D, got 1-D"),
        ((np.ones((0, 3)),), {}, ValueError, r"X is empty \(shape \(0, 3\)\)"),
        ((sp.csc_matrix(np.ones((3, 3))),), {}, TypeError, r"got sparse format 'csc'"),
    ],
)
def test_observed_entries_validation(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        observed_entries(*args, **kwargs)


def test_negative_allowed_when_unconstrained():
    obs = observed_entries(-np.ones((2, 2)), nonnegative=False)
    assert obs.values.min() == -1


def test_masked_nmf_argument_checks(data):
    X, mask, W, H = data
    with pytest.raises(ValueError, match=r"n_components must be in \[1, min\(m, n\) = 20\], got"):
        masked_nmf(X, 21, mask=mask)
    with pytest.raises(ValueError, match=r"observed entries of X are all zeros"):
        masked_nmf(np.zeros((3, 3)), 1)
    with pytest.raises(ValueError, match=r"l2 must be finite and >= 0, got -1.0"):
        masked_update_h(X, W, H, mask, l2=-1)
    with pytest.raises(ValueError, match=r"H has shape \(2, 20\); expected \(3, 20\)"):
        masked_update_w(X, W, H[:2], mask)
