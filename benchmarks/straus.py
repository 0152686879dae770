"""Interleaved A/B: ppdnmf's weighted sum of replies, Straus (``weighted_sum``) vs
``mul_scalar`` + ``sum``, 2048-bit Paillier, the pairwise scenario's shapes.

Each round times both ways for 0.5 s; the ratio is taken round by round, so
both see the same machine load. Usage::

    python benchmarks/straus.py 6
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from cipherfact.crypto import FixedPointCodec, PaillierScheme
from cipherfact.crypto.keys import generate_key_material


def main(rounds: int, degree: int = 3, values: int = 150, budget: float = 0.5) -> None:
    codec = FixedPointCodec(frac_bits=23, int_bits=6, scalar_bits=12, max_terms=16)
    scheme = PaillierScheme(generate_key_material(2048), codec=codec)
    rng = np.random.default_rng(0)
    replies = [scheme.encrypt(rng.uniform(-1, 1, values)) for _ in range(degree)]
    weights = [int(w) for w in rng.integers(32, 64, degree)]

    def straus() -> object:
        return scheme.weighted_sum(replies, weights, k_max=63)

    def separate() -> object:
        return scheme.sum(
            [scheme.mul_scalar(c, w, k_max=63) for c, w in zip(replies, weights, strict=True)]
        )

    assert scheme.decrypt(straus()).tobytes() == scheme.decrypt(separate()).tobytes()  # type: ignore[arg-type]
    ratios = []
    for _ in range(rounds):
        rate = {}
        for name, fn in (("straus", straus), ("separate", separate)):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < budget:
                fn()
                n += 1
            rate[name] = n / (time.perf_counter() - t0)
        ratios.append(rate["straus"] / rate["separate"])
    ints = len(replies[0].ints)
    print(
        f"{degree} replies x {ints} packed integers: straus/separate speed median "
        f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}), "
        f"{rounds} rounds"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
