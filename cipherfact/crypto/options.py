"""Options that pick Paillier's fast paths (each can be switched off for testing)."""

from __future__ import annotations

from dataclasses import dataclass

from cipherfact.crypto.djn import MIN_DJN_EXPONENT_BITS

__all__ = ["FAST_PATHS", "PaillierOptions"]

#: values of ``PaillierOptions.fast_path``
FAST_PATHS = ("auto", "ifma", "gmpy2")


@dataclass(frozen=True)
class PaillierOptions:
    """Which fast paths a ``PaillierScheme`` uses; the defaults are the fast, safe ones.

    * ``packing``: many fixed-point slots per plaintext (False: one value each).
    * ``use_gmpy2``: gmpy2 ``mpz``/``powmod`` arithmetic (False: Python ints).
    * ``crt``: with the secret key, encrypt (r**n mod p**2, q**2) and decrypt by CRT.
    * ``djn``: short-exponent randomness ``h_s**a`` (DJN assumption, see ``djn``).
    * ``djn_public``: also use DJN when only the public key is held; off by default
      because the key owner knows the factorization and full ``r**n`` is what
      hides a rerandomized reply's origin from it.
    * ``djn_exponent_bits`` / ``djn_window_bits``: exponent length, table window.
    * ``djn_wide_tables``: build this key's tables at a wider window than
      ``djn_window_bits`` while they fit the process's budget
      (``djn.wide_window``); for keys used for a whole run.
    * ``processes``: worker processes for bulk randomness and decryption (1: none).
    * ``parallel_min``: smallest batch (packed integers) worth sending to workers.
    * ``fast_path``: bulk modular exponentiation (decryption, full-length ``r**n``
      randomness) through Intel's multi-buffer library on AVX-512 IFMA CPUs
      (``cipherfact.crypto.ifma``; ``pip install cipherfact[fast]``). ``"auto"``:
      when the library loads, ``use_gmpy2`` is on and a batch fills enough lanes
      (``ifma.AUTO_MIN_LANES``), else the scalar path; ``"ifma"``: always, and
      an error when it cannot run here; ``"gmpy2"``: never. Results are identical.
    * ``ifma_threads``: threads for the library calls of one bulk operation (they
      release the GIL, so a batch of 16+ exponentiations uses two cores); 0:
      ``ifma.auto_threads()`` (up to 2, within this process's CPU affinity).
    """

    packing: bool = True
    use_gmpy2: bool = True
    crt: bool = True
    djn: bool = True
    djn_public: bool = False
    djn_exponent_bits: int = 448
    djn_window_bits: int = 6
    djn_wide_tables: bool = False
    processes: int = 1
    parallel_min: int = 8
    fast_path: str = "auto"
    ifma_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("packing", "use_gmpy2", "crt", "djn", "djn_public", "djn_wide_tables"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in (
            "djn_exponent_bits",
            "djn_window_bits",
            "processes",
            "parallel_min",
            "ifma_threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not MIN_DJN_EXPONENT_BITS <= self.djn_exponent_bits <= 4096:
            raise ValueError(
                f"djn_exponent_bits must be in [{MIN_DJN_EXPONENT_BITS}, 4096], "
                f"got {self.djn_exponent_bits}"
            )
        if not 1 <= self.djn_window_bits <= 12:
            raise ValueError(f"djn_window_bits must be in [1, 12], got {self.djn_window_bits}")
        if not 1 <= self.processes <= 256:
            raise ValueError(f"processes must be in [1, 256], got {self.processes}")
        if self.parallel_min < 1:
            raise ValueError(f"parallel_min must be >= 1, got {self.parallel_min}")
        if not 0 <= self.ifma_threads <= 64:
            raise ValueError(f"ifma_threads must be in [0, 64], got {self.ifma_threads}")
        if self.fast_path not in FAST_PATHS:
            raise ValueError(f"fast_path must be one of {FAST_PATHS}, got {self.fast_path!r}")
