"""Paillier key generation and the public/secret key byte formats.

Public key bytes (version 1, big-endian)::

    magic b"CFPK" | version B=1 | scheme id B=1 | flags B | nlen H | n (nlen bytes)
    | hlen H | h_s (hlen bytes, 0 or the byte width of n**2)

flags bit 0 marks an insecure *test* key (below 2048 bits). ``h_s = h**n mod
n**2`` is the Damgard-Jurik-Nielsen base for short-exponent randomness. The
*canonical* public key bytes, whose SHA-256 gives the fingerprint, are
``b"CFPK" | 1 | 1 | nlen | n``: the fingerprint names the modulus only, so the
same key wrapped twice (e.g. from phe, with a fresh h_s) keeps its name.

Secret key bytes, written only by ``export_secret_key_bytes``::

    magic b"CFSK" | version B=1 | scheme id B=1 | flags B | plen H | p | qlen H | q
    | hlen H | h_s

Loaders check lengths, ranges, primality of p and q and that h_s is a unit mod
n**2; anything else raises ``DecodeError``.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

import gmpy2

from cipherfact.crypto.errors import DecodeError, InsecureKeyError, InsecureParameterError

__all__ = [
    "MAX_KEY_BITS",
    "MIN_SECURE_KEY_BITS",
    "PaillierKeyMaterial",
    "check_key_bits",
    "decode_public",
    "decode_secret",
    "encode_public",
    "encode_secret",
    "generate_key_material",
    "public_canonical",
]

PK_MAGIC = b"CFPK"
SK_MAGIC = b"CFSK"
KEY_VERSION = 1
PAILLIER_ID = 1
MIN_SECURE_KEY_BITS = 2048
MIN_TEST_KEY_BITS = 256
MAX_KEY_BITS = 16384
FLAG_TEST_KEY = 1
_PREFIX = struct.Struct(">4sBBB")
_LEN = struct.Struct(">H")


@dataclass(frozen=True, repr=False)
class PaillierKeyMaterial:
    """Raw integers of a key: n and h_s always, p and q only with the secret."""

    n: int
    h_s: int | None = None
    p: int | None = None
    q: int | None = None
    test_key: bool = False

    def __repr__(self) -> str:  # never show key material
        return f"PaillierKeyMaterial({self.n.bit_length()} bits)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("key material is never pickled; use the explicit byte formats")


def check_key_bits(bits: int, insecure_test_keys: bool, what: str = "key_bits") -> None:
    """Refuse keys below the 2048-bit floor unless test keys were asked for by name."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{what} must be an int, got {type(bits).__name__}")
    if bits > MAX_KEY_BITS:
        raise ValueError(f"{what} must be <= {MAX_KEY_BITS}, got {bits}")
    if bits < MIN_TEST_KEY_BITS:
        raise InsecureParameterError(f"{what} must be >= {MIN_TEST_KEY_BITS}, got {bits}")
    if bits < MIN_SECURE_KEY_BITS and not insecure_test_keys:
        raise InsecureParameterError(
            f"{what}={bits} is below the {MIN_SECURE_KEY_BITS}-bit floor; pass "
            "insecure_test_keys=True for test keys"
        )


def _random_prime(bits: int) -> int:
    """Random prime with its top two bits set, so p*q has exactly 2*bits bits."""
    while True:
        start = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        p = int(gmpy2.next_prime(start))
        if p.bit_length() == bits:
            return p


def random_unit(n: int) -> int:
    """Uniform element of Z_n^* from the OS CSPRNG."""
    while True:
        r = secrets.randbelow(n)
        if r > 1 and gmpy2.gcd(r, n) == 1:
            return r


def generate_key_material(key_bits: int, insecure_test_keys: bool = False) -> PaillierKeyMaterial:
    """Fresh p, q (n of exactly ``key_bits`` bits) and a DJN base h_s = h**n mod n**2."""
    check_key_bits(key_bits, insecure_test_keys)
    if key_bits % 2:
        raise ValueError(f"key_bits must be even, got {key_bits}")
    half = key_bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        if p != q and gmpy2.gcd(p * q, (p - 1) * (q - 1)) == 1:
            break
    n = p * q
    h_s = int(gmpy2.powmod(random_unit(n), n, n * n))
    return PaillierKeyMaterial(n=n, h_s=h_s, p=p, q=q, test_key=key_bits < MIN_SECURE_KEY_BITS)


def _int_bytes(value: int, width: int | None = None) -> bytes:
    width = (value.bit_length() + 7) // 8 if width is None else width
    return _LEN.pack(width) + value.to_bytes(width, "big")


def public_canonical(n: int) -> bytes:
    """Canonical public key bytes (the fingerprint's input)."""
    return PK_MAGIC + bytes([KEY_VERSION, PAILLIER_ID]) + _int_bytes(n)


def _n2_width(n: int) -> int:
    return ((n * n).bit_length() + 7) // 8


def encode_public(key: PaillierKeyMaterial) -> bytes:
    """Public key bytes (see module docstring)."""
    flags = FLAG_TEST_KEY if key.test_key else 0
    h = b"" if key.h_s is None else key.h_s.to_bytes(_n2_width(key.n), "big")
    return (
        _PREFIX.pack(PK_MAGIC, KEY_VERSION, PAILLIER_ID, flags)
        + _int_bytes(key.n)
        + _LEN.pack(len(h))
        + h
    )


def encode_secret(key: PaillierKeyMaterial) -> bytes:
    """Secret key bytes; only ``export_secret_key_bytes`` calls this."""
    if key.p is None or key.q is None:
        raise ValueError("key material holds no secret key to encode")
    flags = FLAG_TEST_KEY if key.test_key else 0
    h = b"" if key.h_s is None else key.h_s.to_bytes(_n2_width(key.n), "big")
    return (
        _PREFIX.pack(SK_MAGIC, KEY_VERSION, PAILLIER_ID, flags)
        + _int_bytes(key.p)
        + _int_bytes(key.q)
        + _LEN.pack(len(h))
        + h
    )


class _Reader:
    """Bounds-checked cursor over untrusted bytes."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise DecodeError(f"{self.what} bytes truncated at offset {self.pos}")
        out = self.data[self.pos : self.pos + count]
        self.pos += count
        return out

    def integer(self, max_bytes: int) -> bytes:
        (width,) = _LEN.unpack(self.take(2))
        if width > max_bytes:
            raise DecodeError(f"{self.what} field of {width} bytes exceeds {max_bytes}")
        return self.take(width)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{self.what} bytes have {len(self.data) - self.pos} trailing bytes")


def _prefix(data: object, magic: bytes, what: str) -> tuple[_Reader, int]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
    reader = _Reader(bytes(data), what)
    got_magic, version, scheme_id, flags = _PREFIX.unpack(reader.take(_PREFIX.size))
    if got_magic != magic:
        raise DecodeError(f"not {what} bytes: magic {got_magic!r}, expected {magic!r}")
    if version != KEY_VERSION:
        raise DecodeError(f"unsupported {what} version {version}, expected {KEY_VERSION}")
    if scheme_id != PAILLIER_ID:
        raise DecodeError(f"{what} is for scheme id {scheme_id}, expected paillier ({PAILLIER_ID})")
    if flags & ~FLAG_TEST_KEY:
        raise DecodeError(f"{what} has unknown flags {flags:#x}")
    return reader, flags


def _check_modulus(n: int, test_flag: bool, insecure_test_keys: bool, what: str) -> None:
    bits = n.bit_length()
    if n < 3 or n % 2 == 0 or gmpy2.is_square(n):
        raise DecodeError(f"{what} modulus is not an odd non-square integer")
    if bits < MIN_TEST_KEY_BITS or bits > MAX_KEY_BITS:
        raise DecodeError(f"{what} modulus of {bits} bits is out of range")
    if bits < MIN_SECURE_KEY_BITS and not (test_flag or insecure_test_keys):
        raise InsecureKeyError(
            f"{what} modulus has {bits} bits, below the {MIN_SECURE_KEY_BITS}-bit floor, and is "
            "not marked as a test key; pass insecure_test_keys=True to accept it"
        )


def _read_h_s(reader: _Reader, n: int, what: str) -> int | None:
    raw = reader.integer(2 * MAX_KEY_BITS // 8 + 1)
    if not raw:
        return None
    if len(raw) != _n2_width(n):
        raise DecodeError(f"{what} h_s has {len(raw)} bytes, expected {_n2_width(n)}")
    h_s = int.from_bytes(raw, "big")
    if not 1 < h_s < n * n or gmpy2.gcd(h_s, n) != 1:
        raise DecodeError(f"{what} h_s is not a unit modulo n**2")
    return h_s


def decode_public(data: bytes, insecure_test_keys: bool = False) -> PaillierKeyMaterial:
    """Parse and validate public key bytes."""
    what = "paillier public key"
    reader, flags = _prefix(data, PK_MAGIC, what)
    n = int.from_bytes(reader.integer(MAX_KEY_BITS // 8), "big")
    test_flag = bool(flags & FLAG_TEST_KEY)
    _check_modulus(n, test_flag, insecure_test_keys, what)
    h_s = _read_h_s(reader, n, what)
    reader.finish()
    return PaillierKeyMaterial(n=n, h_s=h_s, test_key=n.bit_length() < MIN_SECURE_KEY_BITS)


def decode_secret(data: bytes, insecure_test_keys: bool = False) -> PaillierKeyMaterial:
    """Parse and validate secret key bytes (primality of p and q included)."""
    what = "paillier secret key"
    reader, flags = _prefix(data, SK_MAGIC, what)
    p = int.from_bytes(reader.integer(MAX_KEY_BITS // 16), "big")
    q = int.from_bytes(reader.integer(MAX_KEY_BITS // 16), "big")
    if p == q or p < 3 or q < 3:
        raise DecodeError(f"{what} primes are invalid (equal or too small)")
    n = p * q
    _check_modulus(n, bool(flags & FLAG_TEST_KEY), insecure_test_keys, what)
    if not (gmpy2.is_prime(p, 25) and gmpy2.is_prime(q, 25)):
        raise DecodeError(f"{what} factors are not prime")
    if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
        raise DecodeError(f"{what} has gcd(n, phi(n)) != 1")
    h_s = _read_h_s(reader, n, what)
    reader.finish()
    return PaillierKeyMaterial(
        n=n, h_s=h_s, p=p, q=q, test_key=n.bit_length() < MIN_SECURE_KEY_BITS
    )
