"""The NMF update rules, written once over a tiny array-ops adapter.

numpy and torch run the *same* sequence of operations (only the array type
differs), which is why the two backends agree to rounding. Every function here
returns new arrays or mutates only its own copies: callers' inputs are never
touched, so repeated calls on the same input give bit-identical output.

Objective: 1/2 ||X - W H||_F^2 + l1 (|W|_1 + |H|_1) + l2/2 (||W||_F^2 + ||H||_F^2),
with W, H >= 0. Sparse X enters only through X @ H^T and W^T X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# Denominator floor for multiplicative updates: keeps 0/0 at 0 without
# perturbing any denominator of realistic size.
EPS = 1e-16


@dataclass(frozen=True)
class Prepared:
    """X converted once for a backend: ``data`` is X, ``data_t`` is X^T (CSR) or None."""

    data: Any
    data_t: Any
    sparse: bool
    sqnorm: float


class Ops(Protocol):
    """The handful of primitives whose spelling differs between numpy and torch."""

    def relu(self, a: Any) -> Any: ...
    def axpy_relu_row(self, F: Any, k: int, step: Any, scale: float) -> None: ...
    def clone(self, a: Any) -> Any: ...
    def floor(self, a: Any, value: float) -> Any: ...
    def x_ht(self, P: Prepared, H: Any) -> Any: ...
    def wt_x(self, P: Prepared, W: Any) -> Any: ...
    def diag_list(self, S: Any) -> list[float]: ...
    def scalar(self, a: Any) -> float: ...
    def max_eig(self, S: Any) -> float: ...
    def residual_sqnorm(self, P: Prepared, W: Any, H: Any) -> float: ...


@dataclass(frozen=True)
class Reg:
    """L1 / L2 penalty weights, applied to both factors."""

    l1: float = 0.0
    l2: float = 0.0


def _mu(ops: Ops, F: Any, num: Any, gram: Any, reg: Reg, n_sweeps: int, left: bool) -> Any:
    """Multiplicative update of F given numerator and Gram matrix of the other factor.

    For H (left=True): H *= num / (gram H + l2 H + l1), num = W^T X, gram = W^T W.
    For W (left=False): W *= num / (W gram + l2 W + l1), num = X H^T, gram = H H^T.
    """
    for _ in range(n_sweeps):
        denom = gram @ F if left else F @ gram
        if reg.l2:
            denom = denom + reg.l2 * F
        if reg.l1:
            denom = denom + reg.l1
        F = F * num / ops.floor(denom, EPS)
    return F


def _hals_rows(ops: Ops, F: Any, num: Any, gram: Any, reg: Reg, n_sweeps: int) -> Any:
    """HALS on the rows of F (r x k): exact minimization over one row at a time.

    Row k: F_k <- max(0, F_k + (num_k - gram_k F - l1 - l2 F_k) / (gram_kk + l2)), in
    place on a private copy (one fused call per row: torch's per-op cost dominates); rows
    whose curvature is zero (a dead component) are left alone, as scikit-learn does.
    """
    F = ops.clone(F)
    diag = ops.diag_list(gram)
    for _ in range(n_sweeps):
        for k, g in enumerate(diag):
            hess = g + reg.l2
            if hess <= 0.0:
                continue
            step = num[k] - gram[k] @ F
            if reg.l2:
                step = step - reg.l2 * F[k]
            if reg.l1:
                step = step - reg.l1
            ops.axpy_relu_row(F, k, step, 1.0 / hess)
    return F


def update_h(ops: Ops, P: Prepared, W: Any, H: Any, rule: str, reg: Reg, n_sweeps: int) -> Any:
    """H-update for fixed W; W^T X and W^T W are computed once for all sweeps."""
    num = ops.wt_x(P, W)
    gram = W.T @ W
    if rule == "mu":
        return _mu(ops, H, num, gram, reg, n_sweeps, left=True)
    return _hals_rows(ops, H, num, gram, reg, n_sweeps)


def update_w(ops: Ops, P: Prepared, W: Any, H: Any, rule: str, reg: Reg, n_sweeps: int) -> Any:
    """W-update for fixed H; HALS works on W^T so that its rows are contiguous."""
    num = ops.x_ht(P, H)
    gram = H @ H.T
    if rule == "mu":
        return _mu(ops, W, num, gram, reg, n_sweeps, left=False)
    Wt = _hals_rows(ops, W.T, ops.clone(num.T), gram, reg, n_sweeps)
    return Wt.T


def w_gradient(ops: Ops, P: Prepared, W: Any, H: Any, reg: Reg) -> Any:
    """W (H H^T) - X H^T + l1 + l2 W: the gradient of the objective in W."""
    grad = W @ (H @ H.T) - ops.x_ht(P, H)
    if reg.l2:
        grad = grad + reg.l2 * W
    if reg.l1:
        grad = grad + reg.l1
    return grad


def w_lipschitz(ops: Ops, H: Any, reg: Reg) -> float:
    """Largest eigenvalue of H H^T plus l2: the gradient's Lipschitz constant in W."""
    return ops.max_eig(H @ H.T) + reg.l2


def linearized_w_step(
    ops: Ops, P: Prepared, W: Any, H: Any, consensus: Any, step: float, reg: Reg
) -> Any:
    """max(0, W - step * (grad_W + consensus)): ppdnmf's projected ADMM primal step."""
    return ops.relu(W - step * (w_gradient(ops, P, W, H, reg) + consensus))


def loss(ops: Ops, P: Prepared, W: Any, H: Any) -> float:
    """1/2 ||X - W H||_F^2; sparse X via ||X||^2 - 2 tr(W^T X H^T) + tr(W^T W H H^T)."""
    if not P.sparse:
        return 0.5 * ops.residual_sqnorm(P, W, H)
    cross = ops.scalar((W * ops.x_ht(P, H)).sum())
    quad = ops.scalar(((W.T @ W) * (H @ H.T)).sum())
    return 0.5 * max(P.sqnorm - 2.0 * cross + quad, 0.0)


def penalty(ops: Ops, W: Any, H: Any, reg: Reg) -> float:
    """The regularization part of the objective."""
    value = 0.0
    if reg.l1:
        value += reg.l1 * (ops.scalar(W.sum()) + ops.scalar(H.sum()))
    if reg.l2:
        value += 0.5 * reg.l2 * (ops.scalar((W * W).sum()) + ops.scalar((H * H).sum()))
    return value
