"""The ``cipherfact`` command.

Subcommands import their modules lazily, so ``cipherfact --help`` is instant
and a missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a scenario (bundled name or TOML file) and write its results folder",
        description="Run a multi-agent scenario. Bundled scenarios: ppdnmf-synthetic (the "
        "paper's setup), ppdnmf-digits, csr-fhe-mf-synthetic, fedmf-synthetic. Results in "
        "--out: summary.json, metrics.jsonl and PNG plots; for ppdnmf also factors.npz and "
        "graph.png (agents coloured by traffic); for csr_fhe_mf and fedmf model.npz (use it "
        "with `cipherfact recommend` / `predict`).",
    )
    p.add_argument(
        "scenario",
        help="a protocol (ppdnmf, csr-fhe-mf, fedmf: its bundled defaults), a bundled scenario "
        "name or a .toml file",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own data: a matrix (.npy/.csv) for ppdnmf, a ratings file for csr-fhe-mf "
        "and fedmf (same as --set data.path=FILE)",
    )
    p.add_argument(
        "--backend",
        default="inmemory",
        choices=["inmemory", "ray"],
        help="where the agents run: inmemory (one process, exact replay) or ray "
        "(actors on this machine or a Ray cluster)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join an existing Ray cluster (e.g. 'auto' or HOST:PORT); default: start a "
        "local Ray instance sized to this machine",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="K",
        help="save a checkpoint every K outer iterations (epochs) into --out",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in --out (same final result as an uninterrupted run)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: runs/<scenario>-<backend>-seed<seed>)"
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
    ray = p.add_argument_group("ray backend")
    ray.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        metavar="N",
        help="actors in the pool; several agents per actor, placed so that each actor "
        "gets about the same work per round (default: one per CPU of the Ray cluster, "
        "one per two CPUs for ppdnmf with Paillier and a randomness worker per actor)",
    )
    ray.add_argument(
        "--ray-cpus-per-actor",
        type=float,
        default=None,
        metavar="C",
        help="CPUs each actor reserves (default 1, 2 for ppdnmf with Paillier and a "
        "randomness worker, or an even share of the cluster's CPUs when --ray-actors "
        "exceeds them)",
    )
    ray.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=None,
        metavar="G",
        help="GPUs each actor reserves, fractional allowed (default: the cluster's GPUs "
        "shared between the actors when solver.device is cuda, else 0)",
    )
    net = p.add_argument_group(
        "network emulation",
        "charge every message simulated time on the given links; the summary reports "
        "simulated_network_s next to the measured compute time (no message is delayed)",
    )
    net.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="MS", help="one-way latency per edge"
    )
    net.add_argument(
        "--bandwidth-mbps",
        type=float,
        default=None,
        metavar="MBPS",
        help="bandwidth per edge in megabits/s (default: unlimited)",
    )
    net.add_argument(
        "--loss",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that one transmission is lost and resent after two latencies",
    )
    net.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="F",
        help="per-edge spread: each edge's latency and bandwidth scaled by 1 +- F (seeded)",
    )
    net.add_argument(
        "--network-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the loss and jitter draws (default: the scenario's seed)",
    )
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from cipherfact.simulations.network import NetworkModel
    from cipherfact.simulations.scenario import load_scenario
    from cipherfact.simulations.simulate import SimOptions, simulate

    overrides = [*args.overrides, *([f"data.path={args.data}"] if args.data else [])]
    scenario = load_scenario(args.scenario, overrides)
    network = NetworkModel(
        latency_ms=args.latency_ms,
        bandwidth_mbps=args.bandwidth_mbps,
        loss=args.loss,
        jitter=args.latency_jitter,
        seed=scenario.seed if args.network_seed is None else args.network_seed,
    )
    options = SimOptions(
        backend=args.backend,
        progress=not args.quiet,
        ray_address=args.ray_address,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        network=network if network.enabled else None,
        ray_actors=args.ray_actors,
        ray_cpus_per_actor=args.ray_cpus_per_actor,
        ray_gpus_per_actor=args.ray_gpus_per_actor,
    )
    out = args.out or f"runs/{scenario.name}-{args.backend}-seed{scenario.seed}"
    summary = simulate(scenario, out, options=options)
    keys = (
        "protocol",
        "scheme",
        "n_agents",
        "rel_error",
        "centralized_rel_error",
        "rel_error_gap",
        "consensus_spread",
        "wall_s",
        "simulated_network_s",
        "estimated_total_s",
        "bytes_total",
        "messages_total",
        # recommendation protocols
        "train_rmse",
        "test_rmse",
        "plain_test_rmse",
        "epochs",
        "seconds_per_epoch",
    )
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"results written to {out}/", file=sys.stderr)
    return 0


BENCH_MODULES = {
    "crypto": "cipherfact.bench.crypto",
    "solvers": "cipherfact.bench.solvers",
    "protocols": "cipherfact.bench.protocols",
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


# Modules that add their own subcommands: ``add_subcommands(subparsers)``.
# Imported only when their command is on the command line.
PLUGINS = {
    "agent": "cipherfact.deploy.cli",
    "deploy": "cipherfact.deploy.cli",
    "scenario": "cipherfact.scenario_cli",
    "recommend": "cipherfact.model_cli",
    "predict": "cipherfact.model_cli",
}
PLUGIN_HELP = {
    "agent": "agent commands (gRPC deployment)",
    "deploy": "deploy commands (gRPC deployment)",
    "scenario": "list the bundled scenarios, print one fully resolved, print the field reference",
    "recommend": "top items for a user from a recommendation run's model.npz",
    "predict": "predicted ratings for (user, item) pairs from a run's model.npz",
}


def _add_plugins(sub: argparse._SubParsersAction, argv: Sequence[str]) -> None:
    """Load a plugin module only when one of its commands is on the command line;
    otherwise add a light placeholder so ``--help`` still lists the command."""
    modules: dict[str, list[str]] = {}
    for command, module in PLUGINS.items():
        modules.setdefault(module, []).append(command)
    for module, commands in modules.items():
        if any(c in argv for c in commands):
            try:
                importlib.import_module(module).add_subcommands(sub)
                continue
            except ImportError as exc:
                for command in commands:
                    sub.add_parser(command).set_defaults(func=lambda _a, e=exc: _missing(e))
                continue
        for command in commands:
            sub.add_parser(command, help=PLUGIN_HELP[command])


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
    _add_plugins(sub, argv)
    return parser


class TerminatedError(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a run stops the way Ctrl-C stops it:
    its ``summary.json`` says so and what it had written is kept."""


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise TerminatedError(f"terminated by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except TerminatedError:
        print("terminated (SIGTERM); results written so far are kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # An agent that stopped on a bad value (e.g. one its codec cannot carry): the
        # message names the agent, the message and the value; still no traceback. A
        # backend or device missing here (torch, CUDA) says what to install: one line.
        from cipherfact.solvers.factory import BackendUnavailableError

        if not isinstance(exc.__cause__, ValueError | BackendUnavailableError) and not isinstance(
            exc, BackendUnavailableError
        ):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
