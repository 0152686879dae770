"""The contract every Scheme implementation must meet (parametrized in conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.crypto import KeyMismatchError, MissingSecretKeyError, Scheme

from .conftest import CODEC, SchemeCase

EDGE = 2.0**CODEC.int_bits - 2.0**-CODEC.frac_bits
LENGTHS = [1, 5, 19, 40]  # 18 slots per 1024-bit integer: 19 and 40 leave partial integers


def vector(length: int, seed: int) -> np.ndarray:
    """Random signed values with the codec's edge values mixed in."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-EDGE, EDGE, length)
    edges = [EDGE, -EDGE, 0.0]
    x[: min(length, 3)] = edges[: min(length, 3)]
    return rng.permutation(x)


def fixed(x: np.ndarray) -> np.ndarray:
    """The codec's integers for x (int64)."""
    return np.rint(np.ldexp(x, CODEC.frac_bits)).astype(np.int64)


def check(case: SchemeCase, got: np.ndarray, ints: np.ndarray, floats: np.ndarray) -> None:
    """Exact schemes must give ints / 2**frac_bits bit for bit; others within atol."""
    assert got.dtype == np.float64 and got.shape == floats.shape
    if case.atol == 0.0:
        expected = np.ldexp(ints.astype(np.float64), -CODEC.frac_bits)
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, floats, rtol=0, atol=case.atol)


@pytest.mark.parametrize("length", LENGTHS)
def test_roundtrip(scheme_case: tuple[str, SchemeCase, Scheme], length: int) -> None:
    _, case, s = scheme_case
    x = vector(length, 1)
    check(case, s.decrypt(s.encrypt(x)), fixed(x), x)


@pytest.mark.parametrize("length", LENGTHS)
def test_add(scheme_case: tuple[str, SchemeCase, Scheme], length: int) -> None:
    _, case, s = scheme_case
    a, b = vector(length, 2), vector(length, 3)
    check(case, s.decrypt(s.add(s.encrypt(a), s.encrypt(b))), fixed(a) + fixed(b), a + b)


@pytest.mark.parametrize("length", LENGTHS)
def test_add_plain(scheme_case: tuple[str, SchemeCase, Scheme], length: int) -> None:
    _, case, s = scheme_case
    a, b = vector(length, 4), vector(length, 5)
    check(case, s.decrypt(s.add_plain(s.encrypt(a), b)), fixed(a) + fixed(b), a + b)


@pytest.mark.parametrize("k", [-255, -3, -1, 0, 1, 2, 255])
@pytest.mark.parametrize("length", [1, 19])
def test_mul_scalar(scheme_case: tuple[str, SchemeCase, Scheme], k: int, length: int) -> None:
    _, case, s = scheme_case
    a = vector(length, 6)
    check(case, s.decrypt(s.mul_scalar(s.encrypt(a), k)), fixed(a) * k, a * k)


def test_mul_then_add_mixed_signs(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    a, b = vector(19, 7), vector(19, 8)
    c = s.add(s.mul_scalar(s.encrypt(a), -7), s.mul_scalar(s.encrypt(b), 5))
    check(case, s.decrypt(c), fixed(a) * -7 + fixed(b) * 5, -7 * a + 5 * b)


def test_sum(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    xs = [vector(19, 10 + i) for i in range(4)]
    got = s.decrypt(s.sum([s.encrypt(x) for x in xs]))
    check(case, got, np.sum([fixed(x) for x in xs], axis=0), np.sum(xs, axis=0))


def test_sum_needs_one(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, _, s = scheme_case
    with pytest.raises(ValueError, match="at least one ciphertext"):
        s.sum([])


def test_rerandomize(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    x = vector(19, 20)
    c = s.encrypt(x)
    r = s.public().rerandomize(c)
    if case.randomized_bytes:
        assert s.to_bytes(r) != s.to_bytes(c)
    check(case, s.decrypt(r), fixed(x), x)


def test_fresh_encryptions_differ(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    x = vector(5, 21)
    if case.randomized_bytes:
        assert s.to_bytes(s.encrypt(x)) != s.to_bytes(s.encrypt(x))


def test_bytes_roundtrip(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    x = vector(40, 22)
    c = s.mul_scalar(s.add_plain(s.encrypt(x), x), -3)
    data = s.to_bytes(c)
    assert isinstance(data, bytes)
    back = s.from_bytes(data)
    assert s.to_bytes(back) == data
    check(case, s.decrypt(back), (fixed(x) * 2) * -3, -6 * x)


def test_public_copy_cannot_decrypt(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, _, s = scheme_case
    pub = s.public()
    assert not pub.has_secret_key and s.has_secret_key
    assert pub.fingerprint == s.fingerprint
    with pytest.raises(MissingSecretKeyError, match=r"holds only the public (key|context)"):
        pub.decrypt(pub.encrypt(np.ones(3)))


def test_key_mismatch(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, case, s = scheme_case
    other = case.make()
    c = other.encrypt(np.ones(3))
    with pytest.raises(KeyMismatchError, match=r"encrypted under (key|context)"):
        s.decrypt(c)
    with pytest.raises(KeyMismatchError, match=r"encrypted under (key|context)"):
        s.add(s.encrypt(np.ones(3)), c)
    with pytest.raises(KeyMismatchError, match=r"(encrypted|made) under (key|context)"):
        s.from_bytes(other.to_bytes(c))


def test_repr_shows_fingerprint_only(scheme_case: tuple[str, SchemeCase, Scheme]) -> None:
    _, _, s = scheme_case
    assert repr(s) == f"{type(s).__name__}(secret key {s.fingerprint})"
    assert len(s.fingerprint) == 16 and int(s.fingerprint, 16) >= 0
