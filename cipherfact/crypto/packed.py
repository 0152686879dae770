"""Packed ciphertexts and the bookkeeping every packed scheme shares.

``PackedScheme`` implements encode/pack, offsets, budget tracking, the checks
and the byte format once; Paillier and the plain twin only supply the integer
primitives. That is what makes a plain run bit-identical to a Paillier run.

Metadata carried by every ``PackedCiphertext`` (public, and data-independent:
it never depends on the plaintext or on a private scalar when ``k_max`` is
given to ``mul_scalar``):

* ``terms``  -- fresh encodings summed into each slot (<= codec.max_terms);
* ``scale``  -- product of the scalar bounds applied (< 2**codec.scalar_bits);
* ``offset`` -- ``t``: each slot stores ``v + t*M`` with ``|v| <= t*M``.

Ciphertext byte format (version 1, all integers big-endian)::

    magic      4s  b"CFCT"
    version    B   1
    scheme id  B   1 = paillier, 2 = plain
    key fp     8s  first 8 bytes of SHA-256 of the canonical public key
    codec      B frac_bits, B int_bits, B scalar_bits, H max_terms, B guard_bits
    layout     H slot_bits, H slots per integer
    size       I   number of values
    terms      I;  scale Q;  offset Q
    count      I   number of packed integers (= ceil(size / slots))
    width      H   bytes per integer
    nonce_len  B   then nonce_len bytes (plain twin only; 0 for paillier)
    payload    count * width bytes, each a fixed-width unsigned integer
"""

from __future__ import annotations

import hashlib
import operator
import struct
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.codec import FixedPointCodec, Layout, pack_slots, unpack_slots
from cipherfact.crypto.errors import (
    BudgetExceededError,
    DecodeError,
    KeyMismatchError,
    MissingSecretKeyError,
)

__all__ = ["SCHEME_IDS", "PackedCiphertext", "PackedScheme", "fingerprint_of"]

CT_MAGIC = b"CFCT"
CT_VERSION = 1
SCHEME_IDS = {
    "paillier": 1,
    "plain": 2,
    "ckks": 3,
}  # ckks ciphertexts use their own format (ckks.py)
_HEADER = struct.Struct(">4sBB8sBBBHBHHIIQQIHB")


def fingerprint_of(canonical_public_bytes: bytes) -> str:
    """First 16 hex characters of SHA-256 of the canonical public key bytes."""
    return hashlib.sha256(canonical_public_bytes).hexdigest()[:16]


def _refuse_pickle(obj: object) -> NoReturn:
    raise TypeError(
        f"{type(obj).__name__} objects are never pickled; use the scheme's "
        "to_bytes/public_bytes/export_secret_key_bytes"
    )


@dataclass(frozen=True, eq=False)
class PackedCiphertext(Ciphertext):
    """A vector spread over packed integers, with its public budget metadata."""

    scheme_name: str
    key_fingerprint: str
    size: int
    layout: Layout
    terms: int
    scale: int
    offset: int
    ints: tuple[Any, ...] = field(repr=False)
    nonce: bytes = field(default=b"", repr=False)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)


def _as_scalar(k: object, name: str) -> int:
    if isinstance(k, bool | float | np.floating | np.bool_):
        raise TypeError(f"{name} must be an integer, got {type(k).__name__} {k!r}")
    try:
        return operator.index(k)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(k).__name__}") from None


class PackedScheme(Scheme):
    """Shared packed-slot logic; subclasses provide the integer primitives."""

    codec: FixedPointCodec
    layout: Layout

    # ---- primitives a concrete scheme supplies -------------------------------
    @abstractmethod
    def _encrypt_ints(self, packed: list[int]) -> list[Any]:
        """Packed plaintext integers -> ciphertext integers (fresh randomness)."""

    @abstractmethod
    def _decrypt_ints(self, cts: Sequence[Any]) -> list[int]:
        """Ciphertext integers -> packed plaintext integers (secret key held)."""

    @abstractmethod
    def _add_ints(self, a: Any, b: Any) -> Any:
        """Homomorphic addition of two packed integers."""

    @abstractmethod
    def _add_plain_int(self, c: Any, plain: int) -> Any:
        """Add a non-negative packed plaintext integer."""

    @abstractmethod
    def _mul_int(self, c: Any, k: int) -> Any:
        """Multiply the packed plaintext by a (possibly negative) integer."""

    @abstractmethod
    def _rerandomize_ints(self, cts: Sequence[Any]) -> list[Any]:
        """Same plaintexts, fresh randomness."""

    @abstractmethod
    def _int_width(self) -> int:
        """Bytes per serialized ciphertext integer."""

    @abstractmethod
    def _int_valid(self, value: Any) -> bool:
        """Whether a deserialized integer is a valid ciphertext integer."""

    @abstractmethod
    def _load_int(self, data: memoryview) -> Any:
        """One serialized (big-endian) integer, in the scheme's working type."""

    def _new_nonce(self) -> bytes:
        """Per-ciphertext nonce carried in the bytes (plain twin only)."""
        return b""

    # ---- helpers --------------------------------------------------------------
    @property
    def scheme_id(self) -> int:
        return SCHEME_IDS[self.name]

    def _own(self, c: object, name: str = "ciphertext") -> PackedCiphertext:
        if not isinstance(c, PackedCiphertext):
            raise TypeError(f"{name} must be a PackedCiphertext, got {type(c).__name__}")
        if c.scheme_name != self.name:
            raise KeyMismatchError(
                f"{name} belongs to scheme {c.scheme_name!r}, this scheme is {self.name!r}"
            )
        if c.key_fingerprint != self.fingerprint:
            raise KeyMismatchError(
                f"{name} was encrypted under key {c.key_fingerprint}, this scheme holds "
                f"key {self.fingerprint}"
            )
        if c.layout != self.layout:
            raise KeyMismatchError(f"{name} uses layout {c.layout}, this scheme uses {self.layout}")
        return c

    def _require_secret(self) -> None:
        if not self.has_secret_key:
            raise MissingSecretKeyError(
                f"scheme with key {self.fingerprint} holds only the public key; cannot decrypt"
            )

    def _check_budget(self, terms: int, scale: int, offset: int, what: str) -> None:
        codec = self.codec
        if terms > codec.max_terms:
            raise BudgetExceededError(
                f"{what} would sum {terms} fresh encodings into a slot; the codec allows "
                f"max_terms={codec.max_terms}"
            )
        if scale >= 1 << codec.scalar_bits:
            raise BudgetExceededError(
                f"{what} would grow the scalar product to {scale}; the codec allows "
                f"< 2**scalar_bits = {1 << codec.scalar_bits}"
            )
        # Backstop: the slot must hold u <= 2*t*M (implied by the two checks above).
        if (2 * offset * codec.value_bound) >> self.layout.slot_bits:
            raise BudgetExceededError(
                f"{what} would need offset multiple {offset}, beyond the "
                f"{self.layout.slot_bits}-bit slot"
            )

    def _slot_units(self, x: np.ndarray, name: str) -> np.ndarray:
        """Encode, offset by one M (one fresh term), pad to whole packed integers."""
        m = self.codec.value_bound
        units = self.codec.encode(x, name) + m
        pad = self.layout.count(units.size) * self.layout.slots - units.size
        return np.concatenate([units, np.full(pad, m, dtype=units.dtype)]) if pad else units

    def _make(
        self,
        c: PackedCiphertext | None,
        size: int,
        terms: int,
        scale: int,
        offset: int,
        ints: Sequence[Any],
    ) -> PackedCiphertext:
        return PackedCiphertext(
            scheme_name=self.name,
            key_fingerprint=self.fingerprint,
            size=size,
            layout=self.layout,
            terms=terms,
            scale=scale,
            offset=offset,
            ints=tuple(ints),
            nonce=c.nonce if c is not None else self._new_nonce(),
        )

    # ---- the Scheme interface -------------------------------------------------
    def encrypt(self, x: np.ndarray) -> PackedCiphertext:
        """Encrypt a 1-D float vector: one fresh term, offset multiple 1."""
        units = self._slot_units(x, "x")
        ints = self._encrypt_ints(pack_slots(units, self.layout))
        size = int(np.asarray(x).shape[0])
        return self._make(None, size, 1, 1, 1, ints)

    def decrypt(self, c: Ciphertext) -> np.ndarray:
        """Decrypt to exactly ``int / 2**frac_bits`` per value (float64)."""
        ct = self._own(c)
        self._require_secret()
        return self.decode_decrypted(ct, self._decrypt_ints(ct.ints))

    def decode_decrypted(self, ct: PackedCiphertext, packed: Sequence[int]) -> np.ndarray:
        """Second half of ``decrypt``: packed plaintext integers of ``ct`` -> floats.

        Split out so that a batch decrypting many ciphertexts at once
        (``cipherfact.crypto.batch``) applies the same checks to each.
        """
        total_bits = self.layout.slot_bits * self.layout.slots
        if any(int(p) >> total_bits for p in packed):
            raise DecodeError("decrypted integer exceeds the slot layout: corrupted ciphertext")
        shift = ct.offset * self.codec.value_bound
        units = unpack_slots(packed, self.layout, ct.size)
        if any(u > 2 * shift for u in units):
            raise DecodeError(
                "a decrypted slot exceeds its tracked bound: corrupted ciphertext or metadata"
            )
        return self.codec.decode([u - shift for u in units])

    def add(self, a: Ciphertext, b: Ciphertext) -> PackedCiphertext:
        """Slot-wise sum; terms add up, offsets add up, scale is the larger one."""
        ca, cb = self._own(a, "a"), self._own(b, "b")
        if ca.size != cb.size:
            raise ValueError(f"cannot add vectors of sizes {ca.size} and {cb.size}")
        terms, scale, offset = ca.terms + cb.terms, max(ca.scale, cb.scale), ca.offset + cb.offset
        self._check_budget(terms, scale, offset, "add")
        ints = [self._add_ints(x, y) for x, y in zip(ca.ints, cb.ints, strict=True)]
        return self._make(ca, ca.size, terms, scale, offset, ints)

    def add_plain(self, a: Ciphertext, x: np.ndarray) -> PackedCiphertext:
        """Add a plaintext vector; it counts as one more fresh term."""
        ca = self._own(a, "a")
        arr = np.asarray(x)
        if arr.ndim != 1 or arr.shape[0] != ca.size:
            raise ValueError(f"x must be a vector of size {ca.size}, got shape {arr.shape}")
        terms, offset = ca.terms + 1, ca.offset + 1
        self._check_budget(terms, ca.scale, offset, "add_plain")
        packed = pack_slots(self._slot_units(arr, "x"), self.layout)
        ints = [self._add_plain_int(c, p) for c, p in zip(ca.ints, packed, strict=True)]
        return self._make(ca, ca.size, terms, ca.scale, offset, ints)

    def mul_scalar(self, a: Ciphertext, k: int, *, k_max: int | None = None) -> PackedCiphertext:
        """Multiply by an integer ``k`` (negative and zero allowed).

        The metadata grows by ``k_max`` (default ``|k|``), and the slot offset is
        re-normalized to ``k_max * t``, so neither the bytes' metadata nor the
        decrypted offset reveals ``k``. Pass a public ``k_max`` whenever ``k`` is
        private (ppdnmf's weights): with the default, ``|k|`` is visible in the
        ciphertext's metadata.
        """
        ca = self._own(a, "a")
        k = _as_scalar(k, "k")
        bound = abs(k) if k_max is None else _as_scalar(k_max, "k_max")
        if bound < abs(k):
            raise ValueError(f"k_max must be >= |k|, got k_max={bound} for |k|={abs(k)}")
        scale, offset = ca.scale * bound, ca.offset * bound
        self._check_budget(ca.terms, scale, offset, f"mul_scalar by a scalar up to {bound}")
        # k*u = k*v + k*t*M; add (k_max - k)*t*M per slot -> k*v + k_max*t*M >= 0.
        fix = (bound - k) * ca.offset * self.codec.value_bound
        fix_packed = fix * self.layout.ones if fix else 0
        ints = []
        for c in ca.ints:
            prod = self._mul_int(c, k)
            ints.append(self._add_plain_int(prod, fix_packed) if fix else prod)
        return self._make(ca, ca.size, ca.terms, scale, offset, ints)

    def scale_shift(
        self,
        a: Ciphertext,
        k: int,
        before: np.ndarray,
        after: np.ndarray | None = None,
        *,
        k_max: int | None = None,
    ) -> PackedCiphertext:
        """``add_plain(mul_scalar(add_plain(a, before), k, k_max=k_max), after)`` in one
        pass (``after`` None: without the last ``add_plain``).

        The same ciphertext (integers, metadata, budget checks) as those calls:
        one exponentiation and one multiplication per packed integer, since
        ``(c (1 + m n))**k = c**k (1 + k m n) mod n**2``. ppdnmf's pairwise reply
        (``k * (Enc(-W_i) + W_j) + noise``) is this. Negative ``k`` takes the
        three calls.
        """
        ca = self._own(a, "a")
        k = _as_scalar(k, "k")
        bound = abs(k) if k_max is None else _as_scalar(k_max, "k_max")
        if bound < abs(k):
            raise ValueError(f"k_max must be >= |k|, got k_max={bound} for |k|={abs(k)}")
        if k < 0:
            out = self.mul_scalar(self.add_plain(ca, before), k, k_max=k_max)
            return out if after is None else self.add_plain(out, after)
        shifts = [before] if after is None else [before, after]
        for name, x in zip(("before", "after"), shifts, strict=False):
            shape = np.shape(x)
            if len(shape) != 1 or shape[0] != ca.size:
                raise ValueError(f"{name} must be a vector of size {ca.size}, got shape {shape}")
        terms, offset = ca.terms + 1, ca.offset + 1
        self._check_budget(terms, ca.scale, offset, "add_plain")
        fix = (bound - k) * offset * self.codec.value_bound
        scale, offset = ca.scale * bound, offset * bound
        self._check_budget(terms, scale, offset, f"mul_scalar by a scalar up to {bound}")
        consts = [k * p for p in pack_slots(self._slot_units(np.asarray(before), "x"), self.layout)]
        if fix:
            fix_packed = fix * self.layout.ones
            consts = [x + fix_packed for x in consts]
        if after is not None:
            terms, offset = terms + 1, offset + 1
            self._check_budget(terms, scale, offset, "add_plain")
            packed = pack_slots(self._slot_units(np.asarray(after), "x"), self.layout)
            consts = [x + p for x, p in zip(consts, packed, strict=True)]
        ints = [
            self._add_plain_int(self._mul_int(c, k), x)
            for c, x in zip(ca.ints, consts, strict=True)
        ]
        return self._make(ca, ca.size, terms, scale, offset, ints)

    def weighted_sum(
        self, cs: Sequence[Ciphertext], ks: Sequence[int], *, k_max: int | None = None
    ) -> PackedCiphertext:
        """``sum(mul_scalar(c, k, k_max=k_max) for c, k in zip(cs, ks))`` in one pass.

        The same ciphertext (integers, metadata and budget checks) as that sum;
        Paillier computes each packed integer's product of powers with one shared
        squaring chain (Straus), about half the multiplications for ppdnmf's
        6-bit weights, and adds all the offset fixes at once.
        """
        if not cs:
            raise ValueError("weighted_sum() needs at least one ciphertext, got an empty list")
        if len(ks) != len(cs):
            raise ValueError(f"weighted_sum() got {len(cs)} ciphertexts and {len(ks)} scalars")
        cts = [self._own(c, f"cs[{i}]") for i, c in enumerate(cs)]
        size = cts[0].size
        if any(c.size != size for c in cts):
            raise ValueError(f"cannot add vectors of sizes {sorted({c.size for c in cts})}")
        scalars = [_as_scalar(k, f"ks[{i}]") for i, k in enumerate(ks)]
        bounds = []
        for k in scalars:
            bound = abs(k) if k_max is None else _as_scalar(k_max, "k_max")
            if bound < abs(k):
                raise ValueError(f"k_max must be >= |k|, got k_max={bound} for |k|={abs(k)}")
            bounds.append(bound)
        terms = sum(c.terms for c in cts)
        scale = max(c.scale * b for c, b in zip(cts, bounds, strict=True))
        offset = sum(c.offset * b for c, b in zip(cts, bounds, strict=True))
        self._check_budget(terms, scale, offset, "weighted_sum")
        m = self.codec.value_bound
        fix = sum((b - k) * c.offset * m for c, k, b in zip(cts, scalars, bounds, strict=True))
        ints = self._weighted_ints([c.ints for c in cts], scalars)
        if fix:
            fix_packed = fix * self.layout.ones
            ints = [self._add_plain_int(c, fix_packed) for c in ints]
        return self._make(cts[0], size, terms, scale, offset, ints)

    def _weighted_ints(self, ints: Sequence[Sequence[Any]], ks: Sequence[int]) -> list[Any]:
        """Per packed position, the homomorphic sum of ``k_j`` times the j-th integer."""
        out = []
        for column in zip(*ints, strict=True):
            total = self._mul_int(column[0], ks[0])
            for c, k in zip(column[1:], ks[1:], strict=True):
                total = self._add_ints(total, self._mul_int(c, k))
            out.append(total)
        return out

    def rerandomize(self, c: Ciphertext) -> PackedCiphertext:
        """Fresh randomness, same plaintext and metadata."""
        ct = self._own(c)
        ints = self._rerandomize_ints(ct.ints)
        return PackedCiphertext(
            scheme_name=self.name,
            key_fingerprint=self.fingerprint,
            size=ct.size,
            layout=self.layout,
            terms=ct.terms,
            scale=ct.scale,
            offset=ct.offset,
            ints=tuple(ints),
            nonce=self._new_nonce(),
        )

    # ---- bytes ----------------------------------------------------------------
    def to_bytes(self, c: Ciphertext) -> bytes:
        """Compact binary form (see module docstring)."""
        ct = self._own(c)
        width = self._int_width()
        header = _HEADER.pack(
            CT_MAGIC,
            CT_VERSION,
            self.scheme_id,
            bytes.fromhex(ct.key_fingerprint),
            *self.codec.to_tuple(),
            ct.layout.slot_bits,
            ct.layout.slots,
            ct.size,
            ct.terms,
            ct.scale,
            ct.offset,
            len(ct.ints),
            width,
            len(ct.nonce),
        )
        body = b"".join(int(v).to_bytes(width, "big") for v in ct.ints)
        return header + ct.nonce + body

    def from_bytes(self, data: bytes) -> PackedCiphertext:
        """Parse and fully validate ciphertext bytes made by ``to_bytes``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise DecodeError(
                f"ciphertext bytes truncated: {len(data)} bytes, header needs {_HEADER.size}"
            )
        (
            magic,
            version,
            scheme_id,
            fp,
            frac,
            ibits,
            sbits,
            mterms,
            guard,
            slot_bits,
            slots,
            size,
            terms,
            scale,
            offset,
            count,
            width,
            nonce_len,
        ) = _HEADER.unpack_from(data)
        if magic != CT_MAGIC:
            raise DecodeError(
                f"not a cipherfact ciphertext: magic {magic!r}, expected {CT_MAGIC!r}"
            )
        if version != CT_VERSION:
            raise DecodeError(f"unsupported ciphertext version {version}, expected {CT_VERSION}")
        if scheme_id != self.scheme_id:
            raise DecodeError(
                f"ciphertext is for scheme id {scheme_id}, this {self.name!r} scheme is "
                f"id {self.scheme_id}"
            )
        if fp.hex() != self.fingerprint:
            raise KeyMismatchError(
                f"ciphertext was encrypted under key {fp.hex()}, this scheme holds key "
                f"{self.fingerprint}"
            )
        if (frac, ibits, sbits, mterms, guard) != self.codec.to_tuple():
            raise DecodeError(
                f"ciphertext codec {(frac, ibits, sbits, mterms, guard)} differs from this "
                f"scheme's {self.codec.to_tuple()}"
            )
        if (slot_bits, slots) != (self.layout.slot_bits, self.layout.slots):
            raise DecodeError(
                f"ciphertext layout ({slot_bits}-bit slots x {slots}) differs from this "
                f"scheme's ({self.layout.slot_bits} x {self.layout.slots})"
            )
        if size < 1 or count != self.layout.count(size):
            raise DecodeError(f"ciphertext holds {count} integers for {size} values: inconsistent")
        if not 1 <= terms <= self.codec.max_terms or scale >> self.codec.scalar_bits:
            raise DecodeError(
                f"ciphertext budget metadata out of range: terms={terms}, scale={scale}"
            )
        if offset > terms * scale:
            raise DecodeError(f"ciphertext offset {offset} exceeds terms*scale={terms * scale}")
        if width != self._int_width():
            raise DecodeError(f"ciphertext integer width {width} != expected {self._int_width()}")
        expected = _HEADER.size + nonce_len + count * width
        if len(data) != expected:
            raise DecodeError(f"ciphertext bytes have length {len(data)}, expected {expected}")
        nonce = data[_HEADER.size : _HEADER.size + nonce_len]
        if len(nonce) != len(self._new_nonce()):
            raise DecodeError(
                f"ciphertext nonce has {nonce_len} bytes, expected {len(self._new_nonce())}"
            )
        body = memoryview(data)[_HEADER.size + nonce_len :]
        ints = []
        for i in range(count):
            value = self._load_int(body[i * width : (i + 1) * width])
            if not self._int_valid(value):
                raise DecodeError(f"ciphertext integer {i} is out of range for this key")
            ints.append(value)
        return PackedCiphertext(
            scheme_name=self.name,
            key_fingerprint=self.fingerprint,
            size=size,
            layout=self.layout,  # equal to the bytes' (checked above)
            terms=terms,
            scale=scale,
            offset=offset,
            ints=tuple(ints),
            nonce=nonce,
        )

    def describe(self) -> dict[str, Any]:
        """Scheme parameters for a run summary (no key material)."""
        info = super().describe()
        info.update(
            codec=dict(
                zip(
                    ("frac_bits", "int_bits", "scalar_bits", "max_terms", "guard_bits"),
                    self.codec.to_tuple(),
                    strict=True,
                )
            ),
            slot_bits=self.layout.slot_bits,
            slots_per_integer=self.layout.slots,
        )
        return info

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)
