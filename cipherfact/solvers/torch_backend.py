"""torch backend (cpu or cuda), float64 throughout so it matches numpy to rounding.

torch is imported when a ``TorchSolver`` is built, never at module import, so
the rest of the package works without it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.solvers import _kernels as kern
from cipherfact.solvers._kernel_solver import KernelSolver
from cipherfact.solvers.base import Matrix
from cipherfact.solvers.factory import import_torch, resolve_device


class TorchOps:
    """torch spellings of the kernel primitives; sparse X is a torch CSR tensor."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def relu(self, a: Any) -> Any:
        return self.torch.clamp_min(a, 0.0)

    def axpy_relu_row(self, F: Any, k: int, step: Any, scale: float) -> None:
        F[k].add_(step, alpha=scale).clamp_(min=0.0)

    def clone(self, a: Any) -> Any:
        return a.clone(memory_format=self.torch.contiguous_format)

    def floor(self, a: Any, value: float) -> Any:
        return self.torch.clamp_min(a, value)

    def x_ht(self, P: kern.Prepared, H: Any) -> Any:
        if P.sparse:
            return P.data @ H.T.contiguous()
        # (H X^T)^T: torch's CPU GEMM is ~2x faster this way round than X @ H^T.
        return (H @ P.data.T).T.contiguous()

    def wt_x(self, P: kern.Prepared, W: Any) -> Any:
        if P.sparse:
            return (P.data_t @ W.contiguous()).T.contiguous()
        return W.T @ P.data

    def diag_list(self, S: Any) -> list[float]:
        return [float(v) for v in self.torch.diagonal(S).cpu().tolist()]

    def scalar(self, a: Any) -> float:
        return float(a.item()) if hasattr(a, "item") else float(a)

    def max_eig(self, S: Any) -> float:
        return float(self.torch.linalg.eigvalsh(S)[-1].item())

    def residual_sqnorm(self, P: kern.Prepared, W: Any, H: Any) -> float:
        R = P.data - W @ H
        return float((R * R).sum().item())


class TorchSolver(KernelSolver):
    """The numpy solver's rules on torch tensors; numpy float64 in, numpy float64 out.

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available).
    Results are deterministic for a fixed device and thread count; cuda
    results agree with cpu to rounding, not bit for bit.
    """

    name = "torch"

    def __init__(
        self, rule: str = "mu", *, device: str = "cpu", l1: float = 0.0, l2: float = 0.0
    ) -> None:
        super().__init__(rule, l1=l1, l2=l2)
        self._torch = import_torch()
        self.device = resolve_device(device)
        self._ops = TorchOps(self._torch)

    @property
    def ops(self) -> kern.Ops:
        return self._ops

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, device={self.device!r})"

    def _csr_tensor(self, X: sp.csr_matrix) -> Any:
        torch = self._torch
        with warnings.catch_warnings():
            # torch labels CSR support "beta"; the ops used here are stable.
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(X.indptr.astype(np.int64)),
                torch.from_numpy(X.indices.astype(np.int64)),
                torch.from_numpy(np.array(X.data, dtype=np.float64)),
                size=X.shape,
                dtype=torch.float64,
                device=self.device,
                check_invariants=False,
            )

    def _prepare_checked(self, X: Matrix) -> kern.Prepared:
        if sp.issparse(X):
            csr = sp.csr_matrix(X)
            csr.sort_indices()
            xt = csr.T.tocsr()
            xt.sort_indices()
            sqnorm = float(csr.data @ csr.data)
            return kern.Prepared(self._csr_tensor(csr), self._csr_tensor(xt), True, sqnorm)
        dense = np.asarray(X, dtype=np.float64)
        sqnorm = float(np.einsum("ij,ij->", dense, dense))
        return kern.Prepared(self._to_backend(dense), None, False, sqnorm)

    def _to_backend(self, a: np.ndarray) -> Any:
        return self._torch.tensor(
            np.ascontiguousarray(a), dtype=self._torch.float64, device=self.device
        )

    def _to_numpy(self, a: Any) -> np.ndarray:
        return np.array(a.detach().cpu().numpy(), dtype=np.float64, order="C", copy=True)
