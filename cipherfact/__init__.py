"""cipherfact: privacy-preserving distributed matrix factorization.

Agents each hold a private block of a matrix and factorize it together; every
value that crosses the network is encrypted (Paillier for ppdnmf and FedMF,
CKKS for csr_fhe_mf). See README.md for the threat model.
"""

__version__ = "0.1.0"
