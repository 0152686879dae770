"""Interleaved A/B: packed Paillier decrypt values/s at 2048 bits, fast_path gmpy2 vs ifma vs auto.

Each batch size (ciphertexts per decrypt call) runs ROUNDS interleaved rounds
of 0.5 s per path, so the ratio is measured under the same machine load.
Needs the optional extra (``pip install cipherfact[fast]``) on an AVX-512 IFMA CPU.

Usage::

    python benchmarks/ifma_decrypt.py 6
"""

from __future__ import annotations

import sys
import time

import numpy as np

from cipherfact.crypto import FixedPointCodec, PaillierOptions, PaillierScheme
from cipherfact.crypto.keys import generate_key_material

PATHS = ("gmpy2", "ifma", "auto")


def main(rounds: int, budget: float = 0.5) -> None:
    codec = FixedPointCodec(frac_bits=24, int_bits=8, scalar_bits=16, max_terms=16)
    key = generate_key_material(2048)
    schemes = {
        m: PaillierScheme(key, codec=codec, options=PaillierOptions(fast_path=m)) for m in PATHS
    }
    slots = schemes["gmpy2"].layout.slots
    rng = np.random.default_rng(0)
    print(f"{slots} values per ciphertext; {rounds} interleaved rounds x {budget}s per cell")
    print(
        "| ciphertexts per call | gmpy2 values/s | ifma values/s | auto values/s "
        "| ifma/gmpy2 median (min-max) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for batch in (1, 2, 3, 4, 8, 24):
        x = rng.uniform(-1, 1, slots * batch)
        c = schemes["gmpy2"].encrypt(x)
        ref = schemes["gmpy2"].decrypt(c)
        for s in schemes.values():
            assert np.array_equal(s.decrypt(c), ref)  # the same plaintexts on every path
        values = dict.fromkeys(PATHS, 0)
        seconds = dict.fromkeys(PATHS, 0.0)
        ratios = []
        for _ in range(rounds):
            per = {}
            for m, s in schemes.items():
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < budget:
                    s.decrypt(c)
                    n += 1
                dt = time.perf_counter() - t0
                values[m] += n * x.size
                seconds[m] += dt
                per[m] = n * x.size / dt
            ratios.append(per["ifma"] / per["gmpy2"])
        rate = {m: values[m] / seconds[m] for m in PATHS}
        print(
            f"| {batch} | {rate['gmpy2']:,.0f} | {rate['ifma']:,.0f} | {rate['auto']:,.0f} "
            f"| {np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
