"""A process pool for bulk Paillier work (randomness and decryption).

Workers are started with the ``spawn`` method (safe next to threads, e.g. Ray or
gRPC) and receive the key as plain integers in their initializer; they rebuild
their own ``PaillierMath`` (and DJN tables) once. Only integers travel in either
direction, never key or scheme objects.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import gmpy2

from cipherfact.crypto import ifma
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.paillier_math import PaillierMath, crt_decrypt, powmod_many

__all__ = ["SharedDecryptPool", "WorkerPool"]

_MATH: PaillierMath | None = None


def _init(n: int, h_s: int | None, p: int | None, q: int | None, options: PaillierOptions) -> None:
    global _MATH
    _MATH = PaillierMath(n, h_s, p, q, options)


def _factors(count: int) -> list[int]:
    if _MATH is None:  # pragma: no cover - initializer always runs first
        raise RuntimeError("worker not initialized")
    return [int(r) for r in _MATH.random_factors(count)]


def _decrypt(cts: list[int]) -> list[int]:
    if _MATH is None:  # pragma: no cover
        raise RuntimeError("worker not initialized")
    return _MATH.decrypt([_MATH.mpz(c) for c in cts])


def _split(count: int, parts: int) -> list[int]:
    base, extra = divmod(count, parts)
    return [base + (i < extra) for i in range(parts) if base + (i < extra)]


class WorkerPool:
    """Lazily started ``ProcessPoolExecutor`` bound to one key."""

    def __init__(
        self,
        processes: int,
        n: int,
        h_s: int | None,
        p: int | None,
        q: int | None,
        options: PaillierOptions,
    ) -> None:
        self.processes = processes
        self._initargs = (n, h_s, p, q, options)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=self._initargs,
            )
        return self._executor

    def random_factors(self, count: int) -> list[int]:
        """``count`` fresh randomness factors, computed across the workers."""
        chunks = _split(count, self.processes)
        return [r for part in self._pool().map(_factors, chunks) for r in part]

    def decrypt(self, cts: Sequence[object]) -> list[int]:
        """Decrypt ciphertext integers across the workers (order kept)."""
        ints = [int(c) for c in cts]  # type: ignore[call-overload]
        size = -(-len(ints) // self.processes)
        chunks = [ints[i : i + size] for i in range(0, len(ints), size)]
        return [m for part in self._pool().map(_decrypt, chunks) for m in part]

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _crt_half(prime: int, h: int, c: int) -> int:
    """m mod prime from ciphertext c: L_p(c**(p-1) mod p**2) * h_p mod p."""
    p = gmpy2.mpz(prime)
    p2 = p * p
    return int((gmpy2.powmod(gmpy2.mpz(c) % p2, p - 1, p2) - 1) // p * h % p)


def _crt_batch(
    p: int, q: int, hp: int, hq: int, p_inv_q: int, cts: list[int], ifma_lanes: int
) -> list[int]:
    """CRT decryption of a chunk, both halves of every ciphertext in multi-buffer lanes."""
    mpz = gmpy2.mpz
    lanes: int | None = ifma_lanes if ifma.available() else None

    def powmods(bases: Sequence[object], exps: Sequence[object], mods: Sequence[object]) -> list:
        return powmod_many(bases, exps, mods, lanes)

    return crt_decrypt(
        [mpz(c) for c in cts], mpz(p), mpz(q), mpz(hp), mpz(hq), mpz(p_inv_q), powmods
    )


class SharedDecryptPool:
    """Worker processes shared by every key in this process.

    An in-memory simulation hosts many agents, each with its own key; one pool
    per key would start (and mostly idle) processes by the dozen. Here each
    task carries the prime it needs as a plain integer (same process tree, no
    pickled key objects), and a decryption is split into its two CRT halves,
    so even a single ciphertext keeps two cores busy. With the multi-buffer
    fast path (``ifma_lanes``), tasks are chunks of ciphertexts instead, at
    least ``LANES // 2`` per task, so that each library call fills its lanes.
    """

    def __init__(self, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive int, got {processes!r}")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    def decrypt_crt(
        self,
        p: int,
        q: int,
        hp: int,
        hq: int,
        p_inv_q: int,
        cts: Sequence[object],
        *,
        ifma_lanes: int | None = None,
    ) -> list[int]:
        """CRT decryption of packed ciphertext integers, across the workers (order kept).

        ``ifma_lanes`` (``PaillierMath.ifma_lanes``): None splits every
        ciphertext into its two halves, one task each; a number sends chunks to
        the multi-buffer path (see ``paillier_math.powmod_many``).
        """
        pool = self._pool()
        ip, iq, ihp, ihq = int(p), int(q), int(hp), int(hq)
        if ifma_lanes is not None and len(cts) * 2 >= ifma_lanes:
            ints = [int(c) for c in cts]  # type: ignore[call-overload]
            size = max(-(-len(ints) // self.processes), ifma.LANES // 2)
            futures = [
                pool.submit(
                    _crt_batch, ip, iq, ihp, ihq, int(p_inv_q), ints[i : i + size], ifma_lanes
                )
                for i in range(0, len(ints), size)
            ]
            return [m for f in futures for m in f.result()]
        halves = [
            (pool.submit(_crt_half, ip, ihp, int(c)), pool.submit(_crt_half, iq, ihq, int(c)))  # type: ignore[call-overload]
            for c in cts
        ]
        out = []
        for fp, fq in halves:
            mp, mq = fp.result(), fq.result()
            out.append(mp + ip * ((mq - mp) * int(p_inv_q) % iq))
        return out

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> SharedDecryptPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
