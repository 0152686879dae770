"""CKKS over TenSEAL, behind the project's ``Scheme`` interface.

Why a wrapper rather than TenSEAL directly: TenSEAL fails late and obscurely
("scale out of bounds") when a multiplication runs past the modulus chain,
silently mod-switches its *operands* in place, and its deserializers trust
their input. This module refuses too-deep multiplications up front, keeps
every operation free of side effects on its inputs, and validates untrusted
bytes before TenSEAL sees them.

Depth is read from each ciphertext itself (how many primes its modulus has
left), never trusted from a header. Values are not range-checked against the
headroom: the worst-case bound (``CkksParams.max_abs_value``) is what
``plan_ckks_params`` budgets for, but random vectors decrypt correctly well
beyond it, so refusing them here would forbid the masks the protocols use.

Key material per role: ``public_bytes`` is the *evaluation* context (public
key + relinearization keys), for a party that multiplies ciphertexts;
``encryption_bytes`` is the public encryption key alone (about a quarter of the
size), for a party that only encrypts. Both load with ``load_public_ckks`` and
share one fingerprint (the hash of the encryption-only bytes), so ciphertexts
made under either are interchangeable.

Wire levers (``encrypt_bytes``, ``mod_switch``): the key holder encrypts
symmetrically and sends SEAL's *seeded* form (the second polynomial is replaced
by the seed it was drawn from: half the bytes); anyone can drop primes a
ciphertext will not need before sending it. TenSEAL exposes neither, so both go
through SEAL's own Python bindings (``tenseal.sealapi``) with the same
parameters; the receiver loads the bytes with TenSEAL as usual, and SEAL
validates them (and expands a seed) on load.

Security note: rerandomization adds a fresh encryption of zero; it does not
flood the noise, so a decryptor could in principle learn something about the
computation from the decryption error (CKKS is not circuit-private). The CKKS
protocol masks values additively before they reach the key holder.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import itertools
import operator
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.ckks_params import CkksParams, get_ckks_params
from cipherfact.crypto.errors import (
    BudgetExceededError,
    CryptoError,
    DecodeError,
    KeyMismatchError,
    MissingSecretKeyError,
)

__all__ = [
    "CkksCiphertext",
    "CkksScheme",
    "MissingEvaluationKeyError",
    "load_public_ckks",
    "load_secret_ckks",
    "make_ckks_scheme",
]

# Ciphertext wire format (big-endian):
#   magic "CFCK" | version u8 | scheme id u8 | fingerprint 8 bytes | size u64 |
#   depth u8 | chunk count u32 | per chunk: length u32 + TenSEAL bytes
_CT_MAGIC = b"CFCK"
_CT_VERSION = 1
_SCHEME_ID = 3  # packed.SCHEME_IDS holds paillier 1, plain 2; ckks is 3
_CT_HEADER = struct.Struct(">4sBB8sQBI")
_CHUNK_LEN = struct.Struct(">I")
_MAX_VALUES = 1 << 32

# Public-context wire format (same prefix as Paillier's public keys):
#   magic "CFPK" | version u8 | scheme id u8 | poly degree u32 | scale bits u8 |
#   prime count u8 | prime bits (u8 each) | context length u64 | TenSEAL context
# version 1: evaluation context (public key + relinearization keys);
# version 2: encryption key only (public key, nothing else).
# Secret-key format, written only by ``export_secret_key_bytes``:
#   magic "CFSK" | version u8 | scheme id u8 | public length u64 | public bytes |
#   context length u64 | TenSEAL context with the secret key
_CTX_MAGIC = b"CFPK"
_SK_MAGIC = b"CFSK"
_CTX_VERSION = 1
_ENC_CTX_VERSION = 2
_CTX_HEADER = struct.Struct(">4sBBIBB")
_SK_HEADER = struct.Struct(">4sBB")
_CTX_LEN = struct.Struct(">Q")
_MAX_CONTEXT_BYTES = 1 << 30

# Everything TenSEAL/SEAL raises on bad input or an impossible operation.
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, OverflowError, MemoryError, IndexError)


class MissingEvaluationKeyError(CryptoError):
    """A ciphertext product was asked of a context that holds no relinearization keys."""


@dataclass(frozen=True, eq=False)
class CkksCiphertext(Ciphertext):
    """An encrypted vector: one TenSEAL CKKS vector per ``slot_count`` values."""

    key_fingerprint: str
    size: int
    depth: int
    chunks: tuple[ts.CKKSVector, ...]

    def __repr__(self) -> str:  # never show ciphertext internals
        return (
            f"CkksCiphertext(size={self.size}, depth={self.depth}, "
            f"chunks={len(self.chunks)}, key={self.key_fingerprint})"
        )


def _level(vec: ts.CKKSVector) -> int:
    """Primes left in a vector's modulus (fewer after each rescale)."""
    return int(vec.ciphertext()[0].coeff_modulus_size())


def _check_vector(x: Any, name: str) -> np.ndarray:
    """A finite 1-D float64 copy of ``x``, or a ValueError/TypeError naming ``name``."""
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.size > _MAX_VALUES:
        raise ValueError(f"{name} has {arr.size} values, above the limit {_MAX_VALUES}")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return out


class CkksScheme(Scheme):
    """One CKKS context (public, or public + secret) with depth accounting.

    Build one with ``make_ckks_scheme`` (fresh keys) or ``load_public_ckks``.
    """

    name: ClassVar[str] = "ckks"

    def __init__(
        self, context: ts.Context, params: CkksParams, public_context: ts.Context | None = None
    ) -> None:
        """Internal: use ``make_ckks_scheme``/``generate`` or the loaders."""
        self._ctx = context
        self._params = params
        # TenSEAL draws a new public key whenever it copies or reloads a private
        # context, so the public view is made once and everything derives from it.
        if public_context is None:
            public_context = _public_copy(context) if context.has_secret_key() else context
        self._public_ctx = public_context
        self._encryption_bytes = _context_bytes(self._public_ctx, params, relin=False)
        self._public_bytes = (
            _context_bytes(self._public_ctx, params, relin=True)
            if self._public_ctx.has_relin_keys()
            else self._encryption_bytes
        )
        # The encryption key names the key pair: a party holding only it and a
        # party holding the evaluation keys too must agree on ciphertexts' owner.
        self._fingerprint = hashlib.sha256(self._encryption_bytes).hexdigest()[:16]
        self._seal: _SealSide | None = None

    # -- construction (the names ``cipherfact.crypto.registry`` calls) ----------

    @classmethod
    def generate(
        cls, *, params: str | CkksParams = "n8192-depth2", n_threads: int = 1
    ) -> CkksScheme:
        """Fresh keys; same as ``make_ckks_scheme``."""
        return make_ckks_scheme(params, n_threads=n_threads)

    @classmethod
    def from_public_bytes(cls, data: bytes, *, n_threads: int = 1) -> CkksScheme:
        """Public-only scheme; same as ``load_public_ckks``."""
        return load_public_ckks(data, n_threads=n_threads)

    @classmethod
    def from_secret_bytes(cls, data: bytes, *, n_threads: int = 1) -> CkksScheme:
        """Scheme holding the secret key, from ``export_secret_key_bytes`` output."""
        return load_secret_ckks(data, n_threads=n_threads)

    def export_secret_key_bytes(self) -> bytes:
        """The secret key (with the public context) as bytes. Handle with care."""
        if not self.has_secret_key:
            raise MissingSecretKeyError(
                f"this CKKS scheme ({self._fingerprint}) holds only the public context"
            )
        blob = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=True,
        )
        return b"".join(
            [
                _SK_HEADER.pack(_SK_MAGIC, _CTX_VERSION, _SCHEME_ID),
                _CTX_LEN.pack(len(self._public_bytes)),
                self._public_bytes,
                _CTX_LEN.pack(len(blob)),
                blob,
            ]
        )

    # -- keys ----------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def has_secret_key(self) -> bool:
        return bool(self._ctx.has_secret_key())

    @property
    def params(self) -> CkksParams:
        """The context's parameters."""
        return self._params

    @property
    def max_depth(self) -> int:
        """Multiplications a fresh ciphertext can go through."""
        return self._params.max_depth

    def public(self) -> CkksScheme:
        return CkksScheme(self._public_ctx.copy(), self._params)

    def public_bytes(self) -> bytes:
        """The evaluation context (public key + relinearization keys): for a party
        that multiplies ciphertexts. An encryption-only scheme returns what it has."""
        return self._public_bytes

    def encryption_bytes(self) -> bytes:
        """The public encryption key alone: all a party needs that only encrypts
        (no relinearization keys, about a quarter of ``public_bytes``)."""
        return self._encryption_bytes

    @property
    def can_evaluate(self) -> bool:
        """Whether this context holds relinearization keys (ciphertext products)."""
        return bool(self._ctx.has_relin_keys())

    def describe(self) -> dict[str, Any]:
        p = self._params
        return {
            **super().describe(),
            "poly_modulus_degree": p.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
            "global_scale_bits": p.global_scale_bits,
            "max_depth": p.max_depth,
            "slot_count": p.slot_count,
        }

    # -- encryption ------------------------------------------------------------

    def encrypt(self, x: np.ndarray) -> CkksCiphertext:
        values = _check_vector(x, "x")
        slots = self._params.slot_count
        chunks = tuple(
            self._encrypt_chunk(values[i : i + slots]) for i in range(0, values.size, slots)
        )
        return self._wrap(chunks, values.size)

    def decrypt(self, c: Ciphertext) -> np.ndarray:
        ct = self._own(c, "c")
        if not self.has_secret_key:
            raise MissingSecretKeyError(
                f"this CKKS scheme ({self._fingerprint}) holds only the public context"
            )
        try:
            parts = [
                np.asarray(v.decrypt(self._ctx.secret_key()), dtype=np.float64) for v in ct.chunks
            ]
        except _TENSEAL_ERRORS as exc:
            raise DecodeError(f"TenSEAL could not decrypt the ciphertext: {exc}") from None
        return np.concatenate(parts)

    def rerandomize(self, c: Ciphertext) -> CkksCiphertext:
        """Add a fresh encryption of zero to every chunk (same level, new randomness)."""
        ct = self._own(c, "c")
        chunks = tuple(
            v + self._encrypt_chunk(np.zeros(v.size(), dtype=np.float64)) for v in ct.chunks
        )
        return self._wrap(chunks, ct.size)

    # -- homomorphic operations ------------------------------------------------

    def add(self, a: Ciphertext, b: Ciphertext) -> CkksCiphertext:
        ca, cb = self._pair(a, b)
        return self._wrap(
            tuple(self._op(va, vb, "add") for va, vb in zip(ca.chunks, cb.chunks, strict=True)),
            ca.size,
        )

    def add_plain(self, a: Ciphertext, x: np.ndarray) -> CkksCiphertext:
        """Enc(a) + x, computed as Enc(a) + Enc(x).

        TenSEAL's ciphertext + plaintext decrypts correctly by itself, but a
        later ciphertext x ciphertext product of the result can decrypt to
        garbage once |x| is large (here: |x| >= 2**8 at a 2**40 scale; see
        OpenMined/TenSEAL issue #462). Adding a fresh encryption costs one
        encryption and is exact in the same sense as any CKKS addition.
        """
        ca = self._own(a, "a")
        values = self._plain_like(ca, x, "x")
        return self.add(ca, self.encrypt(values))

    def mul_scalar(self, a: Ciphertext, k: int, *, k_max: int | None = None) -> CkksCiphertext:
        """Enc(x) * k by double-and-add: exact for integers and spends no level.

        ``k_max`` is accepted for interface compatibility: CKKS ciphertexts carry
        no metadata that depends on ``k``.

        TenSEAL's scalar product encodes k at the full scale and rescales,
        consuming a prime of the chain for what is an integer operation.
        """
        ca = self._own(a, "a")
        if isinstance(k, bool):
            raise TypeError("k must be an int, got bool")
        try:
            k = operator.index(k)
        except TypeError:
            raise TypeError(f"k must be an int, got {type(k).__name__}") from None
        if abs(k).bit_length() > 64:
            raise ValueError(f"k must fit in 64 bits, got a {abs(k).bit_length()}-bit integer")
        if k == 0:
            return self.encrypt(np.zeros(ca.size))
        return self._wrap(tuple(_times_int(v, k) for v in ca.chunks), ca.size)

    def mul(self, a: Ciphertext, b: Ciphertext) -> CkksCiphertext:
        """Enc(x) * Enc(y), relinearized and rescaled: one level of the chain."""
        ca, cb = self._pair(a, b)
        if not self.can_evaluate:
            raise MissingEvaluationKeyError(
                f"this CKKS scheme ({self._fingerprint}) holds the encryption key only: "
                "no relinearization keys for a ciphertext product"
            )
        self._check_depth(max(ca.depth, cb.depth) + 1, "mul")
        return self._wrap(
            tuple(self._op(va, vb, "mul") for va, vb in zip(ca.chunks, cb.chunks, strict=True)),
            ca.size,
        )

    def mul_plain(self, a: Ciphertext, x: np.ndarray | float) -> CkksCiphertext:
        """Enc(x) * y for a plaintext vector (or one float): one level of the chain."""
        ca = self._own(a, "a")
        self._check_depth(ca.depth + 1, "mul_plain")
        if np.ndim(x) == 0:
            scalar = _check_vector(np.atleast_1d(x), "x")[0]
            return self._wrap(tuple(self._op(v, float(scalar), "mul") for v in ca.chunks), ca.size)
        values = self._plain_like(ca, x, "x")
        slots = self._params.slot_count
        chunks = tuple(
            self._op(v, values[i * slots : (i + 1) * slots], "mul") for i, v in enumerate(ca.chunks)
        )
        return self._wrap(chunks, ca.size)

    # -- wire levers -------------------------------------------------------------

    def encrypt_bytes(self, x: np.ndarray, *, depth: int = 0, seeded: bool = True) -> bytes:
        """``to_bytes(encrypt(x))`` at ``depth``, in the fewest bytes this party can make.

        A holder of the secret key encrypts symmetrically and sends SEAL's seeded
        form (half the bytes; the same RLWE security as public-key encryption, and
        as fresh: SEAL draws the seed from the OS). Anyone else sends a public-key
        encryption. ``depth > 0`` drops primes the receiver will not use (a
        ciphertext only ever added at that depth needs no more); a dropped seeded
        ciphertext is sent in full, since the seed no longer describes it.
        """
        values = _check_vector(x, "x")
        self._check_depth(depth, "encrypt_bytes")
        slots = self._params.slot_count
        pieces = [values[i : i + slots] for i in range(0, values.size, slots)]
        side = self._seal_side()
        if seeded and self.has_secret_key and depth == 0:
            blobs = [_vector_proto(v.size, side.encrypt_seeded(v), self._scale) for v in pieces]
        else:
            blobs = [side.drop(self._encrypt_chunk(v), depth) for v in pieces]
        return self._frame(values.size, depth, blobs)

    def mod_switch(self, c: Ciphertext, depth: int) -> CkksCiphertext:
        """The same values with primes dropped down to ``depth`` (no rescale, same scale).

        What SEAL's ``mod_switch_to_next`` does; TenSEAL applies it only inside
        its own operations, so this goes through ``tenseal.sealapi``.
        """
        ct = self._own(c, "c")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < ct.depth:
            raise ValueError(f"depth must be an int >= the ciphertext's {ct.depth}, got {depth!r}")
        self._check_depth(depth, "mod_switch")
        if depth == ct.depth:
            return ct
        side = self._seal_side()
        blobs = [side.drop(v, depth - ct.depth) for v in ct.chunks]
        return self.from_bytes(self._frame(ct.size, depth, blobs))

    # -- serialization ---------------------------------------------------------

    def to_bytes(self, c: Ciphertext) -> bytes:
        ct = self._own(c, "c")
        return self._frame(ct.size, ct.depth, [v.serialize() for v in ct.chunks])

    def _frame(self, size: int, depth: int, blobs: list[bytes]) -> bytes:
        """Our header around per-chunk TenSEAL vector bytes."""
        parts = [
            _CT_HEADER.pack(
                _CT_MAGIC,
                _CT_VERSION,
                _SCHEME_ID,
                bytes.fromhex(self._fingerprint),
                size,
                depth,
                len(blobs),
            )
        ]
        for blob in blobs:
            parts.append(_CHUNK_LEN.pack(len(blob)))
            parts.append(blob)
        return b"".join(parts)

    def from_bytes(self, data: bytes) -> CkksCiphertext:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _CT_HEADER.size:
            raise DecodeError(
                f"CKKS ciphertext bytes too short: {len(data)} < header {_CT_HEADER.size}"
            )
        magic, version, scheme_id, fp, size, depth, n_chunks = _CT_HEADER.unpack_from(data)
        if magic != _CT_MAGIC:
            raise DecodeError(f"not a CKKS ciphertext: magic {magic!r}, expected {_CT_MAGIC!r}")
        if version != _CT_VERSION:
            raise DecodeError(f"unsupported CKKS ciphertext version {version}")
        if scheme_id != _SCHEME_ID:
            raise DecodeError(f"scheme id {scheme_id} is not ckks ({_SCHEME_ID})")
        if fp.hex() != self._fingerprint:
            raise KeyMismatchError(
                f"ciphertext made under context {fp.hex()}, this scheme is {self._fingerprint}"
            )
        if not 1 <= size <= _MAX_VALUES:
            raise DecodeError(f"CKKS ciphertext size {size} out of range [1, {_MAX_VALUES}]")
        slots = self._params.slot_count
        if n_chunks != -(-size // slots):
            raise DecodeError(f"{n_chunks} chunks cannot hold {size} values at {slots} slots")
        if depth > self.max_depth:
            raise DecodeError(f"depth {depth} exceeds this context's chain ({self.max_depth})")
        blobs = self._split_chunks(data, _CT_HEADER.size, n_chunks)
        chunks = tuple(
            self._load_chunk(blob, min(slots, size - i * slots), depth)
            for i, blob in enumerate(blobs)
        )
        return CkksCiphertext(self._fingerprint, size, depth, chunks)

    # -- internals -------------------------------------------------------------

    @property
    def _scale(self) -> float:
        return float(2.0**self._params.global_scale_bits)

    def _seal_side(self) -> _SealSide:
        if self._seal is None:
            self._seal = _SealSide(self._params, self._ctx if self.has_secret_key else None)
        return self._seal

    @property
    def _top_level(self) -> int:
        return len(self._params.coeff_mod_bit_sizes) - 1

    def _encrypt_chunk(self, values: np.ndarray) -> ts.CKKSVector:
        try:
            return ts.ckks_vector(self._ctx, values)
        except _TENSEAL_ERRORS as exc:
            raise BudgetExceededError(
                f"TenSEAL refused to encode {values.size} values "
                f"(max |x| = {float(np.max(np.abs(values))):g}): {exc}"
            ) from None

    def _wrap(self, chunks: tuple[ts.CKKSVector, ...], size: int) -> CkksCiphertext:
        depth = max(self._top_level - _level(v) for v in chunks)
        return CkksCiphertext(self._fingerprint, size, depth, chunks)

    def _own(self, c: Ciphertext, name: str) -> CkksCiphertext:
        if not isinstance(c, CkksCiphertext):
            raise TypeError(f"{name} must be a CkksCiphertext, got {type(c).__name__}")
        if c.key_fingerprint != self._fingerprint:
            raise KeyMismatchError(
                f"{name} is encrypted under context {c.key_fingerprint}, "
                f"this scheme is {self._fingerprint}"
            )
        return c

    def _pair(self, a: Ciphertext, b: Ciphertext) -> tuple[CkksCiphertext, CkksCiphertext]:
        ca, cb = self._own(a, "a"), self._own(b, "b")
        if ca.size != cb.size:
            raise ValueError(f"a and b must have the same size, got {ca.size} and {cb.size}")
        return ca, cb

    def _plain_like(self, ct: CkksCiphertext, x: Any, name: str) -> np.ndarray:
        values = _check_vector(x, name)
        if values.size != ct.size:
            raise ValueError(f"{name} must have the ciphertext's size {ct.size}, got {values.size}")
        return values

    def _check_depth(self, needed: int, op: str) -> None:
        p = self._params
        if needed > p.max_depth:
            raise BudgetExceededError(
                f"{op} would need multiplicative depth {needed}, but the modulus chain "
                f"{list(p.coeff_mod_bit_sizes)} ({len(p.coeff_mod_bit_sizes)} primes) "
                f"supports depth {p.max_depth}"
            )

    @staticmethod
    def _op(v: ts.CKKSVector, other: Any, op: str) -> ts.CKKSVector:
        """``v op other`` without touching the inputs.

        TenSEAL mod-switches the higher-level operand *in place* to match the
        other; copy whichever is higher so callers' ciphertexts keep their level.
        """
        if isinstance(other, ts.CKKSVector):
            lv, lo = _level(v), _level(other)
            if lo > lv:
                other = other.copy()
            elif lv > lo:
                v = v.copy()
        try:
            return v + other if op == "add" else v * other
        except _TENSEAL_ERRORS as exc:
            raise BudgetExceededError(f"TenSEAL refused {op}: {exc}") from None

    def _split_chunks(self, data: bytes, offset: int, n_chunks: int) -> list[bytes]:
        p = self._params
        # a relinearized ciphertext is 2 polynomials of N 64-bit words per prime
        max_chunk = 2 * p.poly_modulus_degree * self._top_level * 8 + 4096
        blobs = []
        for i in range(n_chunks):
            if offset + _CHUNK_LEN.size > len(data):
                raise DecodeError(f"CKKS ciphertext truncated before chunk {i} length")
            (length,) = _CHUNK_LEN.unpack_from(data, offset)
            offset += _CHUNK_LEN.size
            if not 1 <= length <= max_chunk:
                raise DecodeError(f"chunk {i} length {length} out of range [1, {max_chunk}]")
            if offset + length > len(data):
                raise DecodeError(
                    f"CKKS ciphertext truncated in chunk {i}: needs {length} bytes, "
                    f"{len(data) - offset} left"
                )
            blobs.append(data[offset : offset + length])
            offset += length
        if offset != len(data):
            raise DecodeError(f"{len(data) - offset} trailing bytes after the last chunk")
        return blobs

    def _load_chunk(self, blob: bytes, expected_size: int, depth: int) -> ts.CKKSVector:
        try:
            vec = ts.ckks_vector_from(self._ctx, blob)
            seal_cts = vec.ciphertext()
            n_values = vec.size()
        except _TENSEAL_ERRORS as exc:
            raise DecodeError(f"TenSEAL rejected a ciphertext chunk: {exc}") from None
        if n_values != expected_size or len(seal_cts) != 1:
            raise DecodeError(
                f"chunk holds {n_values} values in {len(seal_cts)} ciphertexts, "
                f"expected {expected_size} in 1"
            )
        seal_ct = seal_cts[0]
        p = self._params
        if (
            seal_ct.poly_modulus_degree() != p.poly_modulus_degree
            or seal_ct.size() != 2
            or not seal_ct.is_ntt_form()
            or seal_ct.scale != 2.0**p.global_scale_bits
        ):
            raise DecodeError("chunk's SEAL ciphertext does not match this context's layout")
        if self._top_level - _level(vec) != depth:
            raise DecodeError(
                f"header says depth {depth}, ciphertext is at depth {self._top_level - _level(vec)}"
            )
        return vec


def _times_int(v: ts.CKKSVector, k: int) -> ts.CKKSVector:
    """v * k by binary double-and-add (additions keep the level)."""
    base = v.copy()
    result: ts.CKKSVector | None = None
    m = abs(k)
    while m:
        if m & 1:
            result = base.copy() if result is None else result + base
        m >>= 1
        if m:
            base = base + base
    if result is None:  # pragma: no cover - k != 0 is checked by the caller
        raise ValueError("k must be nonzero")
    return -result if k < 0 else result


def _public_copy(ctx: ts.Context) -> ts.Context:
    """``ctx`` without its secret key (relin keys kept, no Galois keys).

    Round-tripped through bytes rather than ``copy()``/``make_context_public``,
    which draw a fresh public key each call and would change the fingerprint.
    """
    return ts.context_from(
        ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=True,
        ),
        n_threads=1,
    )


def _context_bytes(public_ctx: ts.Context, params: CkksParams, *, relin: bool) -> bytes:
    """Header + TenSEAL public context: with relinearization keys (``public_bytes``)
    or the encryption key alone (``encryption_bytes``, the fingerprint's preimage)."""
    blob = public_ctx.serialize(
        save_public_key=True,
        save_secret_key=False,
        save_galois_keys=False,
        save_relin_keys=relin,
    )
    bits = params.coeff_mod_bit_sizes
    return b"".join(
        [
            _CTX_HEADER.pack(
                _CTX_MAGIC,
                _CTX_VERSION if relin else _ENC_CTX_VERSION,
                _SCHEME_ID,
                params.poly_modulus_degree,
                params.global_scale_bits,
                len(bits),
            ),
            bytes(bits),
            _CTX_LEN.pack(len(blob)),
            blob,
        ]
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _vector_proto(size: int, seal_blob: bytes, scale: float) -> bytes:
    """TenSEAL's ``CKKSVectorProto`` around one SEAL ciphertext (hand-encoded).

    tenseal/proto/tensors.proto: field 1 ``repeated uint32 sizes`` (packed),
    field 2 ``repeated bytes ciphertexts``, field 3 ``double scale``. TenSEAL
    serializes only the ciphertexts it made itself, so a ciphertext made or
    mod-switched by SEAL's bindings is framed here and loaded by TenSEAL.
    """
    sizes = _varint(size)
    return b"".join(
        [
            b"\x0a",
            _varint(len(sizes)),
            sizes,
            b"\x12",
            _varint(len(seal_blob)),
            seal_blob,
            b"\x19",
            struct.pack("<d", scale),
        ]
    )


class _SealSide:
    """SEAL's own bindings (``tenseal.sealapi``) for what TenSEAL does not expose:
    seeded symmetric encryption and dropping primes before a ciphertext is sent.

    Same parameters give the same primes and parms_ids as TenSEAL's context, so
    ciphertexts move between the two as SEAL bytes. The bindings save and load
    only through file paths; every file lives in a private (0700) directory of
    this process, in memory where /dev/shm exists, and is removed right after
    use. The secret key is handed over once that way (it never leaves the
    process's machine) and only when this party holds it.
    """

    def __init__(self, params: CkksParams, secret_ctx: ts.Context | None) -> None:
        self.context, self.evaluator, self.encoder = _seal_tools(params)
        self.scale = float(2.0**params.global_scale_bits)
        self._lock = threading.Lock()
        self.encryptor: Any = None
        if secret_ctx is not None:
            path = _scratch_path()
            try:
                secret_ctx.secret_key().data.save(path)
                sk = sealapi.SecretKey()
                sk.load(self.context, path)
            finally:
                _remove(path)
            self.encryptor = sealapi.Encryptor(self.context, sk)

    def _read(self, saver: Any) -> bytes:
        path = _scratch_path()
        try:
            saver.save(path)
            with open(path, "rb") as fh:
                return fh.read()
        finally:
            _remove(path)

    def encrypt_seeded(self, values: np.ndarray) -> bytes:
        """SEAL bytes of a symmetric encryption of ``values``, second polynomial as a seed."""
        plain = sealapi.Plaintext()
        # TenSEAL fills every slot by repeating a short vector cyclically; do the
        # same, or the unused slots of this ciphertext would hold zeros where a
        # TenSEAL encryption it is added to holds values, and a large mask removed
        # by such an addition would survive there and overflow later products.
        filled = np.resize(values, self.encoder.slot_count())
        self.encoder.encode(filled.tolist(), self.context.first_parms_id(), self.scale, plain)
        with self._lock:
            return self._read(self.encryptor.encrypt_symmetric(plain))

    def drop(self, vec: ts.CKKSVector, levels: int) -> bytes:
        """TenSEAL bytes of ``vec`` with the last ``levels`` primes of its modulus dropped."""
        if levels == 0:
            return bytes(vec.serialize())
        path = _scratch_path()
        try:
            vec.ciphertext()[0].save(path)
            ct = sealapi.Ciphertext()
            ct.load(self.context, path)
        finally:
            _remove(path)
        for _ in range(levels):
            self.evaluator.mod_switch_to_next_inplace(ct)
        return _vector_proto(vec.size(), self._read(ct), self.scale)


@functools.lru_cache(maxsize=8)
def _seal_tools(params: CkksParams) -> tuple[Any, Any, Any]:
    """One SEAL context, evaluator and encoder per parameter set and process
    (keyless and read-only after construction, so every scheme shares them)."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(
        sealapi.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )
    context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    return context, sealapi.Evaluator(context), sealapi.CKKSEncoder(context)


_SCRATCH: dict[int, str] = {}
_SCRATCH_COUNTER = itertools.count()


def _scratch_path() -> str:
    """A fresh file name in this process's private scratch directory."""
    pid = os.getpid()
    if pid not in _SCRATCH:  # per process: a forked child gets its own
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _SCRATCH[pid] = tempfile.mkdtemp(prefix="cipherfact-seal-", dir=base)
        atexit.register(shutil.rmtree, _SCRATCH[pid], True)
    return os.path.join(_SCRATCH[pid], f"{threading.get_ident()}-{next(_SCRATCH_COUNTER)}")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def make_ckks_scheme(
    params: str | CkksParams = "n8192-depth2", *, n_threads: int = 1
) -> CkksScheme:
    """Fresh CKKS keys (secret, public, relinearization; no Galois keys).

    ``n_threads`` is TenSEAL's worker pool; one per process by default so
    that processes-per-core scaling is not oversubscribed.
    """
    p = get_ckks_params(params)
    if isinstance(n_threads, bool) or not isinstance(n_threads, int):
        raise TypeError(f"n_threads must be an int, got {type(n_threads).__name__}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
        n_threads=n_threads,
    )
    ctx.global_scale = 2.0**p.global_scale_bits
    return CkksScheme(ctx, p)


def load_public_ckks(data: bytes, *, n_threads: int = 1) -> CkksScheme:
    """Inverse of ``CkksScheme.public_bytes``; refuses anything carrying a secret key."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _CTX_HEADER.size:
        raise DecodeError(f"CKKS context bytes too short: {len(data)} bytes")
    magic, version, scheme_id, degree, scale_bits, n_primes = _CTX_HEADER.unpack_from(data)
    if magic != _CTX_MAGIC:
        raise DecodeError(f"not a CKKS public context: magic {magic!r}, expected {_CTX_MAGIC!r}")
    if scheme_id != _SCHEME_ID:
        raise DecodeError(
            f"public key bytes are for scheme id {scheme_id}, not ckks ({_SCHEME_ID})"
        )
    if version not in (_CTX_VERSION, _ENC_CTX_VERSION):
        raise DecodeError(f"unsupported CKKS context version {version}")
    evaluation = version == _CTX_VERSION
    offset = _CTX_HEADER.size
    if len(data) < offset + n_primes + _CTX_LEN.size:
        raise DecodeError("CKKS context bytes truncated in the parameter header")
    bits = tuple(data[offset : offset + n_primes])
    offset += n_primes
    (length,) = _CTX_LEN.unpack_from(data, offset)
    offset += _CTX_LEN.size
    if length > _MAX_CONTEXT_BYTES or offset + length != len(data):
        raise DecodeError(
            f"CKKS context length {length} does not match the {len(data) - offset} bytes left"
        )
    try:
        params = CkksParams(degree, bits, scale_bits)
    except TypeError as exc:
        raise DecodeError(f"bad CKKS parameters in header: {exc}") from None
    except ValueError as exc:  # includes InsecureParameterError
        raise DecodeError(f"bad CKKS parameters in header: {exc}") from None
    try:
        ctx = ts.context_from(data[offset:], n_threads=n_threads)
        relin = ctx.has_relin_keys()
        ok = ctx.has_public_key() and relin == evaluation and ctx.global_scale == 2.0**scale_bits
        secret = ctx.has_secret_key()
        probe = ts.ckks_vector(ctx, [0.0]).ciphertext()[0] if ok else None
    except _TENSEAL_ERRORS as exc:
        raise DecodeError(f"TenSEAL rejected the CKKS context: {exc}") from None
    if secret:
        raise DecodeError("CKKS public context bytes carry a secret key; refusing to load")
    if probe is None:
        raise DecodeError(
            "CKKS context lacks a public key or its scale, or "
            + (
                "lacks relinearization keys (version 1: evaluation context)"
                if evaluation
                else "carries relinearization keys (version 2: encryption key only)"
            )
        )
    if probe.poly_modulus_degree() != degree or probe.coeff_modulus_size() != len(bits) - 1:
        raise DecodeError("CKKS context does not match the parameters in its header")
    return CkksScheme(ctx, params)


def load_secret_ckks(data: bytes, *, n_threads: int = 1) -> CkksScheme:
    """Inverse of ``CkksScheme.export_secret_key_bytes``; keeps the original fingerprint."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    head = _SK_HEADER.size + _CTX_LEN.size
    if len(data) < head:
        raise DecodeError(f"CKKS secret key bytes too short: {len(data)} bytes")
    magic, version, scheme_id = _SK_HEADER.unpack_from(data)
    if magic != _SK_MAGIC or scheme_id != _SCHEME_ID:
        raise DecodeError(f"not CKKS secret key bytes: magic {magic!r}, scheme id {scheme_id}")
    if version != _CTX_VERSION:
        raise DecodeError(f"unsupported CKKS secret key version {version}")
    (pub_len,) = _CTX_LEN.unpack_from(data, _SK_HEADER.size)
    if head + pub_len + _CTX_LEN.size > len(data):
        raise DecodeError("CKKS secret key bytes truncated in the public context")
    public = load_public_ckks(data[head : head + pub_len], n_threads=n_threads)
    offset = head + pub_len
    (length,) = _CTX_LEN.unpack_from(data, offset)
    offset += _CTX_LEN.size
    if length > _MAX_CONTEXT_BYTES or offset + length != len(data):
        raise DecodeError(
            f"CKKS secret context length {length} does not match the {len(data) - offset} "
            "bytes left"
        )
    probe_in = np.array([1.0, -2.0, 0.5])
    try:
        ctx = ts.context_from(data[offset:], n_threads=n_threads)
        has_secret = ctx.has_secret_key()
        probe = ts.ckks_vector(public._public_ctx, probe_in)
        probe_out = (
            np.asarray(probe.decrypt(ctx.secret_key()), dtype=np.float64) if has_secret else None
        )
    except _TENSEAL_ERRORS as exc:
        raise DecodeError(f"TenSEAL rejected the CKKS secret context: {exc}") from None
    if probe_out is None:
        raise DecodeError("CKKS secret key bytes hold no secret key")
    if probe_out.shape != probe_in.shape or not np.allclose(probe_out, probe_in, atol=1e-3):
        raise KeyMismatchError("CKKS secret key does not match the public context stored with it")
    return CkksScheme(ctx, public.params, public_context=public._public_ctx)
