"""The ``cipherfact`` command.

Subcommands import their modules lazily, so ``cipherfact --help`` is instant
and a missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a scenario (bundled name or TOML file) and write its results folder",
        description="Run a multi-agent scenario. Bundled scenarios: ppdnmf-synthetic (the "
        "paper's setup), ppdnmf-digits. Results: summary.json, metrics.jsonl, factors.npz, "
        "error.png, bytes.png in --out.",
    )
    p.add_argument("scenario", help="bundled scenario name or path to a .toml file")
    p.add_argument(
        "--backend",
        default="inmemory",
        choices=["inmemory"],
        help="where the agents run (default: inmemory, one process)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: runs/<scenario>-<scheme>-seed<seed>)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario field, e.g. --set outer_iters=20 "
        "--set crypto.key_bits=3072 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from cipherfact.simulations.scenario import load_scenario
    from cipherfact.simulations.simulate import simulate

    scenario = load_scenario(args.scenario, args.overrides)
    out = args.out or f"runs/{scenario.name}-{scenario.crypto.scheme}-seed{scenario.seed}"
    summary = simulate(scenario, out, backend=args.backend, progress=not args.quiet)
    keys = (
        "protocol",
        "scheme",
        "n_agents",
        "rel_error",
        "centralized_rel_error",
        "rel_error_gap",
        "consensus_spread",
        "wall_s",
        "bytes_total",
        "messages_total",
    )
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"results written to {out}/", file=sys.stderr)
    return 0


BENCH_MODULES = {
    "crypto": "cipherfact.bench.crypto",
    "solvers": "cipherfact.bench.solvers",
}


def _add_bench(sub: argparse._SubParsersAction, load: bool) -> None:
    """``load`` is False unless the command line asks for ``bench``: the benchmark
    modules import heavy libraries that ``simulate`` must not pay for."""
    p = sub.add_parser("bench", help="benchmarks: crypto throughput, local solvers")
    bench_sub = p.add_subparsers(dest="bench_target", required=True)
    for name, module in BENCH_MODULES.items():
        q = bench_sub.add_parser(name, help=f"benchmark {name}")
        if not load:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # a benchmark whose dependency is missing
            q.set_defaults(func=lambda _a, e=exc: _missing(e))
            continue
        mod.add_arguments(q)
        q.set_defaults(func=mod.main)


def _missing(exc: ImportError) -> int:
    print(f"error: this benchmark cannot run here: {exc}", file=sys.stderr)
    return 2


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cipherfact",
        description="Privacy-preserving distributed matrix factorization.",
    )
    from cipherfact import __version__

    parser.add_argument("--version", action="version", version=f"cipherfact {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_bench(sub, load="bench" in argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
