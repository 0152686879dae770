"""Pairwise masks for secure aggregation: key agreement, mask streams, masked sums.

After Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning" (CCS 2017), on one neighbourhood of a graph: every pair
(j, k) of a hub's members agrees a secret with X25519 + HKDF-SHA256 (the
``cryptography`` package); each member adds to its message the pseudorandom
masks it shares with the other members, with opposite signs for the two ends of
a pair, so the masks cancel exactly in the hub's sum and nowhere else.

Masks live in a ring where the sum is exact:

* ``PaillierMaskedSum``: Z_n of the hub's Paillier key, over packed plaintext
  integers; the hub adds the ciphertexts, decrypts once, and the masks vanish
  mod n. Each message is a fresh encryption (fresh randomness), which is its
  re-randomization.
* ``ClearMaskedSum``: Z_{2^32} (or Z_{2^64} for wide codecs) over the
  fixed-point integers themselves, sent unencrypted; the masks alone hide each
  term from the hub.

Both decode the same exact integer sum, so they give bit-identical floats.

The mask stream is SHAKE-256 over (secret, round): an extendable-output
function from the standard library. Residues mod n are drawn from 128 extra
bits and reduced (statistical distance from uniform below 2^-128).
"""

from __future__ import annotations

import hashlib
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cipherfact.crypto.base import Ciphertext
from cipherfact.crypto.codec import FixedPointCodec, as_float_vector
from cipherfact.crypto.errors import DecodeError
from cipherfact.crypto.paillier import PaillierScheme

__all__ = [
    "DH_PUBLIC_BYTES",
    "ClearMaskedSum",
    "MaskAgreement",
    "MaskedSum",
    "PaillierMaskedSum",
    "combined_mask",
    "mask_stream",
]

DH_PUBLIC_BYTES = 32
SEED_BYTES = 32
_STAT_BITS = 128  # extra bits per residue mod a non power of two


class MaskAgreement:
    """One agent's X25519 key pair for agreeing mask secrets (fresh from the OS)."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def shared_seed(self, peer_public: bytes, context: bytes) -> bytes:
        """HKDF-SHA256 of the X25519 secret, bound to ``context`` (job, hub, pair)."""
        if len(peer_public) != DH_PUBLIC_BYTES:
            raise DecodeError(
                f"mask public key must be {DH_PUBLIC_BYTES} bytes, got {len(peer_public)}"
            )
        try:
            peer = X25519PublicKey.from_public_bytes(bytes(peer_public))
            secret = self._key.exchange(peer)
        except ValueError as exc:  # e.g. a low-order point: all-zero shared secret
            raise DecodeError(f"bad mask public key: {exc}") from None
        info = b"cipherfact-mask|" + context
        return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(
            secret
        )

    def __repr__(self) -> str:  # never show key material
        return f"MaskAgreement(public {self.public_bytes()[:4].hex()}...)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("MaskAgreement objects are never pickled")


def pair_context(job_id: str, hub: int, a: int, b: int) -> bytes:
    """HKDF info for the secret of members a and b of ``hub``'s neighbourhood."""
    low, high = sorted((a, b))
    return job_id.encode() + struct.pack(">qqq", hub, low, high)


def _word_dtype(modulus: int) -> np.dtype | None:
    """numpy dtype for rings Z_2^32 and Z_2^64 (vectorized masks), else None."""
    if modulus == 1 << 32:
        return np.dtype(np.uint32)
    if modulus == 1 << 64:
        return np.dtype(np.uint64)
    return None


def mask_stream(seed: bytes, round_index: int, count: int, modulus: int) -> Any:
    """``count`` pseudorandom residues mod ``modulus`` for one round (SHAKE-256).

    A numpy array of words for Z_2^32 and Z_2^64 (the unencrypted ring; big
    masks are cheap), a list of ints otherwise (Z_n: a few packed integers).
    """
    words = _word_dtype(modulus)
    source = hashlib.shake_256(seed + struct.pack(">q", round_index))
    if words is not None:
        raw = source.digest(words.itemsize * count)
        return np.frombuffer(raw, dtype=words.newbyteorder(">")).astype(words)
    if modulus & (modulus - 1) == 0:  # another power of two: exact bits
        width, extra = (modulus.bit_length() - 1 + 7) // 8, 0
    else:
        width, extra = (modulus.bit_length() + _STAT_BITS + 7) // 8, 1
    stream = source.digest(width * count)
    out = []
    for i in range(count):
        value = int.from_bytes(stream[i * width : (i + 1) * width], "big")
        out.append(value % modulus if extra or value >= modulus else value)
    return out


def combined_mask(
    sender: int,
    pair_seeds: Sequence[tuple[int, bytes]],
    round_index: int,
    count: int,
    modulus: int,
) -> Any:
    """Sum over the other members k of sign(sender, k) * PRG(s_sender,k, round) mod modulus.

    sign is +1 when sender < k and -1 otherwise, so the two ends of every pair
    cancel in the hub's sum. Same return type as ``mask_stream``.
    """
    words = _word_dtype(modulus)
    total: Any = np.zeros(count, dtype=words) if words is not None else [0] * count
    for other, seed in pair_seeds:
        if other == sender:
            raise ValueError(f"agent {sender} cannot share a mask with itself")
        stream = mask_stream(seed, round_index, count, modulus)
        if words is not None:  # numpy wraps mod 2^32 / 2^64
            total = total + stream if sender < other else total - stream
        elif sender < other:
            total = [(t + x) % modulus for t, x in zip(total, stream, strict=True)]
        else:
            total = [(t - x) % modulus for t, x in zip(total, stream, strict=True)]
    return total


class MaskedSum(ABC):
    """How masked vectors are sealed for one hub and how the hub opens their sum."""

    #: the ring Z_modulus the masks live in
    modulus: int

    @abstractmethod
    def mask_count(self, size: int) -> int:
        """Ring elements in a message carrying ``size`` values."""

    @abstractmethod
    def seal(self, x: np.ndarray, mask: Sequence[int]) -> bytes:
        """Encode ``x``, add ``mask`` in the ring, and (maybe) encrypt: one message's bytes."""

    @abstractmethod
    def open_sum(self, payloads: Sequence[bytes], size: int) -> np.ndarray:
        """The exact sum of the sealed vectors (masks cancel); the hub only."""

    @abstractmethod
    def check(self, payload: bytes, size: int | None = None) -> None:
        """Raise ``DecodeError`` if ``payload`` is not a well-formed message."""


class PaillierMaskedSum(MaskedSum):
    """Masks mod n over packed plaintexts, each message a fresh Paillier encryption."""

    def __init__(self, scheme: PaillierScheme) -> None:
        if not isinstance(scheme, PaillierScheme):
            raise TypeError(f"scheme must be a PaillierScheme, got {type(scheme).__name__}")
        self.scheme = scheme
        self.modulus = scheme.mask_modulus

    def mask_count(self, size: int) -> int:
        return self.scheme.layout.count(size)

    def seal(self, x: np.ndarray, mask: Sequence[int]) -> bytes:
        return self.scheme.to_bytes(self.scheme.encrypt_masked(x, mask))

    def open_sum(self, payloads: Sequence[bytes], size: int) -> np.ndarray:
        return self.scheme.decrypt(self.sealed_sum(payloads, size))

    def sealed_sum(self, payloads: Sequence[bytes], size: int) -> Ciphertext:
        """The ciphertext whose decryption ``open_sum`` returns (to decrypt in a batch)."""
        cts = [self.scheme.from_bytes(p) for p in payloads]
        for c in cts:
            if c.size != size or (c.terms, c.scale, c.offset) != (1, 1, 1):
                raise DecodeError(
                    f"masked message holds {c.size} values with budget "
                    f"{(c.terms, c.scale, c.offset)}, expected {size} fresh values"
                )
        return self.scheme.sum(cts)

    def check(self, payload: bytes, size: int | None = None) -> None:
        c = self.scheme.from_bytes(payload)
        if (size is not None and c.size != size) or (c.terms, c.scale, c.offset) != (1, 1, 1):
            raise DecodeError("masked message is not one fresh encryption of the expected size")


_CLEAR = struct.Struct(">4sBBI")  # magic, version, word bytes, count
_CLEAR_MAGIC = b"CFMS"


class ClearMaskedSum(MaskedSum):
    """Masks mod 2^32 or 2^64 over the fixed-point integers; no encryption.

    The ring is the narrowest whose signed range holds the hub's sum
    (value bits + one bit per doubling of the terms + sign), so a message
    costs 4 bytes per value for the bundled scenarios.
    """

    def __init__(self, codec: FixedPointCodec) -> None:
        if not isinstance(codec, FixedPointCodec):
            raise TypeError(f"codec must be a FixedPointCodec, got {type(codec).__name__}")
        needed = codec.int_bits + codec.frac_bits + codec.term_bits + 1
        if needed > 64:
            raise ValueError(
                f"a {codec.int_bits}+{codec.frac_bits}-bit codec summing {codec.max_terms} "
                "terms does not fit 64-bit masked integers"
            )
        self.codec = codec
        self.word_bytes = 4 if needed <= 32 else 8
        self.modulus = 1 << (8 * self.word_bytes)
        self._unsigned = np.dtype(np.uint32 if self.word_bytes == 4 else np.uint64)
        self._signed = np.dtype(np.int32 if self.word_bytes == 4 else np.int64)
        self._wire = self._unsigned.newbyteorder(">")

    def mask_count(self, size: int) -> int:
        return size

    def seal(self, x: np.ndarray, mask: Sequence[int]) -> bytes:
        ints = self.codec.encode(as_float_vector(x, "x"), "x").astype(self._signed)
        if len(mask) != ints.size:
            raise ValueError(f"mask has {len(mask)} elements for {ints.size} values")
        masked = ints.view(self._unsigned) + np.asarray(mask, dtype=self._unsigned)  # wraps
        header = _CLEAR.pack(_CLEAR_MAGIC, 1, self.word_bytes, ints.size)
        return header + masked.astype(self._wire).tobytes()

    def words(self, payload: bytes) -> np.ndarray:
        """The ring elements of one message (what its hub, or a wiretap, reads)."""
        data = bytes(payload)
        if len(data) < _CLEAR.size:
            raise DecodeError(f"masked message truncated: {len(data)} bytes")
        magic, version, width, size = _CLEAR.unpack_from(data)
        if magic != _CLEAR_MAGIC or version != 1 or width != self.word_bytes:
            raise DecodeError(
                f"not a masked message of this job: magic {magic!r}, version {version}, "
                f"{width}-byte words (expected {self.word_bytes})"
            )
        if size < 1 or len(data) != _CLEAR.size + width * size:
            raise DecodeError(f"masked message has {len(data)} bytes for {size} values")
        return np.frombuffer(data, dtype=self._wire, offset=_CLEAR.size).astype(self._unsigned)

    def decode_words(self, words: np.ndarray) -> np.ndarray:
        """Ring elements -> floats, reading them as signed fixed point."""
        signed = np.asarray(words, dtype=self._unsigned).view(self._signed)
        return np.ldexp(signed.astype(np.float64), -self.codec.frac_bits)

    def open_sum(self, payloads: Sequence[bytes], size: int) -> np.ndarray:
        if len(payloads) > self.codec.max_terms:
            raise DecodeError(
                f"{len(payloads)} masked messages exceed the codec's max_terms="
                f"{self.codec.max_terms}"
            )
        total = np.zeros(size, dtype=self._unsigned)
        for p in payloads:
            values = self.words(p)
            if values.size != size:
                raise DecodeError(f"masked message holds {values.size} values, expected {size}")
            total += values  # mod 2^32 or 2^64
        return self.decode_words(total)

    def check(self, payload: bytes, size: int | None = None) -> None:
        values = self.words(payload)
        if size is not None and values.size != size:
            raise DecodeError(f"masked message holds {values.size} values, expected {size}")
