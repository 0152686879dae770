"""CKKS parameter sets: named, security-checked, and a planner that picks one.

CKKS parameters trade three things: multiplicative depth (how many primes the
modulus chain has), precision (the scale), and headroom (how large a value may
grow before decryption wraps modulo the last prime). Protocols should not pick
prime sizes by hand; they state the depth and value range they need and call
``plan_ckks_params``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cipherfact.crypto.errors import InsecureParameterError

#: Largest total coefficient-modulus bits for 128-bit classical security
#: (HomomorphicEncryption.org standard, the bounds SEAL enforces).
MAX_COEFF_MODULUS_BITS: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: SEAL accepts primes of 2..60 bits; below ~17 bits there are too few NTT primes.
_MIN_PRIME_BITS = 17
_MAX_PRIME_BITS = 60


@dataclass(frozen=True)
class CkksParams:
    """One CKKS context's encryption parameters.

    ``coeff_mod_bit_sizes`` is the modulus chain: the first prime holds the
    decrypted value at the last level, the middle primes are consumed one per
    multiplication (rescale), the last one is the special key-switching prime.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    global_scale_bits: int

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"poly_modulus_degree must be an int, got {type(n).__name__}")
        if n not in MAX_COEFF_MODULUS_BITS:
            raise ValueError(
                f"poly_modulus_degree must be one of {sorted(MAX_COEFF_MODULUS_BITS)}, got {n}"
            )
        bits = tuple(self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if len(bits) < 2:
            raise ValueError(
                f"coeff_mod_bit_sizes needs at least 2 primes (data + special), got {list(bits)}"
            )
        for b in bits:
            if isinstance(b, bool) or not isinstance(b, int):
                raise TypeError(f"coeff_mod_bit_sizes must hold ints, got {b!r}")
            if not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS:
                raise ValueError(
                    f"coeff_mod_bit_sizes entries must be in [{_MIN_PRIME_BITS}, "
                    f"{_MAX_PRIME_BITS}], got {b} in {list(bits)}"
                )
        s = self.global_scale_bits
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"global_scale_bits must be an int, got {type(s).__name__}")
        if not 1 <= s < bits[0]:
            raise ValueError(
                f"global_scale_bits must be in [1, first prime bits {bits[0]}), got {s}"
            )
        bound = MAX_COEFF_MODULUS_BITS[n]
        if sum(bits) > bound:
            raise InsecureParameterError(
                f"coeff_mod_bit_sizes {list(bits)} total {sum(bits)} bits, above the "
                f"128-bit security bound of {bound} bits for poly_modulus_degree {n}"
            )

    @property
    def max_depth(self) -> int:
        """Multiplications (each one rescale) the chain allows."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def slot_count(self) -> int:
        """Values one CKKS ciphertext holds."""
        return self.poly_modulus_degree // 2

    @property
    def headroom_bits(self) -> int:
        """Bits between the scale and the last prime: the value range at full depth."""
        return self.coeff_mod_bit_sizes[0] - self.global_scale_bits

    @property
    def max_abs_value(self) -> float:
        """Worst-case magnitude that still decrypts at the deepest level.

        Exact for constant vectors (their polynomial is one coefficient);
        vectors of random values stay correct far beyond it.
        """
        return float(2.0 ** (self.headroom_bits - 1))

    @property
    def total_bits(self) -> int:
        """Total coefficient-modulus bits (what the security bound limits)."""
        return sum(self.coeff_mod_bit_sizes)


#: Named sets, cheapest first (the planner's search order).
NAMED_PARAMS: dict[str, CkksParams] = {
    "n4096-depth1": CkksParams(4096, (40, 29, 40), 29),
    "n8192-depth2": CkksParams(8192, (60, 40, 40, 60), 40),
    "n8192-depth3": CkksParams(8192, (60, 32, 32, 32, 60), 32),
    "n16384-depth4": CkksParams(16384, (60, 40, 40, 40, 40, 60), 40),
    "n16384-depth7": CkksParams(16384, (60, *([40] * 7), 60), 40),
    "n32768-depth16": CkksParams(32768, (60, *([40] * 16), 60), 40),
}


def get_ckks_params(params: str | CkksParams) -> CkksParams:
    """Resolve a parameter-set name (or pass a ``CkksParams`` through)."""
    if isinstance(params, CkksParams):
        return params
    if not isinstance(params, str):
        raise TypeError(f"params must be a name or CkksParams, got {type(params).__name__}")
    try:
        return NAMED_PARAMS[params]
    except KeyError:
        raise ValueError(
            f"unknown CKKS parameter set {params!r}; known: {sorted(NAMED_PARAMS)}"
        ) from None


def plan_ckks_params(depth: int, max_abs_value: float, mask_bits: int = 0) -> CkksParams:
    """Smallest named set with ``depth`` multiplications and room for masked values.

    A value of magnitude ``max_abs_value`` hidden under an additive mask of
    ``mask_bits`` statistical bits grows to ``max_abs_value * 2**mask_bits``;
    it must stay below ``CkksParams.max_abs_value`` (the worst-case bound at
    the last level), or decryption after the last multiplication wraps.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int, got {type(depth).__name__}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if isinstance(mask_bits, bool) or not isinstance(mask_bits, int):
        raise TypeError(f"mask_bits must be an int, got {type(mask_bits).__name__}")
    if mask_bits < 0:
        raise ValueError(f"mask_bits must be >= 0, got {mask_bits}")
    value = float(max_abs_value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"max_abs_value must be finite and > 0, got {max_abs_value}")
    magnitude = value * 2.0**mask_bits
    for params in NAMED_PARAMS.values():
        if params.max_depth >= depth and magnitude < params.max_abs_value:
            return params
    deep_enough = [p for p in NAMED_PARAMS.values() if p.max_depth >= depth]
    if not deep_enough:
        deepest = max(p.max_depth for p in NAMED_PARAMS.values())
        raise InsecureParameterError(
            f"no named CKKS parameter set supports depth {depth} at 128-bit security "
            f"(deepest named set: depth {deepest}); split the computation"
        )
    widest = max(p.max_abs_value for p in deep_enough)
    raise InsecureParameterError(
        f"no named CKKS parameter set with depth {depth} holds values up to "
        f"{value:g} * 2**{mask_bits} = {magnitude:g} (largest at that depth: {widest:g}); "
        "lower mask_bits or rescale the values"
    )
