"""Property tests: decoders given random or damaged bytes raise only ValueErrors we own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherfact.crypto import (
    DecodeError,
    KeyMismatchError,
    PaillierScheme,
    PlainScheme,
    generate_scheme,
    load_public_scheme,
    load_secret_scheme,
)

from .conftest import CODEC, TEST_KEY_BITS

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ALLOWED = (DecodeError, KeyMismatchError)


@pytest.fixture(scope="module")
def plain() -> PlainScheme:
    s = generate_scheme("plain", codec=CODEC, key_bits=TEST_KEY_BITS)
    assert isinstance(s, PlainScheme)
    return s


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    """Truncate, extend, or overwrite a few bytes of a valid blob."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["truncate", "extend", "flip", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=16))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    i = draw(st.integers(0, len(data)))
    return bytes(data[:i]) + draw(st.binary(max_size=64)) + bytes(data[i + 8 :])


def decoders(paillier: PaillierScheme, plain: PlainScheme) -> list[Callable[[bytes], object]]:
    return [
        paillier.from_bytes,
        plain.from_bytes,
        lambda b: load_public_scheme("paillier", b, codec=CODEC),
        lambda b: load_public_scheme("plain", b, codec=CODEC),
        lambda b: load_secret_scheme(b, CODEC),
    ]


def feed(paillier: PaillierScheme, plain: PlainScheme, data: bytes) -> None:
    for decode in decoders(paillier, plain):
        with contextlib.suppress(*ALLOWED):
            decode(data)


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(paillier: PaillierScheme, plain: PlainScheme, data: bytes) -> None:
    feed(paillier, plain, data)


@FUZZ
@given(data=st.data())
def test_damaged_ciphertexts(
    paillier: PaillierScheme, plain: PlainScheme, data: st.DataObject
) -> None:
    x = np.array([1.0, -2.0, 3.5])
    for s in (paillier, plain):
        blob = data.draw(damaged(s.to_bytes(s.encrypt(x))))
        feed(paillier, plain, blob)


@FUZZ
@given(data=st.data())
def test_damaged_keys(paillier: PaillierScheme, plain: PlainScheme, data: st.DataObject) -> None:
    for blob in (
        paillier.public_bytes(),
        paillier.export_secret_key_bytes(),
        plain.public_bytes(),
        plain.export_secret_key_bytes(),
    ):
        feed(paillier, plain, data.draw(damaged(blob)))


@FUZZ
@given(
    prefix=st.sampled_from(
        [
            b"CFCT\x01\x01",
            b"CFCT\x01\x02",
            b"CFPK\x01\x01",
            b"CFSK\x01\x01",
            b"CFPK\x01\x02",
            b"CFSK\x01\x02",
        ]
    ),
    rest=st.binary(max_size=400),
)
def test_valid_prefixes_then_garbage(
    paillier: PaillierScheme, plain: PlainScheme, prefix: bytes, rest: bytes
) -> None:
    feed(paillier, plain, prefix + rest)
