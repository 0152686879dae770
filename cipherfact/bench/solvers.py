"""``cipherfact bench solvers``: time per NMF iteration, ours vs scikit-learn, same matrices.

One iteration is one W-update plus one H-update. Our solvers are timed over
``iters`` iterations after one warm-up iteration (which also converts X once);
scikit-learn's ``NMF`` is timed as fit time / n_iter_ with tol=0, so its figure
includes its initialization and final loss: a slight handicap for it, stated
in the output. Methods run interleaved, ``REPEATS`` rounds; each figure is
the best round. BLAS and torch thread counts are set explicitly and recorded,
because oversubscribed BLAS was measured 35x slower on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

SIZES = {"full": (2000, 2000, 20, 20), "quick": (400, 400, 10, 5)}  # m, n, rank, iters
DENSITY = 0.02
REPEATS = 7  # best of: the CI machine is shared, the minimum is the least disturbed run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cipherfact bench solvers``."""
    parser.add_argument("--quick", action="store_true", help="small matrices, few iterations")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--out", type=Path, default=None, help="write solvers.json and .md here")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    parser.add_argument("--iters", type=int, default=None, help="iterations timed per method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic matrices")


def make_matrices(m: int, n: int, rank: int, seed: int) -> dict[str, Any]:
    """Dense low-rank-plus-noise X (exponential factors) and a 2%-dense CSR sample of it."""
    rng = np.random.default_rng(seed)
    X = rng.exponential(size=(m, rank)) @ rng.exponential(size=(rank, n))
    X += 0.01 * X.mean() * rng.random((m, n))
    keep = rng.random((m, n)) < DENSITY
    return {"dense": X, "csr2%": sp.csr_matrix(np.where(keep, X, 0.0))}


def _machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
            for p in threadpool_info()
        ]
    except ImportError:
        info["blas"] = []
    return info


def _time_ours(solver: Any, X: Any, W: np.ndarray, H: np.ndarray, iters: int) -> float:
    """Seconds per iteration from (W, H), after one warm-up iteration that caches X."""
    W = solver.update_w(X, W, H)
    H = solver.update_h(X, W, H)
    start = time.perf_counter()
    for _ in range(iters):
        W = solver.update_w(X, W, H)
        H = solver.update_h(X, W, H)
    return (time.perf_counter() - start) / iters


def _time_sklearn(solver: str, X: Any, rank: int, iters: int) -> float:
    """Seconds per iteration of scikit-learn's NMF: fit time / n_iter_ (tol=0)."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    model = NMF(
        n_components=rank, solver=solver, init="random", random_state=0, max_iter=iters, tol=0.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X)
        elapsed = time.perf_counter() - start
    return elapsed / model.n_iter_


def _methods(threads: int) -> list[tuple[str, str, Callable[[], Any] | None]]:
    """(label, rule, solver factory); factory None marks a scikit-learn method."""
    from cipherfact.solvers import make_solver

    out: list[tuple[str, str, Callable[[], Any] | None]] = []
    for rule in ("mu", "hals"):
        out.append((f"numpy-{rule}", rule, partial(make_solver, "numpy", rule=rule)))
    try:
        import torch

        torch.set_num_threads(threads)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for rule in ("mu", "hals"):
                out.append(
                    (
                        f"torch-{device}-{rule}",
                        rule,
                        partial(make_solver, "torch", device, rule=rule),
                    )
                )
    except ImportError:
        pass
    out += [("sklearn-mu", "mu", None), ("sklearn-cd", "hals", None)]
    return out


def run(quick: bool, threads: int, iters: int | None, seed: int) -> dict[str, Any]:
    """Time every method on every matrix under one thread setting; return rows + context."""
    from threadpoolctl import threadpool_limits

    from cipherfact.solvers import random_init

    m, n, rank, default_iters = SIZES["quick" if quick else "full"]
    iters = iters or default_iters
    rows: list[dict[str, Any]] = []
    with threadpool_limits(limits=threads):
        context = _machine(threads)
        methods = _methods(threads)
        try:
            import torch

            context["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
            if torch.cuda.is_available():
                context["gpu"] = torch.cuda.get_device_name(0)
        except ImportError:
            context["torch"] = "not installed"
        for matrix, X in make_matrices(m, n, rank, seed).items():
            W0, H0 = random_init(X, rank, seed)
            solvers = {label: factory() for label, _, factory in methods if factory is not None}
            times: dict[str, list[float]] = {label: [] for label, _, _ in methods}
            for _ in range(REPEATS):  # interleaved, so load drift hits every method alike
                for label, rule, _ in methods:
                    if label in solvers:
                        times[label].append(_time_ours(solvers[label], X, W0, H0, iters))
                    else:
                        sk = "mu" if rule == "mu" else "cd"
                        times[label].append(_time_sklearn(sk, X, rank, iters))
            best = {label: min(values) for label, values in times.items()}
            sk_best = {rule: best[label] for label, rule, f in methods if f is None}
            for label, rule, _ in methods:
                rows.append(
                    {
                        "matrix": matrix,
                        "shape": [m, n],
                        "rank": rank,
                        "method": label,
                        "iters": iters,
                        "repeats": REPEATS,
                        "ms_per_iter": 1e3 * best[label],
                        "ms_all_repeats": [1e3 * v for v in times[label]],
                        "ratio_vs_sklearn": best[label] / sk_best[rule],
                    }
                )
    return {
        "context": context,
        "rows": rows,
        "note": f"ms/iter: best of {REPEATS} interleaved runs of {iters} iterations. "
        "ratio = ms/iter / scikit-learn's same rule (mu vs mu, hals vs cd); "
        "< 1 is faster. scikit-learn's time includes its init.",
    }


def to_markdown(result: dict[str, Any]) -> str:
    """A table of the rows plus the context lines."""
    ctx = result["context"]
    lines = [
        f"- cpu: {ctx['cpu']} ({ctx['cpu_count']} logical cores)",
        f"- threads: {ctx['threads']} (threadpoolctl limit + torch.set_num_threads)",
        f"- BLAS: {'; '.join(ctx.get('blas', [])) or 'unknown'}",
        f"- torch: {ctx.get('torch')}",
    ]
    if "gpu" in ctx:
        lines.append(f"- gpu: {ctx['gpu']}")
    lines += [
        "",
        f"{result['note']}",
        "",
        "| matrix | shape, rank | method | ms / iter | ratio vs sklearn | all runs (ms) |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['matrix']} | {r['shape'][0]}x{r['shape'][1]}, r={r['rank']} | {r['method']} "
            f"| {r['ms_per_iter']:.2f} | {r['ratio_vs_sklearn']:.2f} "
            f"| {', '.join(f'{v:.2f}' for v in r['ms_all_repeats'])} |"
        )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; print a table (or JSON); optionally write both to ``--out``."""
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.iters is not None and args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    result = run(args.quick, args.threads, args.iters, args.seed)
    text = to_markdown(result)
    print(json.dumps(result, indent=2) if args.json else text, end="" if not args.json else "\n")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "solvers.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "solvers.md").write_text(text)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="cipherfact bench solvers", description=__doc__)
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
