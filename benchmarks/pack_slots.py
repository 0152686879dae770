"""Interleaved A/B: ``pack_slots`` (numpy bit packing, slots up to 64 bits) against the
shift-and-or loop it replaced (``pack_by_shifts``, still used above 64 bits), for
one 150-value vector at ppdnmf's slot widths.

Usage::

    python benchmarks/pack_slots.py --reps 7
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from cipherfact.crypto.codec import Layout, pack_by_shifts, pack_slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print("| slot bits | slots | shifts us | numpy us | ratio (median of reps) |")
    print("|---:|---:|---:|---:|---:|")
    for width in (48, 29, 21):  # pairwise, secagg, the codec's bare value
        layout = Layout(width, 2047 // width)
        units = [random.randrange(1 << width) for _ in range(layout.count(150) * layout.slots)]
        assert pack_by_shifts(units, width, layout.slots) == pack_slots(units, layout)
        rows = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                pack_by_shifts(units, width, layout.slots)
            t1 = time.perf_counter()
            for _ in range(args.calls):
                pack_slots(units, layout)
            t2 = time.perf_counter()
            rows.append(((t1 - t0) / args.calls, (t2 - t1) / args.calls))
        old = statistics.median(r[0] for r in rows) * 1e6
        new = statistics.median(r[1] for r in rows) * 1e6
        ratio = statistics.median(r[1] / r[0] for r in rows)
        print(f"| {width} | {layout.slots} | {old:.1f} | {new:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
