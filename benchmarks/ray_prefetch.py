"""Interleaved A/B of ppdnmf's Ray pool settings (issue 13).

``--compare prefetch`` (default): ``crypto.prefetch=auto`` (each actor gets a
randomness worker) against ``crypto.prefetch=off``. ``--compare pool``: the
default pool with Paillier (one actor per two CPUs, its worker at the actor's
priority) against ``--ray-cpus-per-actor 1`` (one actor per CPU, workers at
nice 19). Runs ``cipherfact simulate ppdnmf-synthetic --backend ray`` with the
two variants in turn, REPS times each, and reads every run's ``protocol_s``
(the outer iterations, without Ray's start-up and the keys), the median outer
iteration and the actors' busy seconds from its results; prints per-pair
ratios (first / second variant) and asserts that every run's
``factors.npz`` is byte-identical.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ray_prefetch.py --exchange pairwise --outer 10 --reps 3
    OMP_NUM_THREADS=1 python benchmarks/ray_prefetch.py --compare pool --outer 20 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: per comparison: variant name -> its extra command-line arguments
COMPARISONS = {
    "prefetch": {
        "on": ["--set", "crypto.prefetch=auto"],
        "off": ["--set", "crypto.prefetch=off"],
    },
    "pool": {
        "default": [],
        "one-cpu-actors": ["--ray-cpus-per-actor", "1"],
    },
}


def run_once(out: Path, exchange: str, outer: int, extra: list[str]) -> dict:
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
        *extra,
        "--quiet",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    busy = summary["ray"]["actor_busy_s"]
    outers = [json.loads(line)["wall_s"] for line in (out / "metrics.jsonl").open()]
    return {
        "protocol_s": summary["protocol_s"],
        "median_outer_s": statistics.median(outers),
        "actors": summary["ray"]["actors"],
        "busy_s": sum(busy.values()),
        "factors": (out / "factors.npz").read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", default="pairwise", choices=["pairwise", "secagg"])
    parser.add_argument("--outer", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--compare", default="prefetch", choices=sorted(COMPARISONS))
    args = parser.parse_args()
    variants = COMPARISONS[args.compare]
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, extra in variants.items():
                out = Path(tmp) / f"{name}-{rep}"
                rows[name].append(run_once(out, args.exchange, args.outer, extra))
                print(
                    f"rep {rep} {name}: protocol {rows[name][-1]['protocol_s']:.2f} s, "
                    f"actors busy {rows[name][-1]['busy_s']:.2f} s",
                    flush=True,
                )
    first, second = variants
    reference = rows[first][0]["factors"]
    assert all(r["factors"] == reference for rs in rows.values() for r in rs), "factors differ"
    pairs = list(zip(rows[first], rows[second], strict=True))
    ratios = [a["protocol_s"] / b["protocol_s"] for a, b in pairs]
    outer_ratios = [a["median_outer_s"] / b["median_outer_s"] for a, b in pairs]
    print(f"\n{args.exchange}, {args.outer} outer, {args.reps} pairs (factors byte-identical)")
    print(
        "| variant | actors | median protocol_s | min | max | median outer iteration s "
        "| median actors busy s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in rows.items():
        ps = [r["protocol_s"] for r in rs]
        busy = statistics.median(r["busy_s"] for r in rs)
        outer = statistics.median(r["median_outer_s"] for r in rs)
        median = statistics.median(ps)
        print(
            f"| {name} | {rs[0]['actors']} | {median:.2f} | {min(ps):.2f} | {max(ps):.2f} "
            f"| {outer:.3f} | {busy:.2f} |"
        )
    print(
        f"{first}/{second} protocol_s per pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); median outer iteration per pair: "
        f"median {statistics.median(outer_ratios):.3f}"
    )


if __name__ == "__main__":
    main()
