"""Plaintext references that ppdnmf is measured against.

* ``centralized_nmf``: one party holds all of X and runs the same block
  coordinate descent (same solver, same rank, same iteration budget, same
  starting point) — the accuracy target.
* ``decentralized_nmf_plain``: the ppdnmf algorithm with the same graph and the
  same edge weights (secagg: the public penalty; pairwise: the same private
  weights, without the replies' noise), computed directly in floating point without any
  encryption or fixed-point encoding: what the protocol would give with no
  privacy at all (and no quantization).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cipherfact.protocols.ppdnmf import PPDNMFConfig, round_weights
from cipherfact.solvers.base import LocalSolver


@dataclass
class ReferenceResult:
    W: list[np.ndarray]
    H: list[np.ndarray]
    rel_error: float
    history: list[float] = field(default_factory=list)  # rel_error after each outer iteration


def _power_of_two_above(arrays: Sequence[np.ndarray]) -> float:
    """The power of two just above the largest |entry| (1.0 for all-zero or non-finite):
    dividing by it is exact and brings every entry into [-1, 1]."""
    largest = max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)
    if largest > 0.0 and np.isfinite(largest):
        return float(np.ldexp(1.0, int(np.frexp(largest)[1])))
    return 1.0


def relative_error(
    blocks: Sequence[np.ndarray], Ws: Sequence[np.ndarray], Hs: Sequence[np.ndarray]
) -> float:
    """||X - W H||_F / ||X||_F over column blocks, each with its own W_i.

    Scale-safe: X and H are divided by the power of two just above X's largest
    |value|, and the residual by the one above its own largest |value|, before
    anything is squared. Powers of two divide exactly, so wherever the plain
    formula is finite this gives the same bits, and data of 1e-300 (whose squares
    underflow to 0) or 1e200 (overflow to inf) get the relative error of the same
    data at scale 1. All-zero data: nan (undefined) unless the fit is exact too.
    """
    pairs = list(zip(blocks, Ws, Hs, strict=True))
    sx = _power_of_two_above(blocks)
    residuals = [X / sx - W @ (H / sx) for X, W, H in pairs]
    sr = _power_of_two_above(residuals)
    num = sum(float(np.linalg.norm(R / sr) ** 2) for R in residuals)
    den = sum(float(np.linalg.norm(X / sx) ** 2) for X in blocks)
    if den > 0:
        return float(np.sqrt(num / den)) * sr
    return 0.0 if num == 0 else float("nan")


def centralized_nmf(
    X: np.ndarray,
    W0: np.ndarray,
    H0: np.ndarray,
    outer_iters: int,
    solver: LocalSolver,
    *,
    h_sweeps: int = 1,
    w_sweeps: int = 1,
) -> ReferenceResult:
    """Alternate H and W updates on the whole of X from (W0, H0)."""
    W, H = W0.copy(), H0.copy()
    history = []
    for _ in range(outer_iters):
        H = solver.update_h(X, W, H, n_sweeps=h_sweeps)
        W = solver.update_w(X, W, H, n_sweeps=w_sweeps)
        history.append(relative_error([X], [W], [H]))
    return ReferenceResult([W], [H], history[-1], history)


def decentralized_nmf_plain(
    blocks: Sequence[np.ndarray],
    neighbors: Sequence[tuple[int, ...]],
    config: PPDNMFConfig,
    H0: Sequence[np.ndarray],
    weight_seeds: Sequence[int],
    solver: LocalSolver,
) -> ReferenceResult:
    """ppdnmf's arithmetic in float64, all agents at once, no crypto."""
    n = len(blocks)
    Ws = [config.initial_w(blocks[0].shape[0]) for _ in range(n)]
    Hs = [h.copy() for h in H0]
    alphas = [np.zeros_like(Ws[0]) for _ in range(n)]
    scale = config.weight_scale()

    drawn: dict[int, list[dict[int, int]]] = {}  # round -> each agent's weights

    def rho(i: int, j: int, k: int) -> float:
        if config.exchange == "secagg":
            return config.penalty
        if k not in drawn:  # once per round and agent, as the agents draw them
            drawn.clear()
            drawn[k] = [
                round_weights(weight_seeds[a], k, neighbors[a], config.weight_bits)
                for a in range(n)
            ]
        weights = drawn[k]
        return weights[i][j] * weights[j][i] * scale

    history = []
    k = 0
    for _ in range(config.outer_iters):
        steps = []
        for i in range(n):
            Hs[i] = solver.update_h(blocks[i], Ws[i], Hs[i], n_sweeps=config.h_sweeps)
            steps.append(
                1.0 / (solver.w_lipschitz(Hs[i]) + 2.0 * config.penalty * len(neighbors[i]))
            )
        for _ in range(config.inner_iters):
            new = []
            for i in range(n):
                d = np.zeros_like(Ws[i])
                for j in neighbors[i]:
                    d += rho(i, j, k) * (Ws[j] - Ws[i])
                if k > 0:
                    alphas[i] -= d
                new.append(
                    solver.linearized_w_step(blocks[i], Ws[i], Hs[i], alphas[i] - d, steps[i])
                )
            Ws = new
            k += 1
        history.append(relative_error(blocks, Ws, Hs))
    return ReferenceResult(Ws, Hs, history[-1], history)
