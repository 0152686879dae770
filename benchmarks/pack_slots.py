"""Interleaved A/B/C: ``pack_slots`` against the shift-and-or loop
(``pack_by_shifts``, still used above 64 bits) and numpy bit packing
(``_pack_bits``, used for slots up to 64 bits that are not whole bytes; whole
bytes take ``_pack_bytes``), for one 150-value vector at ppdnmf's slot widths,
given as the int64 array ``_slot_units`` makes.

Usage::

    python benchmarks/pack_slots.py --reps 7
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import time

import numpy as np

from cipherfact.crypto.codec import Layout, _pack_bits, pack_by_shifts, pack_slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(
        "| slot bits | slots | shifts us | numpy bits us | pack_slots us "
        "| pack_slots / shifts | pack_slots / bits |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for width in (48, 29, 21):  # pairwise, secagg, the codec's bare value
        layout = Layout(width, 2047 // width)
        count = layout.count(150) * layout.slots
        units = np.array([random.randrange(1 << width) for _ in range(count)], dtype=np.int64)
        ways = (
            functools.partial(pack_by_shifts, units, width, layout.slots),
            functools.partial(_pack_bits, units, width, layout.slots),
            functools.partial(pack_slots, units, layout),
        )
        assert ways[0]() == ways[1]() == ways[2]()
        rows = []
        for _ in range(args.reps):
            times = []
            for way in ways:
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    way()
                times.append((time.perf_counter() - t0) / args.calls)
            rows.append(times)
        us = [statistics.median(r[i] for r in rows) * 1e6 for i in range(3)]
        vs_shifts = statistics.median(r[2] / r[0] for r in rows)
        vs_bits = statistics.median(r[2] / r[1] for r in rows)
        print(
            f"| {width} | {layout.slots} | {us[0]:.1f} | {us[1]:.1f} | {us[2]:.1f} "
            f"| {vs_shifts:.3f} | {vs_bits:.3f} |"
        )


if __name__ == "__main__":
    main()
