"""The multi-buffer (AVX-512 IFMA) fast path against gmpy2: identical results, clean fallback.

Tests that run the library skip when it is absent (no ``ipp-crypto`` wheel or
a CPU without AVX-512 IFMA); the fallback and error tests run everywhere.
"""

from __future__ import annotations

import random

import gmpy2
import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme, ifma
from cipherfact.crypto.keys import PaillierKeyMaterial, generate_key_material
from cipherfact.crypto.paillier_math import PaillierMath, fast_path_lanes
from cipherfact.crypto.parallel import SharedDecryptPool

from .conftest import CODEC

needs_ifma = pytest.mark.skipif(
    not ifma.available(), reason=f"multi-buffer fast path unavailable: {ifma.unavailable_reason()}"
)
IFMA = PaillierOptions(fast_path="ifma")
GMPY2 = PaillierOptions(fast_path="gmpy2")
KEY_BITS = (1024, 2048, 3072)


@pytest.fixture(scope="module", params=KEY_BITS, ids=[f"{b}bit" for b in KEY_BITS])
def key(request: pytest.FixtureRequest) -> PaillierKeyMaterial:
    return generate_key_material(request.param, insecure_test_keys=True)


def _math(key: PaillierKeyMaterial, options: PaillierOptions) -> PaillierMath:
    return PaillierMath(key.n, key.h_s, key.p, key.q, options)


def _ciphertexts(key: PaillierKeyMaterial, count: int, seed: int) -> list[int]:
    """Valid encryptions of random and edge plaintexts, then edge integers of Z_{n^2}."""
    rng = random.Random(seed)
    n, n2 = key.n, key.n * key.n
    ref = _math(key, GMPY2)
    plains = [0, 1, n - 1, n // 2, *(rng.randrange(n) for _ in range(count))]
    cts = [int(c) for c in ref.encrypt(plains, ref.random_factors(len(plains)))]
    assert key.p is not None and key.q is not None
    edges = [1, 2, n2 - 1, n2 - 2, n2 - rng.randrange(1, 1 << 64), n + 1, key.p, key.q * 3]
    edges += [n2 - 1 - rng.randrange(n) for _ in range(3)]  # near n^2
    pool = cts + edges
    rng.shuffle(pool)
    return pool[:count]


# ---- powmod_batch -------------------------------------------------------------
@needs_ifma
@pytest.mark.parametrize("count", range(1, 21))
def test_powmod_batch_matches_pow(count: int) -> None:
    rng = random.Random(count)
    for bits in (1024, 2047, 2048, 3072, 4096):
        mods = [rng.getrandbits(bits) | (1 << (bits - 1)) | 1 for _ in range(count)]
        if count > 2:  # a few shorter moduli in the same size slot share calls
            mods[1] = rng.getrandbits(bits - 9) | (1 << (bits - 10)) | 1
        bases = [rng.choice([0, 1, m - 1, m, m + 1, rng.getrandbits(bits + 40)]) for m in mods]
        exps = [
            rng.choice([0, 1, 2, (1 << m.bit_length()) - 1, rng.getrandbits(bits // 2)])
            for m in mods
        ]
        got = ifma.powmod_batch(bases, exps, mods)
        assert got == [pow(b, e, m) for b, e, m in zip(bases, exps, mods, strict=True)]
        assert all(isinstance(x, type(gmpy2.mpz(0))) for x in got)


@needs_ifma
def test_powmod_batch_falls_back_per_lane() -> None:
    """Lanes the library cannot take are computed by gmpy2, in the same call."""
    rng = random.Random(5)
    m = rng.getrandbits(2048) | (1 << 2047) | 1
    cases = [
        (3, 5, m),  # fine
        (3, 5, m - 1),  # even modulus
        (3, 5, (1 << 600) + 1),  # unsupported size
        (3, 1 << 3000, m),  # exponent longer than the modulus
        (3, -1, m),  # negative exponent (an inverse)
        (3, 7, 1),  # modulus 1
        (rng.getrandbits(2100), rng.getrandbits(1024), m),
    ]
    bases, exps, mods = zip(*cases, strict=True)
    assert ifma.powmod_batch(bases, exps, mods) == [pow(b, e, mod) for b, e, mod in cases]
    # one exponent and one modulus for every base; all-zero exponents
    assert ifma.powmod_batch([2, 3, 4], 0, m) == [1, 1, 1]
    assert ifma.powmod_batch([2, 3, 4], 65537, m) == [pow(b, 65537, m) for b in (2, 3, 4)]
    # min_lanes: a lone lane goes to gmpy2 (same answer)
    assert ifma.powmod_batch([5], 11, m, min_lanes=3) == [pow(5, 11, m)]
    with pytest.raises(ValueError, match="exps has 1 entries for 2 bases"):
        ifma.powmod_batch([2, 3], [1], m)


def test_supported_sizes() -> None:
    assert ifma.supported_modulus_bits(2048) and ifma.supported_modulus_bits(2047)
    assert ifma.supported_modulus_bits(1024) and ifma.supported_modulus_bits(4096)
    assert not ifma.supported_modulus_bits(512)
    assert not ifma.supported_modulus_bits(6144)


# ---- Paillier decryption --------------------------------------------------------
@needs_ifma
@pytest.mark.parametrize("crt", [True, False], ids=["crt", "no-crt"])
def test_decrypt_matches_gmpy2(key: PaillierKeyMaterial, crt: bool) -> None:
    fast = _math(key, PaillierOptions(fast_path="ifma", crt=crt))
    slow = _math(key, PaillierOptions(fast_path="gmpy2", crt=crt))
    assert fast.ifma_lanes == 1 and slow.ifma_lanes is None
    cts = _ciphertexts(key, 40, seed=key.n.bit_length() + crt)
    # batch sizes that are and are not multiples of 8 (n**2 of a 3072-bit key is
    # beyond the library's sizes: its no-CRT lanes all fall back, a few suffice)
    counts = range(1, 21) if crt or key.n.bit_length() < 3072 else (1, 9)
    for count in counts:
        batch = [gmpy2.mpz(c) for c in cts[count : 2 * count]]
        assert fast.decrypt(batch) == slow.decrypt(batch)


@needs_ifma
def test_decrypt_plaintexts_and_python_ints(key: PaillierKeyMaterial) -> None:
    """Plaintexts come back exactly; ``use_gmpy2=False`` still yields Python ints."""
    n = key.n
    rng = random.Random(1)
    plains = [0, 1, 2, n - 1, n - 2, *(rng.randrange(n) for _ in range(9))]
    for use_gmpy2 in (True, False):
        m = _math(key, PaillierOptions(fast_path="ifma", use_gmpy2=use_gmpy2))
        cts = m.encrypt(plains, m.random_factors(len(plains)))
        got = m.decrypt(cts)
        assert got == plains and all(type(x) is int for x in got)


@needs_ifma
@pytest.mark.parametrize("crt", [True, False], ids=["crt", "public"])
def test_bulk_randomness_is_an_encryption_of_zero(key: PaillierKeyMaterial, crt: bool) -> None:
    """Full-length r**n factors made in lanes are n-th residues (they decrypt to 0)."""
    owner = _math(key, GMPY2)
    maker = PaillierMath(
        key.n,
        key.h_s,
        key.p if crt else None,
        key.q if crt else None,
        PaillierOptions(fast_path="ifma", djn=False),
    )
    factors = maker.random_factors(11)
    assert len(set(factors)) == 11
    assert owner.decrypt(factors) == [0] * 11


@needs_ifma
def test_unequal_primes_mix_library_and_fallback_lanes() -> None:
    """p**2 of 1000 bits fits the library, q**2 of 1048 bits does not: one batch, both."""
    rng = random.Random(9)
    p = int(gmpy2.next_prime(rng.getrandbits(500) | (1 << 499)))
    q = int(gmpy2.next_prime(rng.getrandbits(524) | (1 << 523)))
    n = p * q
    key = PaillierKeyMaterial(n=n, h_s=pow(7, n, n * n), p=p, q=q, test_key=True)
    assert ifma.supported_modulus_bits((p * p).bit_length())
    assert not ifma.supported_modulus_bits((q * q).bit_length())
    cts = _ciphertexts(key, 13, seed=2)
    assert _math(key, IFMA).decrypt(cts) == _math(key, GMPY2).decrypt(cts)


@needs_ifma
def test_scheme_round_trip_and_auto(key: PaillierKeyMaterial) -> None:
    x = np.random.default_rng(0).uniform(-100, 100, 300)
    fast = PaillierScheme(key, codec=CODEC, options=IFMA)
    slow = PaillierScheme(key, codec=CODEC, options=GMPY2)
    c = fast.encrypt(x)
    assert np.array_equal(fast.decrypt(c), slow.decrypt(c))
    public = fast.public()  # full r**n rerandomization in lanes
    c2 = public.rerandomize(public.add(c, public.encrypt(x)))
    assert np.array_equal(fast.decrypt(c2), slow.decrypt(c2))
    auto = PaillierMath(key.n, key.h_s, key.p, key.q, PaillierOptions())
    assert auto.ifma_lanes == ifma.AUTO_MIN_LANES
    assert fast_path_lanes(PaillierOptions(use_gmpy2=False)) is None


@needs_ifma
def test_shared_pool_batches_through_the_library() -> None:
    key = generate_key_material(1024, insecure_test_keys=True)
    m = _math(key, IFMA)
    cts = _ciphertexts(key, 11, seed=4)
    with SharedDecryptPool(2) as pool:
        got = pool.decrypt_crt(m.p, m.q, m.hp, m.hq, m.p_inv_q, cts, ifma_lanes=1)
    assert got == _math(key, GMPY2).decrypt([gmpy2.mpz(c) for c in cts])


# ---- without the library ----------------------------------------------------------
@pytest.fixture
def no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifma, "_load", lambda: "libcrypto_mb was not found (test)")


@pytest.mark.usefixtures("no_library")
def test_ifma_without_library_is_a_clear_error() -> None:
    key = generate_key_material(1024, insecure_test_keys=True)
    with pytest.raises(ifma.IfmaUnavailableError) as info:
        PaillierScheme(key, codec=CODEC, options=IFMA)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install cipherfact[fast]" in message and "fast_path='ifma'" in message
    with pytest.raises(ifma.IfmaUnavailableError, match=r"cipherfact\[fast\]"):
        ifma.powmod_batch([2], 3, 5)
    assert not ifma.available()


@pytest.mark.skipif(ifma.available(), reason="the library is installed here")
def test_ifma_really_absent_is_a_clear_error() -> None:
    with pytest.raises(ifma.IfmaUnavailableError, match=r"pip install cipherfact\[fast\]"):
        fast_path_lanes(IFMA)


@pytest.mark.usefixtures("no_library")
def test_auto_without_library_uses_gmpy2() -> None:
    key = generate_key_material(1024, insecure_test_keys=True)
    auto = _math(key, PaillierOptions())
    assert auto.ifma_lanes is None
    cts = _ciphertexts(key, 9, seed=3)
    assert auto.decrypt(cts) == _math(key, GMPY2).decrypt(cts)


def test_fast_path_option_is_validated() -> None:
    assert PaillierOptions().fast_path == "auto"
    with pytest.raises(ValueError, match="fast_path must be one of"):
        PaillierOptions(fast_path="avx")
