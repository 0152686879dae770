"""Every boundary check, through the public entry points, with its message."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cipherfact.solvers import initialize, make_solver, nmf
from cipherfact.solvers.init import as_generator
from cipherfact.solvers.validation import (
    as_matrix,
    check_nonnegative_scalar,
    check_positive_int,
    check_rank,
)

X = np.ones((4, 3))
W = np.ones((4, 2))
H = np.ones((2, 3))


def _with(value: float, where=(1, 2)) -> np.ndarray:
    A = X.copy()
    A[where] = value
    return A


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (_with(-0.5), ValueError, r"Negative values in X \(min -0\.5\)"),
        (_with(np.nan), ValueError, r"NaN or infinite values in X \(1 entries, first nan\)"),
        (_with(np.inf), ValueError, r"NaN or infinite values in X \(1 entries, first inf\)"),
        (sp.csr_matrix(_with(-2.0)), ValueError, r"Negative values in X \(min -2\)"),
        (sp.csr_matrix(_with(np.nan)), ValueError, r"NaN or infinite values in X"),
        (np.ones(5), ValueError, r"X must be 2-D, got 1-D with shape \(5,\)"),
        (np.ones((0, 3)), ValueError, r"X is empty \(shape \(0, 3\)\)"),
        (sp.csr_matrix((3, 0)), ValueError, r"X is empty \(shape \(3, 0\)\)"),
        (
            sp.coo_matrix(X),
            TypeError,
            r"X must be a dense array or scipy CSR, got sparse format 'coo'",
        ),
        ("abc", TypeError, r"X must be a 2-D array or scipy CSR, got str"),
        ([["a", "b"]], TypeError, r"X must be numeric"),
    ],
)
def test_bad_x_in_solver_methods(bad, exc, match):
    with pytest.raises(exc, match=match):
        make_solver().update_h(bad, W, H)


@pytest.mark.parametrize(
    "Wb,Hb,match",
    [
        (np.ones((5, 2)), H, r"W has shape \(5, 2\); expected \(4, r\) for X of shape \(4, 3\)"),
        (np.ones(4), H, r"W has shape \(4,\); expected \(4, r\)"),
        (W, np.ones((3, 3)), r"H has shape \(3, 3\); expected \(2, 3\)"),
        (-W, H, r"Negative values in W \(min -1\)"),
        (W, -2 * H, r"Negative values in H \(min -2\)"),
        (W * np.nan, H, r"NaN or infinite values in W"),
        (W, H * np.inf, r"NaN or infinite values in H"),
        (np.ones((4, 4)), np.ones((4, 3)), r"W's rank must be in \[1, min\(m, n\) = 3\], got 4"),
        (np.ones((4, 0)), np.ones((0, 3)), r"W's rank must be in \[1, min\(m, n\) = 3\], got 0"),
    ],
)
def test_bad_factors(Wb, Hb, match):
    with pytest.raises(ValueError, match=match):
        make_solver().update_w(X, Wb, Hb)


def test_sparse_factor_refused():
    with pytest.raises(TypeError, match="W must be a dense array, got sparse"):
        make_solver().loss(X, sp.csr_matrix(W), H)


def test_bad_consensus_and_step():
    s = make_solver()
    with pytest.raises(ValueError, match=r"consensus has shape \(4, 3\); expected \(4, 2\)"):
        s.linearized_w_step(X, W, H, np.ones((4, 3)), 0.1)
    with pytest.raises(ValueError, match=r"NaN or infinite values in consensus"):
        s.linearized_w_step(X, W, H, W * np.nan, 0.1)
    with pytest.raises(ValueError, match=r"step must be finite and > 0, got 0.0"):
        s.linearized_w_step(X, W, H, W, 0.0)
    with pytest.raises(ValueError, match=r"step must be finite and > 0, got -1.0"):
        s.linearized_w_step(X, W, H, W, -1)
    with pytest.raises(ValueError, match=r"H must be 2-D, got shape \(3,\)"):
        s.w_lipschitz(np.ones(3))
    with pytest.raises(ValueError, match=r"Negative values in H"):
        s.w_lipschitz(-H)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"rule": "als"}, ValueError, r"rule must be one of \('mu', 'hals'\), got 'als'"),
        ({"l1": -1.0}, ValueError, r"l1 must be finite and >= 0, got -1.0"),
        ({"l2": float("nan")}, ValueError, r"l2 must be finite and >= 0, got nan"),
        ({"l2": "1"}, TypeError, r"l2 must be a real number, got str '1'"),
    ],
)
def test_bad_solver_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_solver(**kwargs)


def test_bad_sweeps():
    with pytest.raises(ValueError, match="n_sweeps must be >= 1, got 0"):
        make_solver().update_h(X, W, H, n_sweeps=0)
    with pytest.raises(TypeError, match=r"n_sweeps must be an integer, got float 1\.5"):
        make_solver().update_w(X, W, H, n_sweeps=1.5)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"n_components": 0}, ValueError, r"n_components must be in \[1, min\(m, n\) = 3\], got 0"),
        ({"n_components": 4}, ValueError, r"n_components must be in \[1, min\(m, n\) = 3\], got 4"),
        ({"n_components": 2.0}, TypeError, r"n_components must be an integer, got float 2.0"),
        ({"n_components": True}, TypeError, r"n_components must be an integer, got bool"),
        ({"max_iter": 0}, ValueError, r"max_iter must be >= 1, got 0"),
        ({"check_every": -1}, ValueError, r"check_every must be >= 1, got -1"),
        ({"tol": -1e-3}, ValueError, r"tol must be finite and >= 0, got -0.001"),
        (
            {"init": "svd"},
            ValueError,
            r"init must be one of \('random', 'nndsvd', 'nndsvda'\), got 'svd'",
        ),
        ({"seed": -1}, ValueError, r"seed must be >= 0, got -1"),
        ({"seed": None}, TypeError, r"seed must be an int or numpy.random.Generator, got NoneType"),
        ({"solver": 3}, TypeError, r"solver must be a LocalSolver or backend name, got int"),
        ({"solver": "jax"}, ValueError, r"backend must be one of \('numpy', 'torch'\), got 'jax'"),
        ({"W0": W}, ValueError, r"W0 and H0 must be given together \(got only one\)"),
        (
            {"W0": np.ones((4, 3)), "H0": np.ones((3, 3))},
            ValueError,
            r"W0 has rank 3; expected n_components = 2",
        ),
    ],
)
def test_bad_nmf_arguments(kwargs, exc, match):
    args = {"n_components": 2, **kwargs}
    with pytest.raises(exc, match=match):
        nmf(X, **args)


def test_all_zero_x_refused():
    with pytest.raises(ValueError, match=r"X is all zeros \(norm 0\)"):
        nmf(np.zeros((4, 3)), 2)


def test_negative_x_refused_by_driver_and_init():
    with pytest.raises(ValueError, match=r"Negative values in X \(min -0.5\)"):
        nmf(_with(-0.5), 2)
    with pytest.raises(ValueError, match=r"Negative values in X \(min -0.5\)"):
        initialize(_with(-0.5), 2)


def test_low_level_checks():
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(m, n\) = 2\], got 3"):
        check_rank(3, 2, 5, name="rank")
    with pytest.raises(TypeError, match="epochs must be an integer, got str"):
        check_positive_int("3", "epochs")
    with pytest.raises(ValueError, match=r"lr must be finite and > 0, got inf"):
        check_nonnegative_scalar(float("inf"), "lr", strict=True)
    with pytest.raises(TypeError, match="R must be a 2-D array or scipy CSR, got NoneType"):
        as_matrix(None, "R")
    with pytest.raises(ValueError, match=r"Negative values in block 3"):
        as_matrix(-X, "block 3")
    assert as_matrix(-X, "X", nonnegative=False).min() == -1
    with pytest.raises(TypeError, match=r"seed must be an int or numpy\.random\.Generator"):
        as_generator(np.random.RandomState(0))
