"""Byte formats: round trips, strict validation of bad input, phe key interop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import phe
import pytest

from cipherfact.crypto import (
    DecodeError,
    FixedPointCodec,
    InsecureParameterError,
    KeyMismatchError,
    MissingSecretKeyError,
    PaillierOptions,
    PaillierScheme,
    PlainScheme,
    generate_scheme,
    load_public_scheme,
    load_secret_scheme,
)
from cipherfact.crypto.codec import pack_slots
from cipherfact.crypto.keys import PaillierKeyMaterial

from .conftest import CODEC, TEST_KEY_BITS

X = np.array([1.25, -3.5, 0.0, 255.0, -255.0])


@pytest.fixture(scope="module")
def phe_keys() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    return phe.generate_paillier_keypair(n_length=TEST_KEY_BITS)


# ---- keys ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["paillier", "plain"])
def test_public_and_secret_key_roundtrip(name: str, paillier: PaillierScheme) -> None:
    s: Any = paillier if name == "paillier" else generate_scheme("plain", codec=CODEC)
    pub = load_public_scheme(name, s.public_bytes(), codec=CODEC)
    assert pub.fingerprint == s.fingerprint and not pub.has_secret_key
    assert pub.public_bytes() == s.public_bytes()
    back = load_secret_scheme(s.export_secret_key_bytes(), CODEC)
    assert back.has_secret_key and back.fingerprint == s.fingerprint
    c = pub.encrypt(X)
    np.testing.assert_array_equal(back.decrypt(back.from_bytes(pub.to_bytes(c))), X)
    with pytest.raises(MissingSecretKeyError, match="holds no secret key"):
        pub.export_secret_key_bytes()  # type: ignore[attr-defined]


def test_key_floor() -> None:
    with pytest.raises(InsecureParameterError, match="below the 2048-bit floor"):
        generate_scheme("paillier", codec=CODEC, key_bits=1024)
    with pytest.raises(InsecureParameterError, match="must be >= 256"):
        generate_scheme("paillier", codec=CODEC, key_bits=128, insecure_test_keys=True)
    with pytest.raises(ValueError, match="key_bits must be even"):
        generate_scheme("paillier", codec=CODEC, key_bits=1001, insecure_test_keys=True)


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'rsa'"):
        generate_scheme("rsa", codec=CODEC)


def test_small_public_key_needs_test_flag(paillier: PaillierScheme) -> None:
    data = bytearray(paillier.public_bytes())
    assert data[6] == 1  # flags: test key
    data[6] = 0
    with pytest.raises(InsecureParameterError, match="below the 2048-bit floor"):
        load_public_scheme("paillier", bytes(data), codec=CODEC)
    pub = load_public_scheme("paillier", bytes(data), codec=CODEC, insecure_test_keys=True)
    assert pub.fingerprint == paillier.fingerprint


def corrupt(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: b"XXXX" + d[4:], "not paillier public key bytes"),
        (lambda d: corrupt(d, 4, b"\x02"), "unsupported paillier public key version 2"),
        (lambda d: corrupt(d, 5, b"\x02"), "expected paillier"),
        (lambda d: corrupt(d, 6, b"\x80"), "unknown flags"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: corrupt(d, 9 + 127, b"\x00"), "odd non-square"),  # n made even
        (lambda d: d[: -2 * 128] + bytes(2 * 128), "not a unit"),  # h_s = 0
    ],
)
def test_public_key_decode_errors(
    paillier: PaillierScheme, mutate: Callable[[bytes], bytes], match: str
) -> None:
    with pytest.raises(DecodeError, match=match):
        load_public_scheme("paillier", mutate(paillier.public_bytes()), codec=CODEC)


def test_secret_key_decode_errors(paillier: PaillierScheme, key_a: PaillierKeyMaterial) -> None:
    data = paillier.export_secret_key_bytes()
    with pytest.raises(DecodeError, match="bad magic or truncated"):
        load_secret_scheme(b"CFPK" + data[4:], CODEC)
    with pytest.raises(DecodeError, match="unknown scheme id 9"):
        load_secret_scheme(corrupt(data, 5, b"\x09"), CODEC)
    # p replaced by p + 2 or p + 4, whichever 3 divides: odd (so n stays odd) and
    # never prime. (Flipping bit 1 of p gave p +- 2, itself prime for about one key
    # in 180: the test failed at random.)
    p = key_a.p
    assert p is not None
    bad_p = p + (2 if (p + 2) % 3 == 0 else 4)
    start = 7 + 2  # header, then p's 2-byte length and its 64 bytes
    with pytest.raises(DecodeError, match=r"not prime"):
        load_secret_scheme(data[:start] + bad_p.to_bytes(64, "big") + data[start + 64 :], CODEC)
    with pytest.raises(DecodeError, match="truncated"):
        load_secret_scheme(data[:-5], CODEC)


def test_plain_key_decode_errors() -> None:
    s = generate_scheme("plain", codec=CODEC)
    with pytest.raises(DecodeError, match="must be 25 bytes"):
        load_public_scheme("plain", s.public_bytes()[:-1], codec=CODEC)
    with pytest.raises(DecodeError, match="magic"):
        load_public_scheme("plain", s.export_secret_key_bytes(), codec=CODEC)  # type: ignore[attr-defined]
    with pytest.raises(DecodeError, match="does not fit the codec"):
        load_public_scheme("plain", corrupt(s.public_bytes(), 7, b"\x00\x10"), codec=CODEC)


# ---- ciphertexts -----------------------------------------------------------------
HEADER = 55


@pytest.mark.parametrize(
    ("mutate", "exc", "match"),
    [
        (lambda d: b"CFXX" + d[4:], DecodeError, "not a cipherfact ciphertext"),
        (lambda d: corrupt(d, 4, b"\x07"), DecodeError, "unsupported ciphertext version 7"),
        (lambda d: corrupt(d, 5, b"\x02"), DecodeError, "is for scheme id 2"),
        (lambda d: corrupt(d, 6, b"\xff" * 8), KeyMismatchError, "encrypted under key ffff"),
        (lambda d: corrupt(d, 14, b"\x17"), DecodeError, "codec .* differs"),
        (lambda d: corrupt(d, 22, b"\x00\x01"), DecodeError, "layout .* differs"),
        (lambda d: corrupt(d, 24, b"\x00\x00\x00\x00"), DecodeError, "integers for 0 values"),
        (lambda d: corrupt(d, 28, b"\x00\x00\x00\x00"), DecodeError, "budget metadata"),
        (lambda d: corrupt(d, 28, b"\x00\x00\x00\x11"), DecodeError, "budget metadata"),
        (lambda d: corrupt(d, 32, b"\x00" * 5 + b"\x01\x00\x00"), DecodeError, "budget metadata"),
        (lambda d: corrupt(d, 40, b"\x00" * 7 + b"\x09"), DecodeError, "offset 9 exceeds"),
        (lambda d: corrupt(d, 52, b"\x00\x10"), DecodeError, "width 16"),
        (lambda d: corrupt(d, 54, b"\x03"), DecodeError, "length|nonce"),
        (lambda d: d[:30], DecodeError, "truncated"),
        (lambda d: d[:-1], DecodeError, "have length"),
        (lambda d: d + b"\x00", DecodeError, "have length"),
        (lambda d: d[:HEADER] + bytes(len(d) - HEADER), DecodeError, "integer 0 is out of range"),
        (lambda d: d[:HEADER] + b"\xff" * (len(d) - HEADER), DecodeError, "out of range"),
    ],
)
def test_ciphertext_decode_errors(
    paillier: PaillierScheme, mutate: Callable[[bytes], bytes], exc: type, match: str
) -> None:
    data = paillier.to_bytes(paillier.add(paillier.encrypt(X), paillier.encrypt(X)))
    paillier.from_bytes(data)  # the unmodified bytes are fine
    with pytest.raises(exc, match=match):
        paillier.from_bytes(mutate(data))


def test_ciphertext_codec_and_layout_must_match(key_a: PaillierKeyMaterial) -> None:
    s = PaillierScheme(key_a, codec=CODEC)
    data = s.to_bytes(s.encrypt(X))
    other_codec = PaillierScheme(key_a, codec=FixedPointCodec(frac_bits=20))
    with pytest.raises(DecodeError, match=r"codec .* differs"):
        other_codec.from_bytes(data)
    unpacked = PaillierScheme(key_a, codec=CODEC, options=PaillierOptions(packing=False))
    with pytest.raises(DecodeError, match=r"layout .* differs"):
        unpacked.from_bytes(data)
    with pytest.raises(KeyMismatchError, match="uses layout"):
        unpacked.add(unpacked.encrypt(X), s.encrypt(X))


def test_plain_ciphertext_rejects_scheme_crossing(paillier: PaillierScheme) -> None:
    plain = generate_scheme("plain", codec=CODEC, key_bits=TEST_KEY_BITS)
    with pytest.raises(DecodeError, match="is for scheme id 1"):
        plain.from_bytes(paillier.to_bytes(paillier.encrypt(X)))
    with pytest.raises(KeyMismatchError, match="belongs to scheme 'paillier'"):
        plain.decrypt(paillier.encrypt(X))


def test_ciphertext_bytes_are_compact(paillier: PaillierScheme) -> None:
    c = paillier.encrypt(np.zeros(40))  # 3 integers of 18 slots at 1024 bits
    assert len(paillier.to_bytes(c)) == HEADER + 3 * 256


def test_corrupted_ciphertext_detected_at_decrypt(paillier: PaillierScheme) -> None:
    c = paillier.encrypt(X)
    forged = paillier.from_bytes(corrupt(paillier.to_bytes(c), 40, b"\x00" * 8))  # offset 0
    with pytest.raises(DecodeError, match="exceeds its tracked bound"):
        paillier.decrypt(forged)


# ---- phe interop ---------------------------------------------------------------
def test_phe_keys_interop(phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]) -> None:
    pub, priv = phe_keys
    s = PaillierScheme.from_phe_keys(pub, priv, codec=CODEC, insecure_test_keys=True)
    p = PaillierScheme.from_phe_keys(pub, codec=CODEC, insecure_test_keys=True)
    assert s.has_secret_key and not p.has_secret_key and s.fingerprint == p.fingerprint
    assert s.phe_public_key == pub and s.phe_private_key == priv
    c = p.encrypt(X)  # ours -> phe decrypts the packed integer
    pad = [CODEC.value_bound] * (s.layout.slots - len(X))  # unused slots hold v = 0
    packed = pack_slots((CODEC.encode(X) + CODEC.value_bound).tolist() + pad, s.layout)[0]
    assert priv.raw_decrypt(int(c.ints[0])) == packed
    raw = pub.raw_encrypt(packed)  # phe -> ours
    forged = s.from_bytes(s.to_bytes(c)[:HEADER] + raw.to_bytes(256, "big"))
    np.testing.assert_array_equal(s.decrypt(forged), X)
    with pytest.raises(MissingSecretKeyError, match="holds no secret key"):
        _ = p.phe_private_key


def test_phe_keys_validation(
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey], paillier: PaillierScheme
) -> None:
    pub, _ = phe_keys
    with pytest.raises(InsecureParameterError, match="below the 2048-bit floor"):
        PaillierScheme.from_phe_keys(pub, codec=CODEC)
    with pytest.raises(TypeError, match=r"must be phe\.PaillierPublicKey"):
        PaillierScheme.from_phe_keys(pub.n, codec=CODEC, insecure_test_keys=True)
    with pytest.raises(ValueError, match="does not belong to public_key"):
        PaillierScheme.from_phe_keys(
            pub, paillier.phe_private_key, codec=CODEC, insecure_test_keys=True
        )


def test_plain_twin_key_ids_are_fresh() -> None:
    a = generate_scheme("plain", codec=CODEC)
    b = generate_scheme("plain", codec=CODEC)
    assert isinstance(a, PlainScheme) and a.fingerprint != b.fingerprint
