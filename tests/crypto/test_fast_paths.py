"""Every fast path against the slow path: same decryptions, valid randomness."""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme, generate_scheme
from cipherfact.crypto.djn import FixedBaseTable
from cipherfact.crypto.keys import PaillierKeyMaterial
from cipherfact.crypto.paillier_math import SHORT_SCALAR, PaillierMath

from .conftest import CODEC

SLOW = PaillierOptions(packing=False, use_gmpy2=False, crt=False, djn=False)
FAST_VARIANTS = {
    "default": PaillierOptions(),
    "no-packing": PaillierOptions(packing=False),
    "python-ints": PaillierOptions(use_gmpy2=False),
    "no-crt": PaillierOptions(crt=False),
    "no-djn": PaillierOptions(djn=False),
    "djn-public": PaillierOptions(djn_public=True),
    "short-djn-window": PaillierOptions(djn_exponent_bits=256, djn_window_bits=3),
    "processes": PaillierOptions(processes=2, parallel_min=2),
}
X = np.random.default_rng(3).uniform(-200, 200, 21)  # 18 slots at 1024 bits: 2 integers
Y = np.random.default_rng(4).uniform(-200, 200, 21)


def sequence(owner: PaillierScheme, pub: PaillierScheme) -> np.ndarray:
    """ppdnmf-like: owner encrypts, public holder adds, scales, rerandomizes."""
    c = pub.from_bytes(owner.to_bytes(owner.encrypt(-X)))
    c = pub.rerandomize(pub.mul_scalar(pub.add_plain(c, Y), -200, k_max=255))
    c = owner.mul_scalar(owner.from_bytes(pub.to_bytes(c)), 77, k_max=255)
    return owner.decrypt(owner.add(c, owner.rerandomize(owner.encrypt(X))))


@pytest.fixture(scope="module")
def reference(key_a: PaillierKeyMaterial) -> np.ndarray:
    slow = PaillierScheme(key_a, codec=CODEC, options=SLOW)
    return sequence(slow, slow.public())


@pytest.mark.parametrize("variant", sorted(FAST_VARIANTS))
def test_fast_path_matches_slow_path(
    key_a: PaillierKeyMaterial, reference: np.ndarray, variant: str
) -> None:
    options = FAST_VARIANTS[variant]
    owner = PaillierScheme(key_a, codec=CODEC, options=options)
    try:
        got = sequence(owner, owner.public())
        assert np.array_equal(got, reference)
        # ciphertexts made on the fast path are ordinary Paillier ciphertexts
        slow_same_layout = PaillierScheme(
            key_a,
            codec=CODEC,
            options=PaillierOptions(packing=options.packing, use_gmpy2=False, crt=False, djn=False),
        )
        c = owner.rerandomize(owner.encrypt(X))
        np.testing.assert_array_equal(
            slow_same_layout.decrypt(slow_same_layout.from_bytes(owner.to_bytes(c))),
            owner.decrypt(c),
        )
    finally:
        owner.close()


def is_nth_residue(math: PaillierMath, r: object) -> bool:
    """R is an n-th residue mod n**2 iff R**lambda == 1 (needs the secret key)."""
    return bool(gmpy2.powmod(int(r), int(math.lam), int(math.n2)) == 1)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "options",
    [
        PaillierOptions(),
        PaillierOptions(crt=False),
        PaillierOptions(djn=False),
        PaillierOptions(djn=False, crt=False),
    ],
)
def test_randomness_is_fresh_nth_residues(
    key_a: PaillierKeyMaterial, options: PaillierOptions
) -> None:
    math = PaillierMath(key_a.n, key_a.h_s, key_a.p, key_a.q, options)
    factors = [int(r) for r in math.random_factors(4)]
    assert len(set(factors)) == 4 and all(1 < r < key_a.n**2 for r in factors)
    assert all(is_nth_residue(math, r) for r in factors)


def test_crt_randomness_equals_direct_power(key_a: PaillierKeyMaterial) -> None:
    math = PaillierMath(key_a.n, key_a.h_s, key_a.p, key_a.q, PaillierOptions(djn=False))
    r = gmpy2.mpz(secrets.randbelow(key_a.n - 2) + 2)
    via_crt = math._crt_n2(
        math.powmod(r % math.p2, math.en_p, math.p2), math.powmod(r % math.q2, math.en_q, math.q2)
    )
    assert via_crt == gmpy2.powmod(r, key_a.n, key_a.n**2)


def test_djn_factor_is_h_s_power(key_a: PaillierKeyMaterial) -> None:
    n2 = key_a.n**2
    math = PaillierMath(key_a.n, key_a.h_s, key_a.p, key_a.q, PaillierOptions())
    a = secrets.randbits(448)
    t_p, t_q = math._djn_tables()
    assert math._crt_n2(t_p.pow(a), t_q.pow(a)) == pow(key_a.h_s, a, n2)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_gmpy2", [True, False])
def test_scalar_multiply_is_the_power_at_every_length(
    key_a: PaillierKeyMaterial, use_gmpy2: bool
) -> None:
    """Short scalars take square-and-multiply, longer and negative ones ``powmod``:
    both are c**k mod n**2, on both sides of the switch."""
    math = PaillierMath(key_a.n, key_a.h_s, None, None, PaillierOptions(use_gmpy2=use_gmpy2))
    n2 = key_a.n**2
    c = math.mpz(secrets.randbelow(n2 - 2) + 2)
    edge = SHORT_SCALAR
    for k in [1, 2, 3, 37, 63, edge - 1, edge, edge + 1, 2**40 + 5, secrets.randbelow(edge)]:
        assert math.mul(c, k) == pow(int(c), k, n2), k
    assert math.mul(c, -5) == pow(int(c), -5, n2)
    assert math.mul(c, 0) == 1


@pytest.mark.parametrize("window", [1, 4, 6, 8])
def test_fixed_base_table(window: int) -> None:
    m = 2**127 - 1
    table = FixedBaseTable(3, m, 100, window)
    for e in [0, 1, 2**100 - 1, secrets.randbits(100), 2**window]:
        assert table.pow(e) == pow(3, e, m)
    with pytest.raises(ValueError, match=r"exponent must be in \[0, 2\*\*100\)"):
        table.pow(2**100)
    with pytest.raises(ValueError, match="window_bits must be in"):
        FixedBaseTable(3, m, 100, 13)


def test_pool_is_consumed_never_reused(key_a: PaillierKeyMaterial) -> None:
    s = PaillierScheme(key_a, codec=CODEC)
    n, n2 = key_a.n, key_a.n**2
    s.fill_pool(3)
    pooled = [int(r) for r in s._pool]
    x = np.ones(s.layout.slots + 1)  # two packed integers
    c = s.encrypt(x)
    assert s.pool_size == 1
    plain = [int(m) for m in s._decrypt_ints(c.ints)]
    used = [int(ct) * pow(1 + m * n, -1, n2) % n2 for ct, m in zip(c.ints, plain, strict=True)]
    assert used == pooled[:2]
    r = s.rerandomize(c)  # one from the pool, one fresh
    assert s.pool_size == 0
    factors = [int(b) * pow(int(a), -1, n2) % n2 for a, b in zip(c.ints, r.ints, strict=True)]
    assert factors[0] == pooled[2] and factors[1] not in pooled
    np.testing.assert_array_equal(s.decrypt(r), x)
    with pytest.raises(ValueError, match="count must be a non-negative int"):
        s.fill_pool(-1)


def test_process_pool_fills_pool_and_decrypts(key_a: PaillierKeyMaterial) -> None:
    s = PaillierScheme(key_a, codec=CODEC, options=PaillierOptions(processes=2, parallel_min=2))
    try:
        s.fill_pool(4)
        math = PaillierMath(key_a.n, key_a.h_s, key_a.p, key_a.q, PaillierOptions())
        assert s.pool_size == 4 and len({int(r) for r in s._pool}) == 4
        assert all(is_nth_residue(math, r) for r in s._pool)
        x = np.linspace(-100, 100, 5 * s.layout.slots)
        np.testing.assert_array_equal(s.decrypt(s.encrypt(x)), CODEC.decode(CODEC.encode(x)))
    finally:
        s.close()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"djn_exponent_bits": 128}, ValueError, "djn_exponent_bits must be in \\[256, 4096\\]"),
        ({"djn_window_bits": 0}, ValueError, "djn_window_bits must be in"),
        ({"processes": 0}, ValueError, "processes must be in"),
        ({"parallel_min": 0}, ValueError, "parallel_min must be >= 1"),
        ({"crt": 1}, TypeError, "crt must be a bool"),
        ({"processes": 2.0}, TypeError, "processes must be an int"),
    ],
)
def test_options_validation(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        PaillierOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_default_2048_bit_key_end_to_end() -> None:
    s = generate_scheme("paillier", codec=CODEC)
    assert isinstance(s, PaillierScheme) and s.key_bits == 2048 and s.layout.slots == 37
    pub = PaillierScheme.from_public_bytes(s.public_bytes(), codec=CODEC)
    got = sequence(s, pub)
    twin = generate_scheme("plain", codec=CODEC)
    assert isinstance(twin, type(generate_scheme("plain", codec=CODEC)))
    assert np.array_equal(got, sequence(twin, twin.public()))  # type: ignore[arg-type]
