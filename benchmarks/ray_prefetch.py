"""Interleaved A/B of the Ray actors' low-priority prefetch worker (issue 13).

Runs ``cipherfact simulate ppdnmf-synthetic --backend ray`` with
``crypto.prefetch=auto`` (each actor gets a randomness worker at nice 19) and
``crypto.prefetch=off`` in turn, REPS times each, and reads every run's
``protocol_s`` (the outer iterations, without Ray's start-up and the keys) and
the actors' busy seconds from its ``summary.json``; prints per-pair ratios
(on / off) and asserts that both variants' ``factors.npz`` are byte-identical.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ray_prefetch.py --exchange pairwise --outer 10 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {"on": "auto", "off": "off"}


def run_once(out: Path, exchange: str, outer: int, prefetch: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "cipherfact.cli",
        "simulate",
        "ppdnmf-synthetic",
        "--backend",
        "ray",
        "--set",
        f"exchange={exchange}",
        "--set",
        f"outer_iters={outer}",
        "--set",
        f"crypto.prefetch={prefetch}",
        "--quiet",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    busy = summary["ray"]["actor_busy_s"]
    return {
        "protocol_s": summary["protocol_s"],
        "busy_s": sum(busy.values()),
        "factors": (out / "factors.npz").read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", default="pairwise", choices=["pairwise", "secagg"])
    parser.add_argument("--outer", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, mode in VARIANTS.items():
                out = Path(tmp) / f"{name}-{rep}"
                rows[name].append(run_once(out, args.exchange, args.outer, mode))
                print(
                    f"rep {rep} {name}: protocol {rows[name][-1]['protocol_s']:.2f} s, "
                    f"actors busy {rows[name][-1]['busy_s']:.2f} s",
                    flush=True,
                )
    reference = rows["off"][0]["factors"]
    assert all(r["factors"] == reference for rs in rows.values() for r in rs), "factors differ"
    pairs = zip(rows["on"], rows["off"], strict=True)
    ratios = [a["protocol_s"] / b["protocol_s"] for a, b in pairs]
    print(f"\n{args.exchange}, {args.outer} outer, {args.reps} pairs (factors byte-identical)")
    print("| variant | median protocol_s | min | max | median actors busy s |")
    print("|---|---:|---:|---:|---:|")
    for name, rs in rows.items():
        ps = [r["protocol_s"] for r in rs]
        busy = statistics.median(r["busy_s"] for r in rs)
        median = statistics.median(ps)
        print(f"| {name} | {median:.2f} | {min(ps):.2f} | {max(ps):.2f} | {busy:.2f} |")
    print(
        f"on/off protocol_s per pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
