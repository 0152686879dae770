"""Pick a solver backend by name; torch is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from cipherfact.solvers.base import LocalSolver
from cipherfact.solvers.numpy_backend import NumpySolver

BACKENDS = ("numpy", "torch")
DEVICES = ("cpu", "cuda", "auto")
TORCH_MODULE = "torch"  # module name, a variable so tests can simulate its absence


class BackendUnavailableError(RuntimeError):
    """The requested backend or device is not installed here; the message says what to install."""


def import_torch() -> Any:
    """Import torch or raise an error that names the package to install."""
    try:
        torch = importlib.import_module(TORCH_MODULE)
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'torch' needs PyTorch, which is not installed: "
            "pip install torch (or pip install 'cipherfact[torch]'); "
            f"the numpy backend needs nothing more ({exc})"
        ) from None
    return torch


def resolve_device(device: str) -> str:
    """Map ``auto`` to cuda-if-available, and refuse ``cuda`` without a CUDA build or GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    torch = import_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = getattr(torch.version, "cuda", None)
        why = (
            f"this PyTorch {torch.__version__} is a CPU-only build"
            if build is None
            else f"PyTorch {torch.__version__} (CUDA {build}) sees no GPU"
        )
        raise BackendUnavailableError(
            f"device='cuda' requested but {why}: install a CUDA build of PyTorch "
            "(see https://pytorch.org/get-started/locally/) on a machine with an NVIDIA GPU, "
            "or use device='cpu' / 'auto'"
        )
    return device


def make_solver(backend: str = "numpy", device: str = "cpu", **kwargs: Any) -> LocalSolver:
    """Build a ``LocalSolver``; ``kwargs`` go to the backend (``rule``, ``l1``, ``l2``).

    numpy runs on the CPU only; torch runs on ``cpu``, ``cuda`` or ``auto``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if backend == "numpy":
        if device == "cuda":
            raise ValueError("device='cuda' needs backend='torch'; the numpy backend is CPU-only")
        return NumpySolver(**kwargs)
    from cipherfact.solvers.torch_backend import TorchSolver

    return TorchSolver(device=device, **kwargs)
