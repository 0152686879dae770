"""The torch solver on CUDA agrees with CPU (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.solvers import make_solver, nmf
from tests.solvers.conftest import HAS_TORCH

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not _cuda(), reason="needs CUDA")


@requires_cuda
@pytest.mark.parametrize("rule", ["mu", "hals"])
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_cuda_matches_cpu(problem, sparse_x, rule, kind):
    X = problem["X"] if kind == "dense" else sparse_x
    cpu = make_solver("torch", "cpu", rule=rule, l1=0.1, l2=0.2)
    gpu = make_solver("torch", "cuda", rule=rule, l1=0.1, l2=0.2)
    W, H, C = problem["W"], problem["H"], problem["C"]
    for name in ("update_h", "update_w"):
        np.testing.assert_allclose(
            getattr(gpu, name)(X, W, H, n_sweeps=2),
            getattr(cpu, name)(X, W, H, n_sweeps=2),
            rtol=1e-9,
            atol=1e-11,
        )
    np.testing.assert_allclose(
        gpu.linearized_w_step(X, W, H, C, 0.01),
        cpu.linearized_w_step(X, W, H, C, 0.01),
        rtol=1e-9,
        atol=1e-11,
    )
    assert gpu.loss(X, W, H) == pytest.approx(cpu.loss(X, W, H), rel=1e-10)
    assert gpu.w_lipschitz(H) == pytest.approx(cpu.w_lipschitz(H), rel=1e-10)


@requires_cuda
def test_cuda_is_deterministic_and_converges(problem):
    runs = [
        nmf(
            problem["X"],
            4,
            solver=make_solver("torch", "cuda", rule="hals"),
            max_iter=50,
            tol=0.0,
            seed=0,
        )
        for _ in range(2)
    ]
    assert np.array_equal(runs[0].W, runs[1].W)
    cpu = nmf(
        problem["X"],
        4,
        solver=make_solver("torch", "cpu", rule="hals"),
        max_iter=50,
        tol=0.0,
        seed=0,
    )
    assert runs[0].rel_error == pytest.approx(cpu.rel_error, rel=1e-8)


@requires_cuda
@pytest.mark.parametrize("rule", ["hals", "mu"])
def test_ppdnmf_with_cuda_solvers_matches_cpu(tmp_path, rule):
    """The whole protocol (every agent's local solver on the GPU) ends where the CPU
    torch run ends. Not bit for bit: cuBLAS and the CPU BLAS round float64 sums
    differently, and a last-bit difference can move a fixed-point rounding of an
    exchanged value by one step (2^-15), so the factors agree to 1e-3, the error to
    1e-5 relative; a wrong GPU path is off by far more."""
    from cipherfact.simulations import simulate as sim
    from cipherfact.simulations.scenario import load_scenario

    def run(device: str) -> tuple[dict, dict]:
        scenario = load_scenario(
            "ppdnmf-synthetic",
            [
                "outer_iters=5",
                "crypto.scheme=none",
                "solver.backend=torch",
                f"solver.device={device}",
                f"solver.rule={rule}",
            ],
        )
        out = tmp_path / device
        summary = sim.simulate(scenario, out, options=sim.SimOptions(progress=False))
        return summary, dict(np.load(out / "factors.npz"))

    (gpu, gpu_factors), (cpu, cpu_factors) = run("cuda"), run("cpu")
    assert gpu["rel_error"] == pytest.approx(cpu["rel_error"], rel=1e-5)
    assert gpu_factors.keys() == cpu_factors.keys()
    for name in gpu_factors:
        np.testing.assert_allclose(gpu_factors[name], cpu_factors[name], rtol=0, atol=1e-3)
