"""DJN randomness per factor at 2048-bit keys (mod n**2, 448-bit exponents): fixed-base
tables of window 7..11 against the multi-buffer library and ``gmpy2.powmod_exp_list``.

Why: the prefetch worker (``cipherfact.crypto.prefetch``) picks its table window
by a memory budget, and computes factors in a process rather than in a thread
running the (GIL-free) multi-buffer library. Methods take turns in ROUNDS
rounds so that their ratios see the same machine load. Usage::

    python benchmarks/djn_window.py 8
"""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from collections.abc import Callable

import gmpy2

from cipherfact.crypto import ifma
from cipherfact.crypto.djn import FixedBaseTable
from cipherfact.crypto.keys import generate_key_material

WINDOWS = (7, 8, 9, 10, 11)


def main(rounds: int, per_round: int = 64) -> None:
    key = generate_key_material(2048)
    n2, h = gmpy2.mpz(key.n) ** 2, gmpy2.mpz(key.h_s)
    exps = [secrets.randbits(448) for _ in range(per_round)]
    methods: dict[str, Callable[[], list]] = {}
    for window in WINDOWS:
        t0 = time.perf_counter()
        table = FixedBaseTable(h, n2, 448, window, gmpy2.mpz)
        mb = sum(len(r) for r in table._rows) * 512 / 2**20
        print(f"window {window}: table {mb:.1f} MB, built in {time.perf_counter() - t0:.2f} s")
        methods[f"window {window}"] = lambda t=table: [t.pow(e) for e in exps]
    if ifma.available():
        methods["multi-buffer"] = lambda: ifma.powmod_batch([h] * per_round, exps, n2)
    methods["powmod_exp_list"] = lambda: list(gmpy2.powmod_exp_list(h, exps, n2))
    reference = methods["window 7"]()
    assert all(fn() == reference for fn in methods.values())
    per: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            per[name].append((time.perf_counter() - t0) / per_round)
    print(f"\n{rounds} interleaved rounds of {per_round} factors")
    print("| method | ms per factor (median) | time / window 7 (median, min-max) |")
    print("|---|---:|---:|")
    for name, times in per.items():
        ratios = [a / b for a, b in zip(times, per["window 7"], strict=True)]
        print(
            f"| {name} | {statistics.median(times) * 1e3:.3f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
