"""``cipherfact bench protocols``: sweep every protocol beside its plaintext twin.

Why one command: comparing ppdnmf, csr_fhe_mf and FedMF means running many
scenarios with matching seeds and sizes and collecting accuracy, time and
bytes from each; by hand that is a script per study. Each point is a bundled
scenario plus ``--set`` overrides (see ``protocols_plan``), simulated in-memory
into its own subfolder of ``--out``; the sweep then writes ``points.csv``,
``points.json``, ``table.md`` and PNG plots next to them.

``--quick`` uses 1024-bit Paillier test keys (``crypto.insecure_test_keys``)
to stay under 3 minutes on 2 cores, and says so in every output.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from cipherfact.bench.protocols_plan import PointSpec, plan_points
from cipherfact.bench.protocols_points import run_point
from cipherfact.bench.protocols_report import write_outputs
from cipherfact.simulations.results import machine_info, package_versions

__all__ = ["add_arguments", "main", "run_sweep"]


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_sweep(
    points: list[PointSpec], out_dir: Path, *, seed: int, command: str, log: bool = True
) -> dict[str, Any]:
    """Run ``points`` in order into ``out_dir``; write every output; return header+rows."""
    if not points:
        raise ValueError("points must not be empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {
        "command": command,
        "seed": seed,
        "machine": machine_info(),
        "versions": package_versions(),
        "load_at_start": _load(),
    }
    started = time.perf_counter()
    rows = []
    for i, spec in enumerate(points, 1):
        t0 = time.perf_counter()
        rows.append(run_point(spec, out_dir / spec.label))
        if log:
            r = rows[-1]
            print(
                f"[{i}/{len(points)}] {spec.label}: {r['accuracy_metric']}={r['accuracy']:.6g} "
                f"wall={time.perf_counter() - t0:.1f}s bytes={r['bytes_total']:,}",
                file=sys.stderr,
            )
    header["wall_s"] = time.perf_counter() - started
    header["load_at_end"] = _load()
    write_outputs(out_dir, rows, header)
    return {**header, "points": rows}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cipherfact bench protocols``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sweep with 1024-bit test keys (insecure; under 3 minutes on 2 cores)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench-protocols"), help="output folder"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every scenario (default 0)")


def main(args: argparse.Namespace) -> int:
    """Run the sweep, print ``table.md``; returns 0."""
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    points = plan_points(mode, args.seed)
    flags = {"tiny": ["--tiny"], "quick": ["--quick"], "full": []}[mode]
    argv = ["bench", "protocols", *flags, "--out", str(args.out), "--seed", str(args.seed)]
    command = shlex.join(["cipherfact", *argv])
    if mode != "full":
        print(
            "note: Paillier points use 1024-bit test keys (crypto.insecure_test_keys=true); "
            "run without --quick for 2048/3072-bit keys",
            file=sys.stderr,
        )
    run_sweep(points, Path(args.out), seed=args.seed, command=command)
    print((Path(args.out) / "table.md").read_text(encoding="utf-8"))
    print(f"results written to {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="cipherfact bench protocols", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
