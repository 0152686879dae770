"""Decrypt many ciphertexts, under many keys, in one batch.

Intel's multi-buffer exponentiation (``ifma``) costs the same per call
whether 3 or 8 of its lanes are filled, and a ppdnmf agent decrypts only 3-4
packed integers (6-8 CRT halves) per round. A host running several agents
(the in-memory run, a Ray actor) can instead collect every agent's
decryption of a round and run all their CRT halves together: the p**2 and
q**2 moduli of every 2048-bit key fall in the same size slot, so they share
calls, and the lanes stay full.

A ``DecryptBatch`` collects (scheme, ciphertext, continuation) items; a host
calls ``flush`` when nothing else is left to do, which exponentiates every
item's halves in one ``powmod_many`` call and hands each continuation a
function returning that item's plaintext (so the per-item checks, and the
errors they raise, happen in the caller's own error handling). The plaintext
is exactly what ``scheme.decrypt(ct)`` gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from cipherfact.crypto.base import Ciphertext
from cipherfact.crypto.packed import PackedCiphertext, PackedScheme
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.crypto.paillier_math import PaillierMath, crt_join, crt_powmod_args

__all__ = ["DecryptBatch", "Then"]

R = TypeVar("R")
#: an item's continuation: (its plaintext, when called; its share of the batch's seconds)
Then = Callable[[Callable[[], np.ndarray], float], R]


class DecryptBatch(Generic[R]):
    """Pending decryptions of one host, decrypted together by ``flush``."""

    def __init__(self) -> None:
        self._items: list[tuple[PackedScheme, PackedCiphertext, Then[R]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, scheme: PackedScheme, ct: Ciphertext, then: Then[R]) -> None:
        """Queue ``scheme.decrypt(ct)``; ``then`` runs at the next ``flush``.

        The ciphertext's key and the secret key are checked here, as
        ``decrypt`` would (``KeyMismatchError``, ``MissingSecretKeyError``).
        """
        own = scheme._own(ct)
        scheme._require_secret()
        self._items.append((scheme, own, then))

    def flush(self) -> list[R]:
        """Decrypt every queued item and return its continuation's result, in order."""
        items, self._items = self._items, []
        if not items:
            return []
        start = time.perf_counter()
        packed = _decrypt_packed([(s, ct) for s, ct, _ in items])
        share = (time.perf_counter() - start) / len(items)
        out = []
        for (scheme, ct, then), ints in zip(items, packed, strict=True):
            out.append(then(_decoder(scheme, ct, ints), share))
        return out


def _decoder(scheme: PackedScheme, ct: PackedCiphertext, ints: list[int]) -> Callable[[], Any]:
    return lambda: scheme.decode_decrypted(ct, ints)


def _decrypt_packed(items: list[tuple[PackedScheme, PackedCiphertext]]) -> list[list[int]]:
    """Packed plaintext integers of every item: CRT keys in shared bulk calls."""
    out: list[list[int] | None] = [None] * len(items)
    groups: dict[tuple[int | None, bool], list[tuple[int, PaillierMath]]] = {}
    for i, (scheme, ct) in enumerate(items):
        math = scheme.batch_math() if isinstance(scheme, PaillierScheme) else None
        if math is None:
            out[i] = scheme._decrypt_ints(ct.ints)
        else:
            key = (math.ifma_lanes, math.options.use_gmpy2)
            groups.setdefault(key, []).append((i, math))
    for members in groups.values():
        bases: list[Any] = []
        exps: list[Any] = []
        mods: list[Any] = []
        spans = []
        for i, math in members:
            b, e, m = crt_powmod_args(items[i][1].ints, math.p, math.q)
            spans.append((i, math, len(bases), len(b)))
            bases += b
            exps += e
            mods += m
        results = members[0][1].powmod_many(bases, exps, mods)
        for i, math, at, size in spans:
            out[i] = crt_join(
                results[at : at + size], math.p, math.q, math.hp, math.hq, math.p_inv_q
            )
    return [x if x is not None else [] for x in out]
