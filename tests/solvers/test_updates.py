"""Contract tests of every LocalSolver update over both backends and both input kinds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from cipherfact.solvers import make_solver
from tests.solvers.conftest import BACKENDS, HAS_TORCH

RULES = ["mu", "hals"]
REGS = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.2, 0.4)]


def _run(solver, method: str, X, p):
    if method == "update_h":
        return solver.update_h(X, p["W"], p["H"], n_sweeps=2)
    if method == "update_w":
        return solver.update_w(X, p["W"], p["H"], n_sweeps=2)
    if method == "w_gradient":
        return solver.w_gradient(X, p["W"], p["H"])
    if method == "linearized_w_step":
        return solver.linearized_w_step(X, p["W"], p["H"], p["C"], 0.01)
    return np.array([solver.loss(X, p["W"], p["H"]), solver.objective(X, p["W"], p["H"])])


METHODS = ["update_h", "update_w", "w_gradient", "linearized_w_step", "loss"]


@pytest.mark.skipif(not HAS_TORCH, reason="no torch")
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("l1,l2", REGS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_numpy_and_torch_agree(problem, sparse_x, rule, l1, l2, method, kind):
    X = problem["X"] if kind == "dense" else sparse_x
    ref = _run(make_solver("numpy", rule=rule, l1=l1, l2=l2), method, X, problem)
    got = _run(make_solver("torch", "cpu", rule=rule, l1=l1, l2=l2), method, X, problem)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not HAS_TORCH, reason="no torch")
def test_lipschitz_agrees_across_backends(problem):
    a = make_solver("numpy", l2=0.5).w_lipschitz(problem["H"])
    b = make_solver("torch", l2=0.5).w_lipschitz(problem["H"])
    assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("l1,l2", REGS[:2])
@pytest.mark.parametrize("method", METHODS)
def test_dense_and_csr_agree(problem, sparse_x, backend, rule, l1, l2, method):
    solver = make_solver(backend, rule=rule, l1=l1, l2=l2)
    dense = _run(solver, method, problem["Xs_dense"], problem)
    sparse = _run(solver, method, sparse_x, problem)
    np.testing.assert_allclose(sparse, dense, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_repeated_calls_are_bit_identical(problem, sparse_x, backend, rule, kind):
    X = problem["X"] if kind == "dense" else sparse_x
    outs = []
    for _ in range(2):  # a fresh solver too, so nothing cached can hide a difference
        solver = make_solver(backend, rule=rule, l2=0.1)
        W = solver.update_w(X, problem["W"], problem["H"])
        outs.append((W, solver.update_h(X, W, problem["H"])))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", RULES)
def test_inputs_are_not_modified(problem, backend, rule):
    W, H = problem["W"].copy(), problem["H"].copy()
    solver = make_solver(backend, rule=rule)
    solver.update_w(problem["X"], W, H, n_sweeps=3)
    solver.update_h(problem["X"], W, H, n_sweeps=3)
    assert np.array_equal(W, problem["W"]) and np.array_equal(H, problem["H"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("l1,l2", REGS)
def test_updates_decrease_the_objective(problem, backend, rule, l1, l2):
    solver = make_solver(backend, rule=rule, l1=l1, l2=l2)
    X, W, H = problem["X"], problem["W"], problem["H"]
    values = [solver.objective(X, W, H)]
    for _ in range(5):
        W = solver.update_w(X, W, H)
        values.append(solver.objective(X, W, H))
        H = solver.update_h(X, W, H)
        values.append(solver.objective(X, W, H))
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    assert values[-1] < 0.5 * values[0]
    assert (W >= 0).all() and (H >= 0).all()


def test_hals_h_row_is_the_exact_minimizer(problem):
    # One sweep of HALS on rank 1 is the closed-form nonnegative least squares.
    X, W = problem["X"], problem["W"][:, :1]
    H = make_solver(rule="hals", l2=0.2).update_h(X, W, np.ones((1, 24)))
    expected = np.maximum(W.T @ X / (W.T @ W + 0.2), 0)
    np.testing.assert_allclose(H, expected, rtol=1e-12)


@pytest.mark.parametrize("l1,l2", REGS)
def test_gradient_and_linearized_step_equal_the_formula(problem, sparse_x, l1, l2):
    W, H, C = problem["W"], problem["H"], problem["C"]
    Xd = problem["Xs_dense"]
    grad = W @ H @ H.T - Xd @ H.T + l1 + l2 * W
    solver = make_solver(l1=l1, l2=l2)
    np.testing.assert_allclose(solver.w_gradient(sparse_x, W, H), grad, rtol=1e-12, atol=1e-12)
    step = 0.02
    expected = np.maximum(W - step * (grad + C), 0.0)
    got = solver.linearized_w_step(sparse_x, W, H, C, step)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert (got == 0).any() and (got > 0).any()  # the projection is exercised
    lip = np.linalg.eigvalsh(H @ H.T)[-1] + l2
    assert solver.w_lipschitz(H) == pytest.approx(lip, rel=1e-12)


def test_gradient_matches_finite_differences(problem):
    solver = make_solver(l2=0.3)
    X, W, H = problem["X"], problem["W"], problem["H"]
    grad = solver.w_gradient(X, W, H)
    eps = 1e-6
    for i, j in [(0, 0), (5, 2), (29, 3)]:
        E = np.zeros_like(W)
        E[i, j] = eps
        numeric = (solver.objective(X, W + E, H) - solver.objective(X, W - E, H)) / (2 * eps)
        assert numeric == pytest.approx(grad[i, j], rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_loss_uses_the_trace_identity(problem, sparse_x, backend):
    W, H = problem["W"], problem["H"]
    direct = 0.5 * np.linalg.norm(problem["Xs_dense"] - W @ H) ** 2
    assert make_solver(backend).loss(sparse_x, W, H) == pytest.approx(direct, rel=1e-12)


def test_csr_array_and_int_input_are_accepted(problem):
    solver = make_solver(rule="hals")
    Xi = np.rint(problem["X"]).astype(np.int64)
    a = solver.update_h(Xi, problem["W"], problem["H"])
    b = solver.update_h(sp.csr_array(Xi), problem["W"], problem["H"])
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_linearized_step_from_stationary_point_stays():
    # At a nonnegative exact factorization with zero consensus the step is a fixed point.
    rng = np.random.default_rng(1)
    W, H = rng.random((6, 2)), rng.random((2, 5))
    X = W @ H
    out = make_solver().linearized_w_step(X, W, H, np.zeros_like(W), 0.1)
    np.testing.assert_allclose(out, W, atol=1e-14)
