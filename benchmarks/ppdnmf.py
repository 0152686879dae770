"""ppdnmf benchmark: the bundled scenarios with Paillier and the plain twin.

Runs `cipherfact simulate` for each configuration (one after the other, so
they share the machine's state), then prints a Markdown table from the
`summary.json` files. Usage:

    OMP_NUM_THREADS=1 python benchmarks/ppdnmf.py --out runs/bench-ppdnmf
    python benchmarks/ppdnmf.py --out runs/bench-ppdnmf --table-only

`--quick` cuts every run to 5 outer iterations (for checking the script).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = {
    "synthetic-paillier": ["ppdnmf-synthetic"],
    "synthetic-paillier-ray": ["ppdnmf-synthetic", "--backend", "ray"],
    "synthetic-plain": ["ppdnmf-synthetic", "--set", "crypto.scheme=plain"],
    # the exchanges side by side on the paper's setup (same graph: min degree 2)
    "synthetic-secagg-paillier": ["ppdnmf-synthetic", "--set", "exchange=secagg"],
    "synthetic-secagg-none": [
        "ppdnmf-synthetic",
        "--set",
        "exchange=secagg",
        "--set",
        "crypto.scheme=none",
    ],
    "synthetic-pairwise-paillier": ["ppdnmf-synthetic", "--set", "exchange=pairwise"],
    "synthetic-pairwise-none": [
        "ppdnmf-synthetic",
        "--set",
        "exchange=pairwise",
        "--set",
        "crypto.scheme=none",
    ],
    "digits-plain": ["ppdnmf-digits", "--set", "crypto.scheme=plain"],
    # digits with Paillier costs ~4x synthetic per iteration (640 vs 150 values
    # of W): timed on 5 outer iterations, accuracy from the bit-identical twin
    "digits-paillier-5outer": ["ppdnmf-digits", "--set", "outer_iters=5"],
}


def run(out: Path, names: list[str], quick: bool) -> None:
    for name in names:
        args = [
            sys.executable,
            "-m",
            "cipherfact.cli",
            "simulate",
            *RUNS[name],
            "--quiet",
            "--out",
            str(out / name),
        ]
        if quick:
            args += ["--set", "outer_iters=5"]
        print("$", " ".join(args[2:]), file=sys.stderr, flush=True)
        subprocess.run(args, check=True)


def table(out: Path, names: list[str]) -> str:
    rows = [
        "| run | backend | exchange | scheme | outer x inner | rel. error | centralized | gap "
        "| spread | wall s | s / outer | MB total | messages |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        path = out / name / "summary.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        sc = s["scenario"]
        outer = s["outer_iters_completed"]
        rows.append(
            f"| {name} | {s['backend']} | {sc.get('exchange', 'pairwise')} | {s['scheme']} "
            f"| {outer} x {sc['inner_iters']} "
            f"| {s['rel_error']:.5f} "
            f"| {s['centralized_rel_error']:.5f} | {100 * s['rel_error_gap']:+.2f}% "
            f"| {s['consensus_spread']:.1e} | {s['wall_s']:.1f} | {s['protocol_s'] / outer:.2f} "
            f"| {s['bytes_total'] / 1e6:.1f} | {s.get('messages_total', '')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ppdnmf"))
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    names = args.only or list(RUNS)
    if not args.table_only:
        run(args.out, names, args.quick)
    print(table(args.out, names))


if __name__ == "__main__":
    main()
