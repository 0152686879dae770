"""Paillier arithmetic on raw integers (g = n + 1).

Kept free of scheme objects so that worker processes can rebuild it from plain
integers: keys never cross a process boundary as pickled objects.

    Enc(m; R) = (1 + m*n) * R mod n**2,   R = r**n  or  R = h_s**a  (DJN)
    Dec(c)    = L(c**lambda mod n**2) * mu mod n,  or its CRT form per prime.

Bulk exponentiations (every ciphertext of a decryption call, both CRT halves;
full-length ``r**n`` randomness) go through ``powmod_many``, which hands them
to Intel's multi-buffer library eight at a time when ``PaillierOptions.fast_path``
selects it (``cipherfact.crypto.ifma``, its calls on ``ifma_threads`` threads);
the results are identical either way. ``weighted_product`` shares one
squaring chain across the terms of a weighted sum (Straus).
DJN randomness keeps its fixed-base table: at 448-bit exponents the table is
~1.7x faster than the multi-buffer exponentiation (measured here).
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import gmpy2

from cipherfact.crypto import ifma
from cipherfact.crypto.djn import FixedBaseTable, wide_window
from cipherfact.crypto.keys import random_unit
from cipherfact.crypto.options import PaillierOptions

__all__ = [
    "KeySpec",
    "PaillierMath",
    "crt_decrypt",
    "crt_join",
    "crt_powmod_args",
    "fast_path_lanes",
    "powmod_many",
]

#: (n, h_s, p, q, options) as plain integers: what rebuilds a key's arithmetic in a
#: worker process (primes only for a key owner's own workers, never across hosts)
KeySpec = tuple[int, int | None, int | None, int | None, PaillierOptions]


def fast_path_lanes(options: PaillierOptions) -> int | None:
    """Fewest filled lanes worth a multi-buffer call under ``options``; None: never.

    ``fast_path="ifma"`` raises ``ifma.IfmaUnavailableError`` (naming the
    ``fast`` extra) when the library or the CPU feature is missing.
    """
    if options.fast_path == "gmpy2":
        return None
    if options.fast_path == "ifma":
        ifma.require()
        return 1
    if options.use_gmpy2 and ifma.available():
        return ifma.AUTO_MIN_LANES
    return None


def powmod_many(
    bases: Sequence[Any],
    exps: Sequence[Any],
    mods: Sequence[Any],
    ifma_lanes: int | None,
    powmod: Callable[[Any, Any, Any], Any] = gmpy2.powmod,
    executor: Executor | None = None,
) -> list[Any]:
    """``[powmod(b, e, m) ...]``, through the multi-buffer library when ``ifma_lanes`` allows.

    ``ifma_lanes`` (from ``fast_path_lanes``): None for the scalar ``powmod``
    only; else batches (and leftover groups) filling at least that many lanes go
    to the library, the rest to ``powmod``. The library returns ``gmpy2.mpz``;
    callers on Python ints convert. ``executor``: threads for the library calls
    (``ifma.powmod_batch``).
    """
    if ifma_lanes is not None and len(bases) >= ifma_lanes:
        return ifma.powmod_batch(bases, exps, mods, min_lanes=ifma_lanes, executor=executor)
    return [powmod(b, e, m) for b, e, m in zip(bases, exps, mods, strict=True)]


def crt_decrypt(
    cts: Sequence[Any],
    p: Any,
    q: Any,
    hp: Any,
    hq: Any,
    p_inv_q: Any,
    powmods: Callable[[Sequence[Any], Sequence[Any], Sequence[Any]], list[Any]],
) -> list[int]:
    """Paillier CRT decryption of a batch (as phe does, per prime):

    m_p = L_p(c**(p-1) mod p**2) * h_p mod p, the same mod q, joined by CRT.
    Both halves of every ciphertext go to ``powmods`` as one batch, so a
    multi-buffer backend fills its lanes with p- and q-halves alike.
    """
    bases, exps, mods = crt_powmod_args(cts, p, q)
    return crt_join(powmods(bases, exps, mods), p, q, hp, hq, p_inv_q)


def crt_powmod_args(cts: Sequence[Any], p: Any, q: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """The exponentiations of a CRT decryption: every p-half, then every q-half."""
    p2, q2 = p * p, q * q
    k = len(cts)
    return (
        [c % p2 for c in cts] + [c % q2 for c in cts],
        [p - 1] * k + [q - 1] * k,
        [p2] * k + [q2] * k,
    )


def crt_join(r: Sequence[Any], p: Any, q: Any, hp: Any, hq: Any, p_inv_q: Any) -> list[int]:
    """Plaintexts from the results of ``crt_powmod_args``'s exponentiations."""
    k = len(r) // 2
    out = []
    for i in range(k):
        mp = (r[i] - 1) // p * hp % p
        mq = (r[k + i] - 1) // q * hq % q
        out.append(int(mp + p * ((mq - mp) * p_inv_q % q)))
    return out


@functools.lru_cache(maxsize=256)
def _public_table(
    h_s: int, n2: int, bits: int, window: int, wide: bool, use_gmpy2: bool
) -> FixedBaseTable:
    """Fixed-base table of a *public* key, shared by every holder in this process.

    A simulation hosts many agents per process and each loads its neighbours'
    public keys: without sharing, one key's 4 MB table is built once per
    neighbour that holds it. Tables are read-only after construction; only
    public values go into the cache key. ``wide``: a wider window within the
    process's budget (charged once per key, here).
    """
    if wide:
        window = wide_window([n2.bit_length()], bits, window)
    return FixedBaseTable(h_s, n2, bits, window, gmpy2.mpz if use_gmpy2 else int)


#: scalars below this multiply a ciphertext by square-and-multiply rather than
#: ``powmod``: 4096-bit n**2, two runs of ``benchmarks/short_scalar.py``: 6-bit
#: 0.79x and 0.82x the time of ``gmpy2.powmod``, 8- to 12-bit 0.85x to 1.04x
#: depending on the scalar's bits, so the switch stays below 8 bits
SHORT_SCALAR = 1 << 7


class PaillierMath:
    """All modular arithmetic for one key, with the fast paths the options select."""

    def __init__(
        self, n: int, h_s: int | None, p: int | None, q: int | None, options: PaillierOptions
    ) -> None:
        fast = options.use_gmpy2
        self.mpz: Callable[[int], Any] = gmpy2.mpz if fast else int
        #: big-endian bytes -> the working type, without an ``int`` in between
        self.from_bytes: Callable[..., Any] = gmpy2.mpz.from_bytes if fast else int.from_bytes
        self.powmod: Callable[[Any, Any, Any], Any] = gmpy2.powmod if fast else pow
        mpz = self.mpz
        self.options = options
        #: the plain integers (and options) this arithmetic is built from: what a
        #: worker process needs to rebuild it (``parallel``, ``prefetch``)
        self.spec: KeySpec = (
            int(n),
            None if h_s is None else int(h_s),
            None if p is None else int(p),
            None if q is None else int(q),
            options,
        )
        self.ifma_lanes = fast_path_lanes(options)
        threads = options.ifma_threads or ifma.auto_threads()
        #: threads for the library calls of one bulk operation (None: this thread)
        self.executor: Executor | None = (
            ifma.thread_pool(threads) if self.ifma_lanes is not None and threads > 1 else None
        )
        self.n = mpz(n)
        self.n2 = self.n * self.n
        self.h_s = None if h_s is None else mpz(h_s)
        self.has_secret = p is not None and q is not None
        self.crt = options.crt and self.has_secret
        self.djn = options.djn and h_s is not None and (self.has_secret or options.djn_public)
        self._tables: tuple[FixedBaseTable, ...] | None = None
        if p is not None and q is not None:
            self._init_secret(mpz(p), mpz(q))

    def _init_secret(self, p: Any, q: Any) -> None:
        inv = gmpy2.invert if self.options.use_gmpy2 else (lambda a, m: pow(int(a), -1, int(m)))
        self.p, self.q = p, q
        self.p2, self.q2 = p * p, q * q
        # decryption by CRT (as phe does): h_p = L_p((n+1)**(p-1) mod p**2)**-1 mod p
        g = self.n + 1
        self.hp = self.mpz(inv((self.powmod(g, p - 1, self.p2) - 1) // p, p))
        self.hq = self.mpz(inv((self.powmod(g, q - 1, self.q2) - 1) // q, q))
        self.p_inv_q = self.mpz(inv(p, q))
        # encryption by CRT: r**n mod p**2 = r**(n mod p(p-1)) mod p**2
        self.en_p = self.n % (p * (p - 1))
        self.en_q = self.n % (q * (q - 1))
        self.q2_inv_p2 = self.mpz(inv(self.q2, self.p2))
        # decryption without CRT: lambda = lcm(p-1, q-1), mu = L(g**lambda)**-1 mod n
        self.lam = self.mpz(math.lcm(int(p) - 1, int(q) - 1))
        self.mu = self.mpz(inv((self.powmod(g, self.lam, self.n2) - 1) // self.n, self.n))

    # ---- randomness -----------------------------------------------------------
    def _crt_n2(self, xp: Any, xq: Any) -> Any:
        return xq + self.q2 * ((xp - xq) * self.q2_inv_p2 % self.p2)

    def _djn_tables(self) -> tuple[FixedBaseTable, ...]:
        if self.h_s is None:  # unreachable: self.djn requires h_s
            raise ValueError("DJN randomness needs h_s in the public key")
        if self._tables is None:
            bits, w = self.options.djn_exponent_bits, self.options.djn_window_bits
            if self.crt:
                if self.options.djn_wide_tables:
                    w = wide_window([int(self.p2).bit_length(), int(self.q2).bit_length()], bits, w)
                self._tables = (
                    FixedBaseTable(self.h_s % self.p2, self.p2, bits, w, self.mpz),
                    FixedBaseTable(self.h_s % self.q2, self.q2, bits, w, self.mpz),
                )
            else:
                self._tables = (
                    _public_table(
                        int(self.h_s),
                        int(self.n2),
                        bits,
                        w,
                        self.options.djn_wide_tables,
                        self.options.use_gmpy2,
                    ),
                )
        return self._tables

    def random_factor(self) -> Any:
        """One fresh n-th residue R (DJN ``h_s**a`` or full ``r**n``)."""
        if self.djn:
            a = secrets.randbits(self.options.djn_exponent_bits)
            tables = self._djn_tables()
            if self.crt:
                return self._crt_n2(tables[0].pow(a), tables[1].pow(a))
            return tables[0].pow(a)
        r = self.mpz(random_unit(int(self.n)))
        if self.crt:
            return self._crt_n2(
                self.powmod(r % self.p2, self.en_p, self.p2),
                self.powmod(r % self.q2, self.en_q, self.q2),
            )
        return self.powmod(r, self.n, self.n2)

    def random_factors(self, count: int) -> list[Any]:
        """``count`` fresh factors; full-length ``r**n`` ones as one bulk exponentiation."""
        if self.djn or count < 1:
            return [self.random_factor() for _ in range(count)]
        rs = [self.mpz(random_unit(int(self.n))) for _ in range(count)]
        if self.crt:
            p2, q2 = self.p2, self.q2
            pw = self.powmod_many(
                [r % p2 for r in rs] + [r % q2 for r in rs],
                [self.en_p] * count + [self.en_q] * count,
                [p2] * count + [q2] * count,
            )
            return [self._crt_n2(pw[i], pw[count + i]) for i in range(count)]
        return self.powmod_many(rs, [self.n] * count, [self.n2] * count)

    def powmod_many(
        self,
        bases: Sequence[Any],
        exps: Sequence[Any],
        mods: Sequence[Any],
    ) -> list[Any]:
        """Bulk ``powmod`` on this key's fast path (multi-buffer when the options allow,
        its calls on ``ifma_threads`` threads)."""
        out = powmod_many(bases, exps, mods, self.ifma_lanes, self.powmod, self.executor)
        if self.ifma_lanes is not None and not self.options.use_gmpy2:
            return [int(x) for x in out]
        return out

    # ---- the operations -------------------------------------------------------
    def encrypt(self, plain: Sequence[int], factors: Sequence[Any]) -> list[Any]:
        n, n2 = self.n, self.n2
        return [(1 + self.mpz(m) * n) * r % n2 for m, r in zip(plain, factors, strict=True)]

    def decrypt(self, cts: Sequence[Any]) -> list[int]:
        if not self.has_secret:
            raise ValueError("decrypt needs the secret key")
        if self.crt:
            return crt_decrypt(
                cts, self.p, self.q, self.hp, self.hq, self.p_inv_q, self.powmod_many
            )
        n, k = self.n, len(cts)
        powers = self.powmod_many(cts, [self.lam] * k, [self.n2] * k)
        return [int((x - 1) // n * self.mu % n) for x in powers]

    def add(self, a: Any, b: Any) -> Any:
        return a * b % self.n2

    def add_plain(self, c: Any, m: int) -> Any:
        return c * (1 + self.mpz(m) * self.n) % self.n2

    def mul(self, c: Any, k: int) -> Any:
        if 0 < k < SHORT_SCALAR:
            return self._square_multiply(c, k)
        return self.powmod(c, self.mpz(k), self.n2)

    def _square_multiply(self, c: Any, k: int) -> Any:
        """``c**k mod n**2`` for a short ``k > 0`` by plain square-and-multiply: for
        ppdnmf's 6-bit reply weights about 0.8x the time of ``gmpy2.powmod``,
        whose Montgomery set-up does not pay for so few steps."""
        n2, acc = self.n2, c
        for bit in reversed(range(k.bit_length() - 1)):
            acc = acc * acc % n2
            if k >> bit & 1:
                acc = acc * c % n2
        return acc

    def weighted_product(self, cs: Sequence[Any], ks: Sequence[int]) -> Any:
        """``prod(mul(c, k))`` (the ciphertext of sum k_j m_j) with one squaring chain
        shared by every term (Straus): max bit length squarings plus one
        multiplication per set bit, instead of a full ``powmod`` per term."""
        n2 = self.n2
        bases, exps = [], []
        for c, k in zip(cs, ks, strict=True):
            if k < 0:
                c, k = self.powmod(c, -1, n2), -k
            if k:
                bases.append(c)
                exps.append(k)
        acc = None
        for bit in reversed(range(max((k.bit_length() for k in exps), default=0))):
            if acc is not None:
                acc = acc * acc % n2
            for b, k in zip(bases, exps, strict=True):
                if k >> bit & 1:
                    acc = b if acc is None else acc * b % n2
        return self.mpz(1) if acc is None else acc
