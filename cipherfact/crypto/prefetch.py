"""Paillier randomness computed ahead of use, on another core.

Every encryption and re-randomization needs one fresh n-th residue R (DJN
``h_s**a`` or full ``r**n``); in the in-memory ppdnmf run that was ~40% of
the protocol's time (cProfile, secagg), all on one core while the second idled. R does not depend
on the plaintext, so it can be computed before it is needed: a
``FactorPrefetcher`` keeps, per key, a queue of factors that one worker
process tops up while the protocol runs, and hands them out as encryptions
ask. A process rather than a thread: the fixed-base table multiplications
hold Python's GIL (gmpy2 releases it only in ``powmod_*_list``), and the
multi-buffer library, which does release it, takes ~1.75x the time of a 7-bit
table for short DJN exponents (4096-bit n**2, 448-bit exponents;
``benchmarks/djn_window.py``).

Results cannot change: a factor is consumed once, whichever process made it,
and plaintexts never depend on it. When a queue runs dry the caller computes
the rest inline, so a slow or busy worker only costs speed.

The worker gets each key as plain integers (primes included for a key owner's
CRT randomness, as ``parallel.SharedDecryptPool`` does: a child of the same
host, never a trust boundary) and draws every exponent from ``secrets``
itself; factors travel back as integers and are used once. It builds each
key's DJN tables once for the whole run, so it affords public keys wider
windows than the options' within a memory budget (``worker_options``); the
factors' distribution does not depend on the window.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from cipherfact.crypto.djn import table_bytes
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.paillier_math import KeySpec, PaillierMath

__all__ = [
    "PREFETCH_TABLE_BUDGET",
    "FactorPrefetcher",
    "key_table_bytes",
    "spec_table_bytes",
]

#: bytes of DJN tables (at the keys' own windows) whose keys one worker serves;
#: later keys get no queue and are computed by the caller. Every key the worker
#: serves costs it a table build and the memory (a 200-agent Ray run without
#: this bound: 1.7x the protocol time and 1.7x the memory of no worker at all,
#: BENCHMARKS.md); 96 MB holds the 10-agent scenarios' 20 keys at 7-bit windows
PREFETCH_TABLE_BUDGET = 96 * 2**20

_WORKER_MATH: dict[KeySpec, PaillierMath] = {}


def _lower_priority(increment: int) -> None:
    """In the worker, at start: run ``increment`` nice levels below the caller, so
    that the worker mostly takes CPU time the protocol leaves idle."""
    if increment:  # not POSIX, or not allowed: the worker runs at the same priority
        with contextlib.suppress(AttributeError, OSError):
            os.nice(increment)


def worker_options(spec: KeySpec) -> PaillierOptions:
    """The options the worker computes ``spec``'s factors with: a public key's tables
    as wide as the process's budget allows (``djn.wide_window``), a key owner's at
    the options' window.

    The worker's tables serve the whole run, so wider windows pay for their
    build, but the budget holds only some of a host's keys at 9 bits, and the
    first come were the owners' (each agent's offers start before its
    neighbours' keys arrive). A public key's factor is one chain of 4096-bit
    products, drawn once per reply or share, against two chains of 2048-bit
    ones for an owner's, drawn once per offer: the budget saves more on the
    public keys. Median outer iteration, 10-outer A/B runs: pairwise on Ray
    1.43-1.47 s against 1.49-1.53 s, in memory 1.43 against 1.52, secagg on
    Ray 0.89 against 0.94-0.96 (BENCHMARKS.md, issue 13).
    """
    return replace(spec[4], djn_wide_tables=spec[2] is None)


def _worker_factors(spec: KeySpec, count: int) -> list[int]:
    """In the worker: ``count`` fresh factors for one key (its arithmetic cached)."""
    math = _WORKER_MATH.get(spec)
    if math is None:
        math = _WORKER_MATH[spec] = PaillierMath(*spec[:4], worker_options(spec))
    return [int(r) for r in math.random_factors(count)]


def key_table_bytes(n_bits: int, options: PaillierOptions, *, owner: bool) -> int:
    """Bytes of the DJN tables one key of an ``n_bits`` modulus builds at the options'
    window: two (mod p**2 and q**2) for its owner (CRT), one mod n**2 for a public
    holder with ``djn_public``; 0 for full-length ``r**n`` randomness (no table)."""
    if not options.djn:
        return 0
    bits, window = options.djn_exponent_bits, options.djn_window_bits
    if owner:
        return 2 * table_bytes(n_bits, bits, window)
    return table_bytes(2 * n_bits, bits, window) if options.djn_public else 0


def spec_table_bytes(spec: KeySpec) -> int:
    """``key_table_bytes`` of the key ``spec`` describes."""
    n, h_s, p, q, options = spec
    if h_s is None:
        return 0
    return key_table_bytes(n.bit_length(), options, owner=p is not None and q is not None)


@dataclass
class _KeyQueue:
    """Factors ready for one key, and the worker batches still being computed."""

    ready: deque[Any] = field(default_factory=deque)
    inflight: deque[tuple[Future[list[int]], int]] = field(default_factory=deque)
    largest_take: int = 0

    @property
    def pending(self) -> int:
        return len(self.ready) + sum(n for _, n in self.inflight)


class FactorPrefetcher:
    """One worker process that computes randomness factors ahead of use, for many keys.

    ``depth``: how many of a key's largest requests to keep ready or in the
    making (a ppdnmf hub's key is used once per neighbour per round); a key's
    queue is refilled when it falls to half that, in one task, because every
    task costs a round trip through the executor's threads. ``min_batch``:
    fewest factors per worker task. ``nice``: how many nice levels below this
    process the worker runs (0: the same priority). Where every core already
    runs a protocol process (Ray actors, one per core) a worker at nice 19
    mostly fills the time the actors spend waiting for each other's messages
    (Ray starts actors at nice 15, so a busy actor still leaves the worker
    about 15/51 of its core); at the same priority it would take half.
    ``table_budget``: the worker serves keys, first come first served, while
    their tables (``spec_table_bytes``) fit; the others' factors are always
    computed by the caller, so a host with hundreds of keys keeps a bounded
    worker. The worker starts with the first key it serves (``prime``, which a
    scheme's ``use_prefetcher`` calls); ``close`` stops it.
    """

    def __init__(
        self,
        *,
        depth: int = 32,
        min_batch: int = 16,
        nice: int = 0,
        table_budget: int = PREFETCH_TABLE_BUDGET,
    ) -> None:
        for name, value in (("depth", depth), ("min_batch", min_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"nice must be an int in [0, 19], got {nice!r}")
        if isinstance(table_budget, bool) or not isinstance(table_budget, int) or table_budget < 0:
            raise ValueError(f"table_budget must be an int >= 0, got {table_budget!r}")
        self.depth = depth
        self.min_batch = min_batch
        self.nice = nice
        self.table_budget = table_budget
        self._table_bytes = 0  # tables of the keys served so far
        self._declined: set[KeySpec] = set()  # keys past the budget: computed inline
        self._queues: dict[KeySpec, _KeyQueue] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.inline = 0  # factors the callers had to compute themselves (queue empty)
        self.prefetched = 0  # factors handed out from the queues
        weakref.finalize(self, FactorPrefetcher._shutdown, self.__dict__)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
                initargs=(self.nice,),
            )
        return self._executor

    def take(
        self, spec: KeySpec, count: int, compute: Callable[[int], list[Any]], to_int: Callable
    ) -> list[Any]:
        """``count`` fresh factors for the key ``spec``: prefetched ones first, the rest
        from ``compute`` (this process); then ask the worker to refill the queue.

        ``to_int`` converts the worker's integers to the caller's type (``mpz``).
        """
        got: list[Any] = []
        with self._lock:
            queue = self._queue(spec)  # None: not served, the caller computes every factor
            if queue is not None:
                while queue.inflight and queue.inflight[0][0].done():
                    future, _ = queue.inflight.popleft()
                    queue.ready.extend(to_int(r) for r in future.result())
                got = [queue.ready.popleft() for _ in range(min(count, len(queue.ready)))]
                self.prefetched += len(got)
                queue.largest_take = max(queue.largest_take, count)
                target, pending = self.depth * queue.largest_take, queue.pending
                if pending <= target // 2:  # refill in large batches: each task is a round trip
                    batch = max(target - pending, self.min_batch)
                    task = self._pool().submit(_worker_factors, spec, batch)
                    queue.inflight.append((task, batch))
        missing = count - len(got)
        if missing:
            self.inline += missing
            got += compute(missing)
        return got

    def prime(self, spec: KeySpec) -> None:
        """Start on ``spec``'s first factors now, before any ``take``.

        The first batch also starts the worker process and builds the key's
        tables; left to the first ``take``, that happens while the protocol
        waits for factors, which the caller then computes itself (the first
        outer iteration of a pairwise Ray run: 2.96-3.08 s primed, 3.14-3.61 s
        not, BENCHMARKS.md issue 13). A key past the table budget, or one
        already queued, is left as it is.
        """
        with self._lock:
            queue = self._queue(spec)
            if queue is not None and not queue.pending:
                task = self._pool().submit(_worker_factors, spec, self.min_batch)
                queue.inflight.append((task, self.min_batch))

    def _queue(self, spec: KeySpec) -> _KeyQueue | None:
        """``spec``'s queue, made when its tables fit the budget; None past it."""
        queue = self._queues.get(spec)
        if queue is None and spec not in self._declined:
            need = spec_table_bytes(spec)
            if self._table_bytes + need > self.table_budget:
                self._declined.add(spec)
                return None
            self._table_bytes += need
            queue = self._queues[spec] = _KeyQueue()
        return queue

    def close(self) -> None:
        """Stop the worker and drop what it computed (idempotent)."""
        FactorPrefetcher._shutdown(self.__dict__)

    @staticmethod
    def _shutdown(state: dict[str, Any]) -> None:
        executor = state.get("_executor")
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            state["_executor"] = None
        state.get("_queues", {}).clear()

    def __enter__(self) -> FactorPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
