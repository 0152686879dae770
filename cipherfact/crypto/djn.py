"""Fixed-base windowed exponentiation for Damgard-Jurik-Nielsen randomness.

DJN replaces Paillier's ``r**n mod n**2`` (a full-length exponent) with
``h_s**a`` for a public ``h_s = h**n mod n**2`` and a *short* secret exponent
``a`` (default 448 bits, floor 2*kappa = 256). With the base fixed we
precompute ``h_s**(j * 2**(w*i))`` once, and each exponentiation becomes about
``bits / w`` modular multiplications instead of ~1.2 * log2(n) squarings.

Security assumption (weaker than plain DCR): ``h_s**a`` with a short ``a`` is
computationally indistinguishable from a uniform n-th residue (the DJN /
short-exponent assumption). It is used for encryptions by anyone, but by
default *not* for a public-key holder's rerandomization: the key owner knows
the factorization, so against it only a full-length ``r**n`` hides which
ciphertext a reply was derived from (see ``PaillierOptions.djn_public``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "MIN_DJN_EXPONENT_BITS",
    "WIDE_TABLE_BUDGET",
    "WIDE_WINDOW",
    "FixedBaseTable",
    "table_bytes",
    "wide_window",
]

MIN_DJN_EXPONENT_BITS = 256

#: bytes of widened tables one process may hold (``wide_window``): a 9-bit window
#: takes ~0.80x the time per factor of a 7-bit one, at 12.5 MB instead of 4 MB
#: per 2048-bit key (``benchmarks/djn_window.py``); keys past the budget keep
#: their options' window, so a process holding hundreds of keys stays bounded
WIDE_TABLE_BUDGET = 160 * 2**20
#: widest window ``wide_window`` picks
WIDE_WINDOW = 9

_wide_lock = threading.Lock()
_wide_bytes_held = [0]


def table_bytes(modulus_bits: int, exponent_bits: int, window: int) -> int:
    """Size of a ``FixedBaseTable``'s entries (rows x 2**window residues)."""
    return -(-exponent_bits // window) * (1 << window) * ((modulus_bits + 7) // 8)


def wide_window(
    modulus_bits: Sequence[int],
    exponent_bits: int,
    floor: int,
    budget: int = WIDE_TABLE_BUDGET,
) -> int:
    """The widest window in (``floor``, ``WIDE_WINDOW``] at which one key's tables
    (one per modulus size given) still fit this process's ``budget``, which they
    are then charged to; ``floor`` when none fits.

    For keys that serve a whole run (a simulation's agents, the prefetch
    worker): their tables are built once, so a wider window pays for itself
    after a few hundred factors. Charges are never returned (tables of a run's
    keys live as long as the run).
    """
    with _wide_lock:
        for window in range(WIDE_WINDOW, floor, -1):
            need = sum(table_bytes(bits, exponent_bits, window) for bits in modulus_bits)
            if _wide_bytes_held[0] + need <= budget:
                _wide_bytes_held[0] += need
                return window
    return floor


class FixedBaseTable:
    """Precomputed powers of one base modulo one modulus."""

    def __init__(
        self,
        base: Any,
        modulus: Any,
        exponent_bits: int,
        window_bits: int,
        to_int: Callable[[int], Any] = int,
    ) -> None:
        if not 1 <= window_bits <= 12:
            raise ValueError(f"window_bits must be in [1, 12], got {window_bits}")
        self.modulus = to_int(modulus)
        self.exponent_bits = exponent_bits
        self.window_bits = window_bits
        size = 1 << window_bits
        rows = []
        b = to_int(base) % self.modulus
        for _ in range(-(-exponent_bits // window_bits)):
            row = [to_int(1), b]
            for _ in range(size - 2):
                row.append(row[-1] * b % self.modulus)
            rows.append(row)
            b = row[-1] * b % self.modulus  # base**(2**w) for the next window
        self._rows = rows

    def pow(self, exponent: int) -> Any:
        """``base**exponent mod modulus`` for 0 <= exponent < 2**exponent_bits."""
        if exponent < 0 or exponent >> self.exponent_bits:
            raise ValueError(
                f"exponent must be in [0, 2**{self.exponent_bits}), "
                f"got {exponent.bit_length()} bits"
            )
        mask = (1 << self.window_bits) - 1
        m = self.modulus
        acc = None
        for row in self._rows:
            if not exponent:
                break
            d = exponent & mask
            if d:
                acc = row[d] if acc is None else acc * row[d] % m
            exponent >>= self.window_bits
        return self._rows[0][0] if acc is None else acc
