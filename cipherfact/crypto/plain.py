"""The plain twin: Paillier's packing and budget checks with no encryption.

It runs the exact same ``PackedScheme`` code path (encode, offsets, packing,
budget tracking, byte format) on bare packed integers, so a protocol run on it
decodes to the same float64 bits as on Paillier, at a fraction of the cost.
A random per-instance key id stands in for the public key, so mixing twins
raises ``KeyMismatchError`` as Paillier would; a random nonce in each
ciphertext makes ``rerandomize`` change the bytes, as Paillier's does.

Public bytes: ``b"CFPK" | version B=1 | scheme id B=2 | flags B=0 | modulus_bits H |
key id (16 bytes)``; the canonical bytes (fingerprint input) are the same minus
the flags byte. Secret bytes: the same with magic ``b"CFSK"``.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

from cipherfact.crypto.codec import FixedPointCodec, Layout
from cipherfact.crypto.errors import DecodeError, MissingSecretKeyError
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.packed import SCHEME_IDS, PackedScheme, fingerprint_of

__all__ = ["PlainScheme"]

_KEY = struct.Struct(">4sBBBH16s")
PLAIN_ID = SCHEME_IDS["plain"]
NONCE_BYTES = 16


class PlainScheme(PackedScheme):
    """Unencrypted packed integers with Paillier's exact bookkeeping."""

    name: ClassVar[str] = "plain"

    def __init__(
        self,
        key_id: bytes,
        *,
        codec: FixedPointCodec,
        modulus_bits: int = 2048,
        options: PaillierOptions | None = None,
        secret: bool = True,
    ) -> None:
        """Internal: use ``generate`` or the ``load_*`` functions."""
        if not isinstance(codec, FixedPointCodec):
            raise TypeError(f"codec must be a FixedPointCodec, got {type(codec).__name__}")
        options = PaillierOptions() if options is None else options
        if not isinstance(options, PaillierOptions):
            raise TypeError(f"options must be PaillierOptions, got {type(options).__name__}")
        if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int):
            raise TypeError(f"key_bits must be an int, got {type(modulus_bits).__name__}")
        if not 2 <= modulus_bits <= 16384:
            raise ValueError(f"key_bits must be in [2, 16384], got {modulus_bits}")
        self.codec, self.options = codec, options
        self.layout = Layout.for_modulus(codec, modulus_bits, options.packing)
        self._key_id, self._bits, self._secret = key_id, modulus_bits, secret
        public = self._key_bytes(b"CFPK")
        self._fingerprint = fingerprint_of(public[:6] + public[7:])
        self._limit = 1 << (self.layout.slot_bits * self.layout.slots)

    def _key_bytes(self, magic: bytes) -> bytes:
        return _KEY.pack(magic, 1, PLAIN_ID, 0, self._bits, self._key_id)

    @classmethod
    def generate(
        cls,
        *,
        codec: FixedPointCodec,
        key_bits: int = 2048,
        insecure_test_keys: bool = False,
        options: PaillierOptions | None = None,
    ) -> PlainScheme:
        """Fresh twin; ``key_bits`` only sets the layout (same slots as Paillier's n)."""
        del insecure_test_keys  # nothing to secure; accepted for a uniform signature
        return cls(secrets.token_bytes(16), codec=codec, modulus_bits=key_bits, options=options)

    @classmethod
    def _parse(cls, data: object, magic: bytes) -> tuple[int, bytes]:
        what = "plain public key" if magic == b"CFPK" else "plain secret key"
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != _KEY.size:
            raise DecodeError(f"{what} must be {_KEY.size} bytes, got {len(data)}")
        got, version, scheme_id, flags, bits, key_id = _KEY.unpack(data)
        if got != magic:
            raise DecodeError(f"not {what} bytes: magic {got!r}, expected {magic!r}")
        if version != 1:
            raise DecodeError(f"unsupported {what} version {version}, expected 1")
        if scheme_id != PLAIN_ID or flags != 0:
            raise DecodeError(
                f"{what} has scheme id {scheme_id}/flags {flags}, expected {PLAIN_ID}/0"
            )
        if not 2 <= bits <= 16384:
            raise DecodeError(f"{what} modulus_bits {bits} out of range")
        return bits, key_id

    @classmethod
    def from_public_bytes(
        cls,
        data: bytes,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
        insecure_test_keys: bool = False,
    ) -> PlainScheme:
        """Public-only twin from ``public_bytes()``."""
        bits, key_id = cls._parse(data, b"CFPK")
        try:
            return cls(key_id, codec=codec, modulus_bits=bits, options=options, secret=False)
        except ValueError as exc:
            raise DecodeError(f"plain public key does not fit the codec: {exc}") from None

    @classmethod
    def from_secret_bytes(
        cls,
        data: bytes,
        *,
        codec: FixedPointCodec,
        options: PaillierOptions | None = None,
        insecure_test_keys: bool = False,
    ) -> PlainScheme:
        """Twin that may 'decrypt', from ``export_secret_key_bytes()``."""
        bits, key_id = cls._parse(data, b"CFSK")
        try:
            return cls(key_id, codec=codec, modulus_bits=bits, options=options, secret=True)
        except ValueError as exc:
            raise DecodeError(f"plain secret key does not fit the codec: {exc}") from None

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def has_secret_key(self) -> bool:
        return self._secret

    @property
    def key_bits(self) -> int:
        """The modulus size whose layout this twin copies."""
        return self._bits

    def public(self) -> PlainScheme:
        return PlainScheme(
            self._key_id,
            codec=self.codec,
            modulus_bits=self._bits,
            options=self.options,
            secret=False,
        )

    def public_bytes(self) -> bytes:
        return self._key_bytes(b"CFPK")

    def export_secret_key_bytes(self) -> bytes:
        """The twin's 'secret key' (its key id), by name only, like Paillier's."""
        if not self._secret:
            raise MissingSecretKeyError(f"scheme with key {self.fingerprint} holds no secret key")
        return self._key_bytes(b"CFSK")

    def fill_pool(self, count: int) -> None:
        """No randomness to precompute; kept so callers need not special-case the twin."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")

    @property
    def pool_size(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to stop."""

    # ---- primitives -----------------------------------------------------------
    def _encrypt_ints(self, packed: list[int]) -> list[Any]:
        return list(packed)

    def _decrypt_ints(self, cts: Sequence[Any]) -> list[int]:
        return [int(c) for c in cts]

    def _add_ints(self, a: Any, b: Any) -> Any:
        return a + b

    def _add_plain_int(self, c: Any, plain: int) -> Any:
        return c + plain

    def _mul_int(self, c: Any, k: int) -> Any:
        return c * k

    def _rerandomize_ints(self, cts: Sequence[Any]) -> list[Any]:
        return list(cts)

    def _new_nonce(self) -> bytes:
        return secrets.token_bytes(NONCE_BYTES)

    def _int_width(self) -> int:
        return (self.layout.slot_bits * self.layout.slots + 7) // 8

    def _int_valid(self, value: Any) -> bool:
        return 0 <= value < self._limit

    def _load_int(self, data: memoryview) -> Any:
        return int.from_bytes(data, "big")
