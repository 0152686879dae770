"""Budget tracking, offsets, the paillier/plain twin property and misuse errors."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from cipherfact.crypto import (
    BudgetExceededError,
    PackedCiphertext,
    PaillierScheme,
    PlainScheme,
    generate_scheme,
)

from .conftest import CODEC, TEST_KEY_BITS

EDGE = 2.0**8 - 2.0**-24


@pytest.fixture(scope="module")
def plain() -> PlainScheme:
    s = generate_scheme("plain", codec=CODEC, key_bits=TEST_KEY_BITS)
    assert isinstance(s, PlainScheme)
    return s


def test_metadata_tracks_terms_scale_offset(plain: PlainScheme) -> None:
    c = plain.encrypt(np.ones(4))
    assert (c.terms, c.scale, c.offset) == (1, 1, 1)
    c = plain.add_plain(c, np.ones(4))
    assert (c.terms, c.scale, c.offset) == (2, 1, 2)
    c = plain.mul_scalar(c, -5)
    assert (c.terms, c.scale, c.offset) == (2, 5, 10)
    c = plain.add(c, plain.encrypt(np.ones(4)))
    assert (c.terms, c.scale, c.offset) == (3, 5, 11)
    np.testing.assert_array_equal(plain.decrypt(c), np.full(4, -9.0))


def test_k_max_hides_k_in_metadata_and_bytes_layout(plain: PlainScheme) -> None:
    x = np.array([1.0, -2.0, EDGE])
    c7 = plain.mul_scalar(plain.encrypt(x), 7, k_max=255)
    c200 = plain.mul_scalar(plain.encrypt(x), -200, k_max=255)
    assert (c7.terms, c7.scale, c7.offset) == (c200.terms, c200.scale, c200.offset) == (1, 255, 255)
    np.testing.assert_array_equal(plain.decrypt(c7), np.ldexp(CODEC.encode(x) * 7.0, -24))
    np.testing.assert_array_equal(plain.decrypt(c200), np.ldexp(CODEC.encode(x) * -200.0, -24))


def test_k_max_must_cover_k(plain: PlainScheme) -> None:
    with pytest.raises(ValueError, match="k_max must be >= \\|k\\|, got k_max=3 for \\|k\\|=4"):
        plain.mul_scalar(plain.encrypt(np.ones(2)), -4, k_max=3)


@pytest.mark.parametrize("k", [1.0, True, "2", np.float64(2.0)])
def test_mul_scalar_rejects_non_integers(plain: PlainScheme, k: object) -> None:
    with pytest.raises(TypeError, match="k must be an integer"):
        plain.mul_scalar(plain.encrypt(np.ones(2)), k)  # type: ignore[arg-type]


def test_mul_scalar_accepts_numpy_ints(plain: PlainScheme) -> None:
    c = plain.mul_scalar(plain.encrypt(np.ones(2)), np.int64(-3))  # type: ignore[arg-type]
    got = plain.decrypt(c)
    np.testing.assert_array_equal(got, [-3.0, -3.0])


def test_zero_scalar_gives_zero_and_stays_usable(plain: PlainScheme) -> None:
    c = plain.mul_scalar(plain.encrypt(np.array([5.0, -7.0])), 0)
    assert (c.scale, c.offset) == (0, 0)
    c = plain.add(c, plain.encrypt(np.array([1.0, 2.0])))
    np.testing.assert_array_equal(plain.decrypt(c), [1.0, 2.0])


def test_too_many_adds(plain: PlainScheme) -> None:
    c = plain.encrypt(np.ones(3))
    for _ in range(CODEC.max_terms - 1):
        c = plain.add_plain(c, np.ones(3))
    assert c.terms == CODEC.max_terms
    np.testing.assert_array_equal(plain.decrypt(c), np.full(3, 16.0))
    with pytest.raises(BudgetExceededError, match="add_plain would sum 17 fresh encodings"):
        plain.add_plain(c, np.ones(3))
    with pytest.raises(BudgetExceededError, match="add would sum 17 fresh encodings"):
        plain.add(c, plain.encrypt(np.ones(3)))


def test_too_large_scalar(plain: PlainScheme) -> None:
    c = plain.encrypt(np.ones(3))
    ok = plain.mul_scalar(c, 2**16 - 1)
    np.testing.assert_array_equal(plain.decrypt(ok), np.full(3, 65535.0))
    with pytest.raises(BudgetExceededError, match="scalar product to 65536"):
        plain.mul_scalar(c, -(2**16))
    c = plain.mul_scalar(c, 256)
    with pytest.raises(BudgetExceededError, match="scalar product to 65536"):
        plain.mul_scalar(c, 256)


def test_encrypt_out_of_range(plain: PlainScheme) -> None:
    with pytest.raises(BudgetExceededError, match=r"x\[1\] = 300.0 is out of the codec range"):
        plain.encrypt(np.array([0.0, 300.0]))
    with pytest.raises(BudgetExceededError, match=r"x\[0\] = -256.0 is out of the codec range"):
        plain.add_plain(plain.encrypt(np.ones(1)), np.array([-256.0]))


def test_size_mismatch(plain: PlainScheme) -> None:
    with pytest.raises(ValueError, match="cannot add vectors of sizes 3 and 4"):
        plain.add(plain.encrypt(np.ones(3)), plain.encrypt(np.ones(4)))
    with pytest.raises(ValueError, match="x must be a vector of size 3"):
        plain.add_plain(plain.encrypt(np.ones(3)), np.ones(4))


def test_worst_case_budget_fills_slots_without_wrapping(plain: PlainScheme) -> None:
    """max_terms fresh terms at the edge value, times the largest scalar: no carry."""
    layout_slots = plain.layout.slots
    x = np.where(np.arange(layout_slots + 2) % 2 == 0, EDGE, -EDGE)
    k = 2**16 - 1
    terms = [plain.mul_scalar(plain.encrypt(x), -k) for _ in range(CODEC.max_terms)]
    got = plain.decrypt(plain.sum(terms))
    ints = [int(v) * -k * CODEC.max_terms for v in CODEC.encode(x)]
    np.testing.assert_array_equal(got, np.array([v / 2**24 for v in ints]))


def ppdnmf_exchange(
    own: Any,
    neighbour_pubs: list[Any],
    w_i: np.ndarray,
    w_js: list[np.ndarray],
    a_ij: list[int],
    a_ji: list[int],
) -> np.ndarray:
    """The ppdnmf round: Enc_i(-W_i) -> j: +W_j, *a_ji, rerandomize -> i: *a_ij, sum."""
    c = own.encrypt(-w_i)
    replies = []
    for pub, w_j, k_ji in zip(neighbour_pubs, w_js, a_ji, strict=True):
        r = pub.from_bytes(own.to_bytes(c))
        r = pub.rerandomize(pub.mul_scalar(pub.add_plain(r, w_j), k_ji, k_max=255))
        replies.append(own.from_bytes(pub.to_bytes(r)))
    weighted = [own.mul_scalar(r, k, k_max=255) for r, k in zip(replies, a_ij, strict=True)]
    return own.decrypt(own.sum(weighted))


def test_twin_gives_identical_ppdnmf_round(paillier: PaillierScheme, plain: PlainScheme) -> None:
    rng = np.random.default_rng(7)
    deg = 8
    w_i = rng.uniform(-EDGE, EDGE, 23)
    w_js = [rng.uniform(-EDGE, EDGE, 23) for _ in range(deg)]
    w_js[0][:2] = [EDGE, -EDGE]
    a_ij = rng.integers(1, 256, deg).tolist()
    a_ji = rng.integers(1, 256, deg).tolist()
    a_ji[0] = a_ij[0] = 255
    results = []
    for s in (paillier, plain):
        pubs = [s.public() for _ in range(deg)]
        results.append(ppdnmf_exchange(s, pubs, w_i, w_js, a_ij, a_ji))
    assert np.array_equal(results[0], results[1])
    ints = sum(
        (CODEC.encode(w_j).astype(object) - CODEC.encode(w_i)) * kji * kij
        for w_j, kji, kij in zip(w_js, a_ji, a_ij, strict=True)
    )
    np.testing.assert_array_equal(results[0], np.ldexp(ints.astype(np.float64), -24))
    d = sum(k1 * k2 * (w_j - w_i) for w_j, k1, k2 in zip(w_js, a_ji, a_ij, strict=True))
    np.testing.assert_allclose(results[0], d, rtol=0, atol=deg * 255 * 255 * 2.0**-24)


def test_ciphertexts_and_schemes_refuse_pickle(paillier: PaillierScheme) -> None:
    c = paillier.encrypt(np.ones(2))
    assert isinstance(c, PackedCiphertext)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(c)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(paillier)


def test_ciphertext_repr_hides_integers(plain: PlainScheme) -> None:
    c = plain.encrypt(np.array([3.25]))
    assert "ints" not in repr(c) and str(c.ints[0]) not in repr(c)


def test_describe_has_no_key_material(paillier: PaillierScheme) -> None:
    info = paillier.describe()
    assert info["scheme"] == "paillier" and info["slots_per_integer"] == 18
    assert info["key_bits"] == TEST_KEY_BITS
    assert str(paillier._key.n) not in repr(info)
