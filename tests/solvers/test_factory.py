"""Backend selection and the errors for a missing torch or CUDA."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cipherfact.solvers import (
    BackendUnavailableError,
    LocalSolver,
    NumpySolver,
    factory,
    make_solver,
)
from tests.solvers.conftest import HAS_TORCH


def test_numpy_is_the_default():
    solver = make_solver()
    assert isinstance(solver, NumpySolver) and isinstance(solver, LocalSolver)
    assert solver.rule == "mu" and "NumpySolver(rule='mu'" in repr(solver)


@pytest.mark.parametrize(
    "backend,device,match",
    [
        ("jax", "cpu", r"backend must be one of \('numpy', 'torch'\), got 'jax'"),
        ("numpy", "tpu", r"device must be one of \('cpu', 'cuda', 'auto'\), got 'tpu'"),
        ("numpy", "cuda", r"device='cuda' needs backend='torch'; the numpy backend is CPU-only"),
    ],
)
def test_bad_backend_or_device(backend, device, match):
    with pytest.raises(ValueError, match=match):
        make_solver(backend, device)


def test_missing_torch_names_the_install(monkeypatch):
    monkeypatch.setattr(factory, "TORCH_MODULE", "torch_is_not_installed_here")
    with pytest.raises(BackendUnavailableError, match=r"needs PyTorch.*pip install torch"):
        make_solver("torch", "cpu")


@pytest.mark.skipif(not HAS_TORCH, reason="no torch")
def test_cuda_without_gpu_names_a_cuda_build():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailableError, match=r"install a CUDA build of PyTorch"):
        make_solver("torch", "cuda")


@pytest.mark.skipif(not HAS_TORCH, reason="no torch")
def test_auto_picks_an_available_device():
    import torch

    solver = make_solver("torch", "auto", rule="hals")
    assert solver.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "device=" in repr(solver)


def test_numpy_path_works_without_torch():
    # A fresh interpreter in which importing torch fails: the numpy path must
    # not import it, and asking for torch must give the friendly error.
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from cipherfact.solvers import make_solver, nmf
        X = np.random.default_rng(0).random((8, 6))
        res = nmf(X, 2, max_iter=5, tol=0.0)
        assert "torch" not in sys.modules, "torch was imported"
        try:
            make_solver("torch")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.startswith("BackendUnavailableError")
    assert "pip install torch" in out.stdout


def test_torch_solver_is_exported_lazily():
    import cipherfact.solvers as solvers

    if HAS_TORCH:
        assert solvers.TorchSolver.name == "torch"
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = solvers.Nope


def test_numpy_solver_caches_x_by_identity():
    X = np.random.default_rng(0).random((5, 4))
    W, H = np.ones((5, 2)), np.ones((2, 4))
    solver = make_solver()
    solver.update_h(X, W, H)
    first = solver._cached_prepared
    solver.update_w(X, W, H)
    assert solver._cached_prepared is first
    solver.update_w(X.copy(), W, H)
    assert solver._cached_prepared is not first
