"""The centralized driver: accuracy against scikit-learn, stopping, initialization."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import NMF

from cipherfact.solvers import (
    ConvergenceWarning,
    initialize,
    make_solver,
    nmf,
    nndsvd_init,
    random_init,
)
from tests.solvers.conftest import BACKENDS, low_rank


@pytest.fixture(scope="module")
def seeded_x() -> np.ndarray:
    return low_rank(60, 50, 5, seed=3, noise=0.2)


def _sklearn_rel_error(X: np.ndarray, solver: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NMF(5, solver=solver, init="nndsvda", max_iter=1000, tol=1e-6, random_state=0)
        model.fit(X)
    return model.reconstruction_err_ / np.linalg.norm(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule,sk", [("hals", "cd"), ("mu", "mu")])
@pytest.mark.parametrize("init", ["nndsvda", "random"])
def test_error_within_one_percent_of_sklearn(seeded_x, backend, rule, sk, init):
    ours = nmf(
        seeded_x,
        5,
        init=init,
        solver=make_solver(backend, rule=rule),
        max_iter=1000,
        tol=1e-6,
        seed=0,
    )
    ref = _sklearn_rel_error(seeded_x, sk)
    assert ours.rel_error <= 1.01 * ref
    assert ours.rel_error == pytest.approx(
        np.linalg.norm(seeded_x - ours.W @ ours.H) / np.linalg.norm(seeded_x), rel=1e-9
    )


def test_mu_from_nndsvda_reproduces_sklearn_exactly(seeded_x):
    # Same init, same rule, same order (W then H): the iterates should coincide.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NMF(5, solver="mu", init="nndsvda", max_iter=50, tol=0.0, random_state=0)
        W_sk = model.fit_transform(seeded_x)
    W0, H0 = nndsvd_init(seeded_x, 5, variant="nndsvda")
    ours = nmf(seeded_x, 5, solver=make_solver(rule="mu"), W0=W0, H0=H0, max_iter=50, tol=0.0)
    np.testing.assert_allclose(ours.W, W_sk, rtol=1e-6, atol=1e-9)


def test_sparse_and_dense_runs_agree(seeded_x):
    rng = np.random.default_rng(0)
    Xd = np.where(rng.random(seeded_x.shape) < 0.4, seeded_x, 0.0)
    a = nmf(Xd, 4, max_iter=30, tol=0.0, seed=1)
    b = nmf(sp.csr_matrix(Xd), 4, max_iter=30, tol=0.0, seed=1)
    np.testing.assert_allclose(b.W, a.W, rtol=1e-8, atol=1e-10)
    assert b.rel_error == pytest.approx(a.rel_error, rel=1e-9)


def test_same_seed_same_result_different_seed_different(seeded_x):
    a = nmf(seeded_x, 5, max_iter=20, tol=0.0, seed=5)
    b = nmf(seeded_x, 5, max_iter=20, tol=0.0, seed=np.random.default_rng(5))
    c = nmf(seeded_x, 5, max_iter=20, tol=0.0, seed=6)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.H, b.H)
    assert not np.array_equal(a.W, c.W)


def test_stops_on_tolerance_and_records_history(seeded_x):
    res = nmf(seeded_x, 5, max_iter=2000, tol=1e-3, check_every=10)
    assert res.converged and res.n_iter < 2000 and res.n_iter % 10 == 0
    assert len(res.history) == res.n_iter // 10 + 1
    assert all(b <= a for a, b in itertools.pairwise(res.history))
    assert res.history[-1] == pytest.approx(res.rel_error)


def test_iteration_cap_warns(seeded_x):
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=3"):
        res = nmf(seeded_x, 5, max_iter=3, tol=1e-12)
    assert res.n_iter == 3 and not res.converged


def test_tol_zero_runs_exactly_max_iter_without_warning(seeded_x):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = nmf(seeded_x, 5, max_iter=7, tol=0.0)
    assert res.n_iter == 7


def test_random_init_scale_and_determinism(seeded_x):
    W, H = random_init(seeded_x, 5, 0)
    W2, H2 = random_init(seeded_x, 5, np.random.default_rng(0))
    assert np.array_equal(W, W2) and np.array_equal(H, H2)
    assert (W >= 0).all() and (H >= 0).all()
    assert (W @ H).mean() == pytest.approx(seeded_x.mean(), rel=0.5)


@pytest.mark.parametrize("variant", ["nndsvd", "nndsvda"])
@pytest.mark.parametrize("sparse", [False, True])
def test_nndsvd_is_nonnegative_and_close_to_sklearn(seeded_x, variant, sparse):
    X = sp.csr_matrix(seeded_x) if sparse else seeded_x
    W, H = initialize(X, 5, variant)
    assert (W >= 0).all() and (H >= 0).all()
    if variant == "nndsvda":
        assert (W > 0).all()
    from sklearn.decomposition._nmf import _initialize_nmf

    Ws, Hs = _initialize_nmf(seeded_x, 5, init=variant, random_state=0)
    ours = np.linalg.norm(seeded_x - W @ H)
    theirs = np.linalg.norm(seeded_x - Ws @ Hs)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_nndsvd_large_matrix_uses_sparse_svd_deterministically():
    X = low_rank(600, 520, 3, seed=2)
    a = nndsvd_init(X, 3, seed=0)
    b = nndsvd_init(X, 3, seed=0)
    assert np.array_equal(a[0], b[0])
    from sklearn.decomposition._nmf import _initialize_nmf

    Ws, Hs = _initialize_nmf(X, 3, init="nndsvd", random_state=0)
    assert np.linalg.norm(X - a[0] @ a[1]) == pytest.approx(np.linalg.norm(X - Ws @ Hs), rel=1e-6)


def test_backend_name_as_solver(seeded_x):
    a = nmf(seeded_x, 3, solver="numpy", max_iter=5, tol=0.0)
    b = nmf(seeded_x, 3, max_iter=5, tol=0.0)
    assert np.array_equal(a.W, b.W)
