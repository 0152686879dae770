"""cipherfact: privacy-preserving distributed matrix factorization.

Agents each hold a private block of a matrix and factorize it together; every
value that crosses the network is encrypted (Paillier for ppdnmf and FedMF,
CKKS for csr_fhe_mf). See README.md for the threat model.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "DistributedNMF",
    "PrivateRatingsMF",
    "RatingsModel",
    "__version__",
    "load_scenario",
    "simulate",
]

# Lazy: importing the package must not pull in the simulation stack.
_LAZY = {
    "DistributedNMF": "cipherfact.protocols.ppdnmf.estimator",
    "PrivateRatingsMF": "cipherfact.protocols.ratings.estimator",
    "RatingsModel": "cipherfact.protocols.ratings.model",
    "load_scenario": "cipherfact.simulations.scenario",
    "simulate": "cipherfact.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cipherfact' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
