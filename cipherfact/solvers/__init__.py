"""Local math: NMF / MF updates on numpy and torch (cpu|cuda), dense or CSR input.

No I/O and no crypto here. ``make_solver`` picks a backend by name; ``nmf`` is
the centralized reference driver; ``masked_nmf`` and ``fit_ratings_mf`` handle
missing entries and rating data.
"""

from cipherfact.solvers.base import LocalSolver, Matrix
from cipherfact.solvers.factory import BackendUnavailableError, make_solver
from cipherfact.solvers.init import initialize, nndsvd_init, random_init
from cipherfact.solvers.masked import (
    masked_loss,
    masked_nmf,
    masked_update_h,
    masked_update_w,
    observed_entries,
)
from cipherfact.solvers.nmf import NMFResult, nmf
from cipherfact.solvers.numpy_backend import NumpySolver
from cipherfact.solvers.ratings import MFResult, fit_ratings_mf, predict, rmse

__all__ = [
    "BackendUnavailableError",
    "ConvergenceWarning",
    "LocalSolver",
    "MFResult",
    "Matrix",
    "NMFResult",
    "NumpySolver",
    "fit_ratings_mf",
    "initialize",
    "make_solver",
    "masked_loss",
    "masked_nmf",
    "masked_update_h",
    "masked_update_w",
    "nmf",
    "nndsvd_init",
    "observed_entries",
    "predict",
    "random_init",
    "rmse",
]


def __getattr__(name: str) -> object:
    """Expose ``TorchSolver`` and ``ConvergenceWarning`` (scikit-learn's) lazily, so
    importing this package imports neither torch nor scikit-learn (about 0.5 s,
    which every Ray actor paid at start)."""
    if name == "TorchSolver":
        from cipherfact.solvers.torch_backend import TorchSolver

        return TorchSolver
    if name == "ConvergenceWarning":
        from sklearn.exceptions import ConvergenceWarning

        return ConvergenceWarning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
