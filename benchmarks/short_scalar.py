"""Interleaved A/B: a ciphertext times a short scalar, ``gmpy2.powmod`` vs plain
square-and-multiply (``PaillierMath.mul`` below ``SHORT_SCALAR``), 4096-bit n**2.

ppdnmf's pairwise replies scale every packed integer by a 6-bit private weight
(``scale_shift``); at that length powmod's Montgomery set-up costs more than
the few squarings it saves. Each round times both ways on the same integers,
so both see the same machine load. Usage::

    python benchmarks/short_scalar.py --reps 5
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import gmpy2

from cipherfact.crypto.keys import generate_key_material
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.paillier_math import SHORT_SCALAR, PaillierMath


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000, help="ciphertexts per timing")
    args = parser.parse_args()
    key = generate_key_material(2048)
    math = PaillierMath(key.n, key.h_s, None, None, PaillierOptions())
    n2 = math.n2
    cts = [gmpy2.mpz(secrets.randbelow(int(n2) - 2) + 2) for _ in range(args.count)]
    print(f"SHORT_SCALAR = 2**{SHORT_SCALAR.bit_length() - 1}; {args.count} ciphertexts a timing")
    print("| scalar bits | powmod us | square-and-multiply us | ratio (median of reps) |")
    print("|---:|---:|---:|---:|")
    for bits in (2, 4, 6, 8, 10, 12, 16):
        k = (1 << (bits - 1)) | secrets.randbits(bits - 1)
        slow, fast, ratios = [], [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            a = [gmpy2.powmod(c, k, n2) for c in cts]
            t1 = time.perf_counter()
            b = [math._square_multiply(c, k) for c in cts]
            t2 = time.perf_counter()
            assert a == b
            slow.append((t1 - t0) / args.count * 1e6)
            fast.append((t2 - t1) / args.count * 1e6)
            ratios.append((t2 - t1) / (t1 - t0))
        print(
            f"| {bits} | {statistics.median(slow):.1f} | {statistics.median(fast):.1f} "
            f"| {statistics.median(ratios):.3f} |"
        )


if __name__ == "__main__":
    main()
