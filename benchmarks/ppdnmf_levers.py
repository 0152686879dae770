"""Interleaved A/B of the in-memory ppdnmf speed levers (issue 13), same job, same run.

Each variant runs the protocol on one in-process host (``LocalGrid``, as
``cipherfact simulate`` does in memory) for OUTER outer iterations; variants
take turns, REPS times, so their ratios are measured under the same machine
load. Keys are made per run (not timed); the time is the outer loop's wall
clock. Every variant's factors must equal the first's bit for bit.

Variants (``PPDNMFRoles`` switches; ``t1``/``t2``: ``PaillierOptions.ifma_threads``
1 or 2, set by wrapping ``ppdnmf_job.paillier_options`` in this process):
  serial-t1   one decryption per agent-round, no prefetch, one thread (before the levers)
  batch-t1    decryptions batched across the host's agents (full multi-buffer lanes)
  batch+pf-t1 ... plus randomness computed ahead in one worker process
  batch+pf-t2 ... plus the library calls on 2 threads (the in-memory default on 2 cores)
  batch-t2    batched, 2 threads, no prefetch worker
  serial-t2   one decryption per agent-round on 2 threads
  procs2      crypto.processes=2: the older shared decryption process pool

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ppdnmf_levers.py --outer 3 --reps 3 \
        --exchange secagg --only serial-t1 batch+pf-t2
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from threadpoolctl import threadpool_limits

from cipherfact.protocols.ppdnmf import job as ppdnmf_job
from cipherfact.protocols.ppdnmf.app import PPDNMFRoles
from cipherfact.protocols.ppdnmf.job import prepare_job
from cipherfact.simulations.grid import LocalGrid, single_host
from cipherfact.simulations.scenario import load_scenario

_OPTIONS = ppdnmf_job.paillier_options

VARIANTS: dict[str, tuple[dict, list[str], int]] = {
    "serial-t1": ({"batch_decrypt": False}, [], 1),
    "batch-t1": ({}, [], 1),
    "batch+pf-t1": ({"prefetch": True}, [], 1),
    "batch+pf-t2": ({"prefetch": True}, [], 2),
    "batch-t2": ({}, [], 2),
    "serial-t2": ({"batch_decrypt": False}, [], 2),
    "procs2": ({"shared_pool": True}, ["crypto.processes=2"], 1),
}


def run_once(
    scenario: str, overrides: list[str], roles: dict, threads: int
) -> tuple[float, list[bytes]]:
    ppdnmf_job.paillier_options = lambda job: replace(_OPTIONS(job), ifma_threads=threads)
    job = prepare_job(load_scenario(scenario, overrides))
    grid = LocalGrid(single_host(range(job.n_agents)), None)
    try:
        grid.add_host(0, PPDNMFRoles(job, **roles))
        grid.start()
        t0 = time.perf_counter()
        for t in range(job.config.outer_iters):
            agents, _ = grid.run_outer(f"outer iteration {t}")
        seconds = time.perf_counter() - t0
    finally:
        grid.close()
    return seconds, [agents[i].W.tobytes() + agents[i].H.tobytes() for i in sorted(agents)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="ppdnmf-synthetic")
    parser.add_argument("--exchange", default="secagg", choices=["secagg", "pairwise"])
    parser.add_argument("--outer", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="more scenario overrides")
    args = parser.parse_args()
    base = [f"outer_iters={args.outer}", f"exchange={args.exchange}", *args.set]
    times: dict[str, list[float]] = {v: [] for v in args.only}
    reference: list[bytes] | None = None
    with threadpool_limits(limits=1):
        for rep in range(args.reps):
            for name in args.only:
                roles, extra, threads = VARIANTS[name]
                seconds, factors = run_once(args.scenario, [*base, *extra], roles, threads)
                if reference is None:
                    reference = factors
                assert factors == reference, f"{name}: factors differ from {args.only[0]}'s"
                times[name].append(seconds)
                print(f"rep {rep} {name}: {seconds:.2f} s", flush=True)
    first = args.only[0]
    print(f"\n{args.scenario} {args.exchange}, {args.outer} outer, {args.reps} interleaved reps")
    print(f"| variant | median s | min s | max s | median ratio to {first} (min-max) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.only:
        ratios = [a / b for a, b in zip(times[name], times[first], strict=True)]
        t = times[name]
        print(
            f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    print("factors: bit-identical across variants")


if __name__ == "__main__":
    main()
