"""cipherfact: privacy-preserving distributed matrix factorization.

Agents each hold a private block of a matrix and factorize it together; every
value that crosses the network is encrypted (Paillier for ppdnmf and FedMF,
CKKS for csr_fhe_mf). See README.md for the threat model.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DistributedNMF", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pull in the simulation stack.
    if name == "DistributedNMF":
        from cipherfact.simulations.estimator import DistributedNMF

        return DistributedNMF
    raise AttributeError(f"module 'cipherfact' has no attribute {name!r}")
