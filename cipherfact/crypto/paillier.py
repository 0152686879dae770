"""Packed Paillier: the ``Scheme`` used by ppdnmf and FedMF.

A ``PaillierScheme`` wraps one key (public, or public + secret). Packing,
offsets, budget checks and ciphertext bytes come from ``PackedScheme``; this
module adds the key, the arithmetic (``PaillierMath``), a randomness pool
filled ahead of time, an optional process pool, and interop with ``phe`` keys.

Key byte formats are documented in ``cipherfact.crypto.keys``; the secret key is
written only by ``export_secret_key_bytes`` and read only by
``load_secret_scheme``. Scheme objects refuse to be pickled.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cipherfact.crypto.codec import FixedPointCodec, Layout, pack_slots
from cipherfact.crypto.errors import MissingSecretKeyError
from cipherfact.crypto.keys import (
    PaillierKeyMaterial,
    check_key_bits,
    decode_public,
    decode_secret,
    encode_public,
    encode_secret,
    generate_key_material,
    public_canonical,
)
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.packed import PackedCiphertext, PackedScheme, fingerprint_of
from cipherfact.crypto.paillier_math import PaillierMath
from cipherfact.crypto.parallel import SharedDecryptPool, WorkerPool
from cipherfact.crypto.prefetch import FactorPrefetcher

__all__ = ["PaillierScheme"]


def _check_codec(codec: object) -> FixedPointCodec:
    if not isinstance(codec, FixedPointCodec):
        raise TypeError(f"codec must be a FixedPointCodec, got {type(codec).__name__}")
    return codec


def _check_options(options: object) -> PaillierOptions:
    if options is None:
        return PaillierOptions()
    if not isinstance(options, PaillierOptions):
        raise TypeError(f"options must be PaillierOptions, got {type(options).__name__}")
    return options


class PaillierScheme(PackedScheme):
    """Packed, additively homomorphic Paillier under one key."""

    name: ClassVar[str] = "paillier"

    def __init__(
        self,
        key: PaillierKeyMaterial,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
    ) -> None:
        """Internal: use ``generate``, ``from_phe_keys`` or the ``load_*`` functions."""
        self.codec = _check_codec(codec)
        self.options = _check_options(options)
        self._key = key
        self._fingerprint = fingerprint_of(public_canonical(key.n))
        self.layout = Layout.for_modulus(self.codec, key.n.bit_length(), self.options.packing)
        self._math = PaillierMath(key.n, key.h_s, key.p, key.q, self.options)
        self._pool: deque[Any] = deque()
        self._workers: WorkerPool | None = None
        self._shared_pool: SharedDecryptPool | None = None
        self._prefetcher: FactorPrefetcher | None = None
        if self.options.processes > 1:
            self._workers = WorkerPool(
                self.options.processes, key.n, key.h_s, key.p, key.q, self.options
            )
            weakref.finalize(self, self._workers.close)

    # ---- construction ---------------------------------------------------------
    @classmethod
    def generate(
        cls,
        *,
        codec: FixedPointCodec,
        key_bits: int = 2048,
        insecure_test_keys: bool = False,
        options: PaillierOptions | None = None,
    ) -> PaillierScheme:
        """Fresh key pair (``key_bits`` >= 2048 unless ``insecure_test_keys``)."""
        return cls(
            generate_key_material(key_bits, insecure_test_keys), codec=codec, options=options
        )

    @classmethod
    def from_public_bytes(
        cls,
        data: bytes,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
        insecure_test_keys: bool = False,
    ) -> PaillierScheme:
        """Public-only scheme from ``public_bytes()`` output."""
        return cls(decode_public(data, insecure_test_keys), codec=codec, options=options)

    @classmethod
    def from_secret_bytes(
        cls,
        data: bytes,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
        insecure_test_keys: bool = False,
    ) -> PaillierScheme:
        """Scheme holding the secret key from ``export_secret_key_bytes()`` output."""
        return cls(decode_secret(data, insecure_test_keys), codec=codec, options=options)

    @classmethod
    def from_phe_keys(
        cls,
        public_key: Any,
        private_key: Any = None,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
        insecure_test_keys: bool = False,
    ) -> PaillierScheme:
        """Wrap ``phe.PaillierPublicKey`` (and optionally its ``PaillierPrivateKey``).

        A fresh DJN base ``h_s = h**n mod n**2`` is drawn here; the fingerprint
        depends on n only, so it matches any other wrapping of the same key.
        """
        import phe  # lazy: only interop needs it

        from cipherfact.crypto.keys import random_unit

        if not isinstance(public_key, phe.PaillierPublicKey):
            raise TypeError(
                f"public_key must be phe.PaillierPublicKey, got {type(public_key).__name__}"
            )
        n = int(public_key.n)
        if public_key.g != n + 1:
            raise ValueError("public_key must use g = n + 1 (phe's default)")
        check_key_bits(n.bit_length(), insecure_test_keys, "phe key bits")
        p = q = None
        if private_key is not None:
            if not isinstance(private_key, phe.PaillierPrivateKey):
                raise TypeError(
                    f"private_key must be phe.PaillierPrivateKey, got {type(private_key).__name__}"
                )
            if int(private_key.public_key.n) != n:
                raise ValueError("private_key does not belong to public_key")
            p, q = int(private_key.p), int(private_key.q)
        h_s = pow(random_unit(n), n, n * n)
        key = PaillierKeyMaterial(n=n, h_s=h_s, p=p, q=q, test_key=n.bit_length() < 2048)
        return cls(key, codec=codec, options=options)

    # ---- keys -----------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def has_secret_key(self) -> bool:
        return self._key.p is not None

    @property
    def key_bits(self) -> int:
        """Bit length of the modulus n."""
        return self._key.n.bit_length()

    def public(self) -> PaillierScheme:
        """Public-only copy (same codec, options and DJN base)."""
        key = PaillierKeyMaterial(n=self._key.n, h_s=self._key.h_s, test_key=self._key.test_key)
        return PaillierScheme(key, codec=self.codec, options=self.options)

    def public_bytes(self) -> bytes:
        return encode_public(self._key)

    def export_secret_key_bytes(self) -> bytes:
        """The secret key as bytes (format in ``cipherfact.crypto.keys``). Handle with care."""
        if not self.has_secret_key:
            raise MissingSecretKeyError(f"scheme with key {self.fingerprint} holds no secret key")
        return encode_secret(self._key)

    @property
    def phe_public_key(self) -> Any:
        """The key as a ``phe.PaillierPublicKey``."""
        import phe

        return phe.PaillierPublicKey(self._key.n)

    @property
    def phe_private_key(self) -> Any:
        """The secret key as a ``phe.PaillierPrivateKey`` (needs the secret key)."""
        import phe

        if self._key.p is None or self._key.q is None:
            raise MissingSecretKeyError(f"scheme with key {self.fingerprint} holds no secret key")
        return phe.PaillierPrivateKey(self.phe_public_key, self._key.p, self._key.q)

    # ---- randomness pool and workers -----------------------------------------
    @property
    def pool_size(self) -> int:
        """Randomness factors waiting in the pool."""
        return len(self._pool)

    def fill_pool(self, count: int) -> None:
        """Precompute ``count`` randomness factors; encrypt/rerandomize use each once."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        self._pool.extend(self._compute_factors(count))

    def _compute_factors(self, count: int) -> list[Any]:
        if self._workers is not None and count >= self.options.parallel_min:
            return [self._math.mpz(r) for r in self._workers.random_factors(count)]
        return self._math.random_factors(count)

    def _take_factors(self, count: int) -> list[Any]:
        taken = [self._pool.popleft() for _ in range(min(count, len(self._pool)))]
        rest = count - len(taken)
        if rest and self._prefetcher is not None:
            m = self._math
            return taken + self._prefetcher.take(m.spec, rest, self._compute_factors, m.mpz)
        return taken + self._compute_factors(rest)

    def use_prefetcher(self, prefetcher: FactorPrefetcher | None) -> None:
        """Take randomness from ``prefetcher`` (computed ahead on another core), or not.

        Shared by every scheme of a process; schemes of the same key share its
        queue. Ciphertexts decrypt the same either way.
        """
        if prefetcher is not None and not isinstance(prefetcher, FactorPrefetcher):
            raise TypeError(
                f"prefetcher must be a FactorPrefetcher, got {type(prefetcher).__name__}"
            )
        self._prefetcher = prefetcher
        if prefetcher is not None:
            prefetcher.prime(self._math.spec)

    def close(self) -> None:
        """Stop worker processes, if any were started."""
        if self._workers is not None:
            self._workers.close()

    # ---- primitives for PackedScheme -----------------------------------------
    # ---- secure aggregation (cipherfact.crypto.masking) ----------------------
    @property
    def mask_modulus(self) -> int:
        """n: masks added to packed plaintexts cancel exactly mod n in a sum."""
        return int(self._key.n)

    def encrypt_masked(self, x: np.ndarray, mask: Sequence[int]) -> PackedCiphertext:
        """Fresh encryption of ``pack(encode(x)) + mask mod n``: one fresh term.

        Decrypting it alone gives a uniformly random residue; only a sum in
        which the masks cancel decodes (``PackedScheme.decrypt`` of the sum).
        """
        units = self._slot_units(x, "x")
        packed = pack_slots(units, self.layout)
        if len(mask) != len(packed):
            raise ValueError(f"mask has {len(mask)} elements for {len(packed)} packed integers")
        n = self.mask_modulus
        ints = self._encrypt_ints([(p + int(m)) % n for p, m in zip(packed, mask, strict=True)])
        return self._make(None, int(np.asarray(x).shape[0]), 1, 1, 1, ints)

    def _encrypt_ints(self, packed: list[int]) -> list[Any]:
        return self._math.encrypt(packed, self._take_factors(len(packed)))

    def use_shared_pool(self, pool: SharedDecryptPool | None) -> None:
        """Decrypt through ``pool`` (shared with other keys of this process), or not."""
        if pool is not None and not (self._math.crt and self._math.has_secret):
            raise ValueError("a shared decryption pool needs the secret key and CRT decryption")
        self._shared_pool = pool

    def _decrypt_ints(self, cts: Sequence[Any]) -> list[int]:
        shared = self._shared_pool
        if shared is not None:
            m = self._math
            return shared.decrypt_crt(m.p, m.q, m.hp, m.hq, m.p_inv_q, cts, ifma_lanes=m.ifma_lanes)
        if self._workers is not None and len(cts) >= self.options.parallel_min:
            return self._workers.decrypt(cts)
        return self._math.decrypt(cts)

    def batch_math(self) -> PaillierMath | None:
        """This key's arithmetic when its decryptions may join a batch of other keys'
        (``cipherfact.crypto.batch``): CRT with the secret key, in this process
        (None when a worker pool decrypts for it)."""
        m = self._math
        if not (m.crt and m.has_secret) or self._shared_pool or self._workers:
            return None
        return m

    def _add_ints(self, a: Any, b: Any) -> Any:
        return self._math.add(a, b)

    def _add_plain_int(self, c: Any, plain: int) -> Any:
        return self._math.add_plain(c, plain)

    def _mul_int(self, c: Any, k: int) -> Any:
        return self._math.mul(c, k)

    def _weighted_ints(self, ints: Sequence[Sequence[Any]], ks: Sequence[int]) -> list[Any]:
        m = self._math
        return [m.weighted_product(column, ks) for column in zip(*ints, strict=True)]

    def _rerandomize_ints(self, cts: Sequence[Any]) -> list[Any]:
        factors = self._take_factors(len(cts))
        return [self._math.add(c, r) for c, r in zip(cts, factors, strict=True)]

    def _int_width(self) -> int:
        return (int(self._math.n2).bit_length() + 7) // 8

    def _int_valid(self, value: Any) -> bool:
        return 0 < value < self._math.n2

    def _load_int(self, data: memoryview) -> Any:
        return self._math.from_bytes(data, "big")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(key_bits=self.key_bits, options=dict(self.options.__dict__))
        return info
