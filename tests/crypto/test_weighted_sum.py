"""``weighted_sum`` (one Straus squaring chain) against the sum of ``mul_scalar``s it
replaces: the same ciphertext integers, metadata and plaintext, for both packed schemes."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme, generate_scheme
from cipherfact.crypto.errors import BudgetExceededError, KeyMismatchError
from cipherfact.crypto.keys import PaillierKeyMaterial
from cipherfact.crypto.packed import PackedScheme

from .conftest import CODEC


@pytest.fixture(scope="module", params=["paillier", "paillier-ints", "plain"])
def scheme(request: pytest.FixtureRequest, key_a: PaillierKeyMaterial) -> PackedScheme:
    if request.param == "plain":
        return generate_scheme("plain", codec=CODEC, key_bits=1024)  # type: ignore[return-value]
    options = PaillierOptions(use_gmpy2=request.param == "paillier")
    return PaillierScheme(key_a, codec=CODEC, options=options)


@pytest.mark.parametrize(
    ("ks", "k_max"),
    [
        ([37, 61, 44], 63),  # ppdnmf: 6-bit private weights, public bound
        ([1], None),
        ([5, -3, 0, 12, 7], None),  # negative and zero scalars, bound |k| each
        ([-63, 63], 63),
        ([0, 0], 4),
    ],
)
@pytest.mark.parametrize("values", [1, 40, 97])  # odd sizes: partly filled integers
def test_weighted_sum_is_the_sum_of_mul_scalars(
    scheme: PackedScheme, ks: list[int], k_max: int | None, values: int
) -> None:
    rng = np.random.default_rng(values + len(ks))
    cs = [scheme.encrypt(rng.uniform(-4, 4, values)) for _ in ks]
    cs[0] = scheme.add(cs[0], scheme.encrypt(rng.uniform(-4, 4, values)))  # 2 terms
    fast = scheme.weighted_sum(cs, ks, k_max=k_max)
    slow = scheme.sum([scheme.mul_scalar(c, k, k_max=k_max) for c, k in zip(cs, ks, strict=True)])
    assert [int(v) for v in fast.ints] == [int(v) for v in slow.ints]
    assert (fast.terms, fast.scale, fast.offset, fast.size) == (
        slow.terms,
        slow.scale,
        slow.offset,
        slow.size,
    )
    assert fast.nonce == slow.nonce
    assert scheme.decrypt(fast).tobytes() == scheme.decrypt(slow).tobytes()
    expected = sum(k * scheme.decrypt(c) for c, k in zip(cs, ks, strict=True))
    assert np.array_equal(scheme.decrypt(fast), expected)


def test_weighted_sum_refuses_what_the_sum_would(scheme: PackedScheme) -> None:
    a, b = scheme.encrypt(np.ones(3)), scheme.encrypt(np.ones(4))
    with pytest.raises(ValueError, match="needs at least one ciphertext"):
        scheme.weighted_sum([], [])
    with pytest.raises(ValueError, match="got 1 ciphertexts and 2 scalars"):
        scheme.weighted_sum([a], [1, 2])
    with pytest.raises(ValueError, match=r"sizes \[3, 4\]"):
        scheme.weighted_sum([a, b], [1, 2])
    with pytest.raises(ValueError, match=r"k_max must be >= \|k\|, got k_max=8 for \|k\|=9"):
        scheme.weighted_sum([a], [9], k_max=8)
    with pytest.raises(TypeError, match=r"ks\[0\] must be an integer"):
        scheme.weighted_sum([a], [1.5])  # type: ignore[list-item]
    with pytest.raises(BudgetExceededError, match="weighted_sum"):
        scheme.weighted_sum([a] * 17, [1] * 17)  # max_terms = 16
    other = generate_scheme("plain", codec=CODEC, key_bits=1024)
    with pytest.raises(KeyMismatchError):
        scheme.weighted_sum([a, other.encrypt(np.ones(3))], [1, 1])


@pytest.mark.parametrize(
    ("k", "k_max"), [(37, 63), (63, 63), (0, 63), (5, None), (-7, 63), (-7, None)]
)
@pytest.mark.parametrize("with_after", [True, False])
@pytest.mark.parametrize("values", [1, 97])
def test_scale_shift_is_add_plain_mul_scalar_add_plain(
    scheme: PackedScheme, k: int, k_max: int | None, with_after: bool, values: int
) -> None:
    """ppdnmf's pairwise reply k * (Enc(-W_i) + W_j) + noise, fused: same ciphertext."""
    rng = np.random.default_rng(values + abs(k))
    offer = scheme.encrypt(rng.uniform(-4, 4, values))
    before = rng.uniform(-4, 4, values)
    after = (
        np.ldexp(rng.integers(-(2**14), 2**14, values).astype(float), -16) if with_after else None
    )
    fast = scheme.scale_shift(offer, k, before, after, k_max=k_max)
    slow = scheme.mul_scalar(scheme.add_plain(offer, before), k, k_max=k_max)
    if after is not None:
        slow = scheme.add_plain(slow, after)
    assert [int(v) for v in fast.ints] == [int(v) for v in slow.ints]
    assert (fast.terms, fast.scale, fast.offset, fast.nonce) == (
        slow.terms,
        slow.scale,
        slow.offset,
        slow.nonce,
    )
    assert scheme.decrypt(fast).tobytes() == scheme.decrypt(slow).tobytes()


def test_scale_shift_refuses_what_the_calls_would(scheme: PackedScheme) -> None:
    a = scheme.encrypt(np.ones(3))
    with pytest.raises(ValueError, match=r"before must be a vector of size 3, got shape \(4,\)"):
        scheme.scale_shift(a, 2, np.ones(4))
    with pytest.raises(ValueError, match=r"after must be a vector of size 3, got shape \(3, 1\)"):
        scheme.scale_shift(a, 2, np.ones(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"k_max must be >= \|k\|, got k_max=1 for \|k\|=2"):
        scheme.scale_shift(a, 2, np.ones(3), k_max=1)
    with pytest.raises(BudgetExceededError, match="mul_scalar by a scalar up to"):
        scheme.scale_shift(a, 2, np.ones(3), k_max=2**16)  # scalar_bits = 16
