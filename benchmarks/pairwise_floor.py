"""The arithmetic floor of ppdnmf's pairwise exchange: core-seconds of its crypto alone.

Why: issue 13 asks for the full ``ppdnmf-synthetic`` pairwise run (100 x 30,
Paillier 2048) in <= 150 s on Ray on this 2-core machine. This script times,
on one core and with the real job's keys, codec and weights, each operation
the exchange cannot avoid, at the fastest settings the project has (DJN
factors from 9-bit tables, as the prefetch worker builds them within its
budget; CRT for the key
owner's own factors; decryptions batched 8 lanes per multi-buffer call on one
thread; Straus for the weighted sum; ``scale_shift`` for the reply), and
multiplies each by how often one run needs it (from the scenario's graph).
Python, messaging, the local NMF solver and Ray are left out, so the sum is
a lower bound on the run's CPU time: divided by the cores, a lower bound on
its wall time.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pairwise_floor.py --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from cipherfact.crypto.batch import DecryptBatch
from cipherfact.crypto.djn import WIDE_WINDOW
from cipherfact.crypto.paillier_math import PaillierMath
from cipherfact.protocols.ppdnmf import job as ppdnmf_job
from cipherfact.protocols.ppdnmf.job import generate_key, peer_loader, prepare_job
from cipherfact.simulations.scenario import load_scenario


def timed(fn: Callable[[], object], count: int) -> float:
    """Seconds per unit of one call of ``fn`` that does ``count`` units."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--outer", type=int, default=100, help="outer iterations of the run")
    args = parser.parse_args()

    options = ppdnmf_job.paillier_options  # one core: the library calls on one thread
    ppdnmf_job.paillier_options = lambda job: replace(options(job), ifma_threads=1)  # type: ignore[assignment]
    scenario = load_scenario("ppdnmf-synthetic", ["exchange=pairwise"])
    job = prepare_job(scenario)
    cfg = job.config
    rounds = args.outer * cfg.inner_iters
    degrees = [job.graph.degree(i) for i in range(job.n_agents)]
    owner = generate_key(job)
    peer = peer_loader(job)(owner.public_bytes())  # a neighbour's view of owner's key
    rng = np.random.default_rng(0)
    W = rng.random((job.X.shape[0], scenario.rank))
    offer = peer.from_bytes(owner.to_bytes(owner.encrypt(-W.ravel())))
    cts = len(offer.ints)
    k_max = cfg.weight_max

    wide = replace(owner._math.options, djn_window_bits=WIDE_WINDOW, djn_public=True)
    own_math = PaillierMath(*owner._math.spec[:4], wide)
    pub_math = PaillierMath(owner._math.spec[0], owner._math.spec[1], None, None, wide)
    own_math.random_factors(1), pub_math.random_factors(1)  # build the tables (not timed)

    def reply() -> object:
        return peer.scale_shift(offer, 45, W.ravel(), W.ravel() * 1e-3, k_max=k_max)

    replies = [owner.from_bytes(peer.to_bytes(reply())) for _ in range(max(degrees))]

    def weighted(deg: int) -> Callable[[], object]:
        return lambda: owner.weighted_sum(replies[:deg], [40 + j for j in range(deg)], k_max=k_max)

    sums = [owner.weighted_sum(replies[:d], [40] * d, k_max=k_max) for d in (2, 2)]

    def decrypt_two() -> object:  # two agents' sums: 2 * cts packed integers per flush
        batch: DecryptBatch = DecryptBatch()
        for s in sums:
            batch.add(owner, s, lambda opened, _share: opened())
        return batch.flush()

    ops: dict[str, tuple[Callable[[], float], int]] = {
        # (seconds per unit, units per run)
        "own-key factor (offer, CRT, 9-bit)": (
            lambda: timed(lambda: own_math.random_factors(32), 32),
            rounds * job.n_agents * cts,
        ),
        "public-key factor (reply rerandomization, 9-bit)": (
            lambda: timed(lambda: pub_math.random_factors(32), 32),
            rounds * sum(degrees) * cts,
        ),
        "scale_shift (one reply)": (lambda: timed(reply, 1), rounds * sum(degrees)),
        "decrypt (one agent's sum, 8 lanes a call)": (
            lambda: timed(decrypt_two, 2),
            rounds * job.n_agents,
        ),
    }
    for deg in sorted(set(degrees)):
        ops[f"weighted_sum (Straus, degree {deg})"] = (
            lambda d=deg: timed(weighted(d), 1),
            rounds * degrees.count(deg),
        )
    per: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(args.reps):
        for name, (measure, _count) in ops.items():
            per[name].append(min(measure() for _ in range(3)))

    print(
        f"ppdnmf-synthetic pairwise: {job.n_agents} agents, degrees {degrees}, {cts} "
        f"ciphertexts per message, {rounds} rounds ({args.outer} x {cfg.inner_iters}); "
        f"{args.reps} interleaved reps, each the best of 3"
    )
    print("| operation | ms per unit (median) | units per run | core-s per run |")
    print("|---|---:|---:|---:|")
    total = 0.0
    for name, (_measure, count) in ops.items():
        ms = statistics.median(per[name]) * 1e3
        core_s = ms * count / 1e3
        total += core_s
        print(f"| {name} | {ms:.3f} | {count:,} | {core_s:.1f} |")
    print(f"| **sum** | | | **{total:.1f}** |")
    print(f"lower bound on wall time with 2 cores fully used: {total / 2:.1f} s")


if __name__ == "__main__":
    main()
