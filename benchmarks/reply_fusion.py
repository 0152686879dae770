"""Interleaved A/B: a pairwise reply ``a * (Enc(-W_i) + W_j) + eta`` as one
``scale_shift`` against ``add_plain`` + ``mul_scalar`` + ``add_plain``, 2048-bit
Paillier under a public key, 150 values (the pairwise scenario's W).

Each round times both ways for 0.5 s; ratios are taken round by round. Usage::

    python benchmarks/reply_fusion.py 6
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from cipherfact.crypto import FixedPointCodec, PaillierScheme
from cipherfact.crypto.keys import generate_key_material


def main(rounds: int, budget: float = 0.5) -> None:
    codec = FixedPointCodec(frac_bits=23, int_bits=6, scalar_bits=12, max_terms=16)
    owner = PaillierScheme(generate_key_material(2048), codec=codec)
    peer = owner.public()
    rng = np.random.default_rng(0)
    offer = owner.encrypt(rng.uniform(-1, 1, 150))
    w = rng.uniform(0, 1, 150)
    noise = np.ldexp(rng.integers(-(2**14), 2**14, 150).astype(float), -23)

    def fused() -> object:
        return peer.scale_shift(offer, 45, w, noise, k_max=63)

    def calls() -> object:
        return peer.add_plain(peer.mul_scalar(peer.add_plain(offer, w), 45, k_max=63), noise)

    assert [int(v) for v in fused().ints] == [int(v) for v in calls().ints]  # type: ignore[attr-defined]
    ratios = []
    for _ in range(rounds):
        rate = {}
        for name, fn in (("fused", fused), ("calls", calls)):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < budget:
                fn()
                n += 1
            rate[name] = n / (time.perf_counter() - t0)
        ratios.append(rate["fused"] / rate["calls"])
    print(
        f"scale_shift / three calls, speed: median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}), {rounds} rounds"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
