"""CKKS scheme: homomorphic identities, depth refusal, keys, parameters, bytes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherfact.crypto.ckks import (
    CkksCiphertext,
    CkksScheme,
    MissingEvaluationKeyError,
    load_public_ckks,
    load_secret_ckks,
    make_ckks_scheme,
)
from cipherfact.crypto.ckks_params import (
    MAX_COEFF_MODULUS_BITS,
    NAMED_PARAMS,
    CkksParams,
    get_ckks_params,
    plan_ckks_params,
)
from cipherfact.crypto.errors import (
    BudgetExceededError,
    DecodeError,
    InsecureParameterError,
    KeyMismatchError,
    MissingSecretKeyError,
)

TOL = 1e-5  # absolute, for values of magnitude ~1 at scale 2^40
# session fixtures are read-only here, so sharing them across examples is safe
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="session")
def scheme() -> CkksScheme:
    return make_ckks_scheme("n8192-depth2")


@pytest.fixture(scope="session")
def pub(scheme: CkksScheme) -> CkksScheme:
    return load_public_ckks(scheme.public_bytes())


@pytest.fixture(scope="session")
def other() -> CkksScheme:
    return make_ckks_scheme("n8192-depth2")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _vec(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, n)


# -- parameters ----------------------------------------------------------------


def test_named_sets_respect_security_bounds() -> None:
    for params in NAMED_PARAMS.values():
        assert params.total_bits <= MAX_COEFF_MODULUS_BITS[params.poly_modulus_degree]
    assert get_ckks_params("n8192-depth2") == CkksParams(8192, (60, 40, 40, 60), 40)
    assert NAMED_PARAMS["n8192-depth2"].max_depth == 2
    assert NAMED_PARAMS["n8192-depth2"].slot_count == 4096


def test_params_too_large_for_security_bound() -> None:
    with pytest.raises(InsecureParameterError, match="total 240 bits, above the 128-bit"):
        CkksParams(8192, (60, 40, 40, 40, 60), 40)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((3000, (60, 40, 60), 40), ValueError, "poly_modulus_degree must be one of"),
        ((8192, (60,), 40), ValueError, "needs at least 2 primes"),
        ((8192, (60, 70, 60), 40), ValueError, r"entries must be in \[17, 60\], got 70"),
        ((8192, (60, 40, 60), 60), ValueError, "global_scale_bits must be in"),
        ((8192.0, (60, 40, 60), 40), TypeError, "poly_modulus_degree must be an int"),
    ],
)
def test_params_validation(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        CkksParams(*args)


def test_unknown_param_name() -> None:
    with pytest.raises(ValueError, match="unknown CKKS parameter set 'n9-depth9'"):
        get_ckks_params("n9-depth9")


@pytest.mark.parametrize(
    ("depth", "max_abs", "mask_bits", "expected"),
    [
        (1, 1.0, 0, "n4096-depth1"),
        (2, 1.0, 0, "n8192-depth2"),
        (2, 1.0, 18, "n8192-depth2"),
        (2, 1.0, 20, "n8192-depth3"),  # 2^20 is past n8192-depth2's worst-case 2^19
        (3, 100.0, 10, "n8192-depth3"),
        (4, 1.0, 0, "n16384-depth4"),
        (5, 1.0, 0, "n16384-depth7"),
    ],
)
def test_planner_picks_smallest_fitting_set(
    depth: int, max_abs: float, mask_bits: int, expected: str
) -> None:
    assert plan_ckks_params(depth, max_abs, mask_bits) == NAMED_PARAMS[expected]


@pytest.mark.parametrize(
    ("depth", "max_abs", "mask_bits", "error", "match"),
    [
        (17, 1.0, 0, InsecureParameterError, "supports depth 17"),
        (2, 1.0, 40, InsecureParameterError, "holds values up to 1 \\* 2\\*\\*40"),
        (-1, 1.0, 0, ValueError, "depth must be >= 0, got -1"),
        (2, 0.0, 0, ValueError, "max_abs_value must be finite and > 0, got 0.0"),
        (2, float("nan"), 0, ValueError, "max_abs_value must be finite"),
        (2, 1.0, -3, ValueError, "mask_bits must be >= 0, got -3"),
        (2.0, 1.0, 0, TypeError, "depth must be an int"),
    ],
)
def test_planner_refuses(
    depth: int, max_abs: float, mask_bits: int, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        plan_ckks_params(depth, max_abs, mask_bits)


# -- homomorphic identities --------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 4096, 9000])  # 9000 spans three ciphertexts
def test_encrypt_decrypt_roundtrip(scheme: CkksScheme, rng: np.random.Generator, n: int) -> None:
    x = _vec(rng, n)
    c = scheme.encrypt(x)
    assert isinstance(c, CkksCiphertext)
    assert c.size == n and c.depth == 0 and len(c.chunks) == -(-n // 4096)
    out = scheme.decrypt(c)
    assert out.shape == (n,) and out.dtype == np.float64
    np.testing.assert_allclose(out, x, atol=TOL)


def test_add_add_plain_mul_scalar(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator
) -> None:
    x, y, z = _vec(rng, 5000), _vec(rng, 5000), _vec(rng, 5000)
    cx, cy = pub.encrypt(x), pub.encrypt(y)
    np.testing.assert_allclose(scheme.decrypt(pub.add(cx, cy)), x + y, atol=TOL)
    np.testing.assert_allclose(scheme.decrypt(pub.add_plain(cx, z)), x + z, atol=TOL)
    np.testing.assert_allclose(scheme.decrypt(pub.sum([cx, cy, cx])), 2 * x + y, atol=TOL)
    for k in (-37, 1, 2, 1000):
        ck = pub.mul_scalar(cx, k)
        assert ck.depth == 0  # double-and-add spends no level
        np.testing.assert_allclose(scheme.decrypt(ck), k * x, atol=TOL * abs(k))
    np.testing.assert_allclose(scheme.decrypt(pub.mul_scalar(cx, 0)), 0 * x, atol=TOL)


def test_mul_and_mul_plain_track_depth(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator
) -> None:
    x, y, w = _vec(rng, 100), _vec(rng, 100), _vec(rng, 100)
    cx, cy = pub.encrypt(x), pub.encrypt(y)
    p1 = pub.mul(cx, cy)
    assert p1.depth == 1
    np.testing.assert_allclose(scheme.decrypt(p1), x * y, atol=TOL)
    p2 = pub.mul_plain(p1, w)
    assert p2.depth == 2
    np.testing.assert_allclose(scheme.decrypt(p2), x * y * w, atol=TOL)
    np.testing.assert_allclose(scheme.decrypt(pub.mul_plain(cx, 2.5)), 2.5 * x, atol=TOL)
    # mixed depths add; inputs keep their level (TenSEAL would mod-switch them in place)
    np.testing.assert_allclose(scheme.decrypt(pub.add(cx, p2)), x + x * y * w, atol=TOL)
    assert cx.depth == 0 and scheme.decrypt(pub.mul(cx, cy)).shape == (100,)


@pytest.mark.parametrize("op", ["mul", "mul_plain"])
def test_refuses_multiplication_past_the_chain(
    pub: CkksScheme, rng: np.random.Generator, op: str
) -> None:
    c = pub.encrypt(_vec(rng, 10))
    deep = pub.mul(pub.mul(c, c), c)
    assert deep.depth == 2
    with pytest.raises(
        BudgetExceededError,
        match=rf"{op} would need multiplicative depth 3.*"
        r"\[60, 40, 40, 60\] \(4 primes\) supports depth 2",
    ):
        if op == "mul":
            pub.mul(deep, c)
        else:
            pub.mul_plain(deep, np.ones(10))


def test_depth2_product_with_2pow20_mask(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator
) -> None:
    """The csr_fhe_mf pattern: depth-2 product, additive mask, decrypt, unmask."""
    u, v, e = _vec(rng, 4096), _vec(rng, 4096), _vec(rng, 4096)
    prod = pub.mul(pub.mul(pub.encrypt(u), pub.encrypt(v)), pub.encrypt(e))
    mask = rng.uniform(-(2.0**20), 2.0**20, 4096)
    masked = pub.rerandomize(pub.add_plain(prod, mask))
    err = np.abs(scheme.decrypt(masked) - mask - u * v * e).max()
    assert err < 1e-5


def test_rerandomize_changes_bytes_not_value(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator
) -> None:
    x = _vec(rng, 50)
    c = pub.mul(pub.encrypt(x), pub.encrypt(x))
    r = pub.rerandomize(c)
    assert r.depth == c.depth == 1
    assert pub.to_bytes(r) != pub.to_bytes(c)
    np.testing.assert_allclose(scheme.decrypt(r), x * x, atol=TOL)


# -- keys ------------------------------------------------------------------------


def test_public_context_cannot_decrypt(scheme: CkksScheme, pub: CkksScheme) -> None:
    assert scheme.has_secret_key and not pub.has_secret_key
    assert not scheme.public().has_secret_key
    assert pub.fingerprint == scheme.fingerprint == scheme.public().fingerprint
    assert pub.public_bytes() == scheme.public_bytes()
    with pytest.raises(MissingSecretKeyError, match="holds only the public context"):
        pub.decrypt(pub.encrypt(np.ones(3)))
    assert "secret" not in repr(pub) and scheme.fingerprint in repr(scheme)


def test_public_bytes_are_small_without_galois_keys(scheme: CkksScheme) -> None:
    assert len(scheme.public_bytes()) < 4_000_000  # Galois keys alone would be ~35 MB


def test_load_public_refuses_bad_bytes(scheme: CkksScheme) -> None:
    good = scheme.public_bytes()
    with pytest.raises(DecodeError, match="not a CKKS public context"):
        load_public_ckks(b"XXXX" + good[4:])
    with pytest.raises(DecodeError, match="does not match the"):
        load_public_ckks(good[:-10])
    with pytest.raises(DecodeError, match="too short"):
        load_public_ckks(b"CF")
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        load_public_ckks("CFCX")  # type: ignore[arg-type]


def test_key_mismatch(scheme: CkksScheme, other: CkksScheme) -> None:
    c = other.encrypt(np.ones(4))
    with pytest.raises(KeyMismatchError, match="a is encrypted under context"):
        scheme.add(c, scheme.encrypt(np.ones(4)))
    with pytest.raises(KeyMismatchError, match="ciphertext made under context"):
        scheme.from_bytes(other.to_bytes(c))


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (np.ones((2, 2)), ValueError, r"x must be 1-D, got shape \(2, 2\)"),
        (np.array([]), ValueError, "x must not be empty"),
        (np.array([1.0, np.nan]), ValueError, "x must be finite"),
        (np.array(["a"]), TypeError, "x must be a real numeric array"),
    ],
)
def test_encrypt_validation(pub: CkksScheme, x: np.ndarray, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pub.encrypt(x)


def test_operand_validation(pub: CkksScheme) -> None:
    a, b = pub.encrypt(np.ones(3)), pub.encrypt(np.ones(4))
    with pytest.raises(ValueError, match="same size, got 3 and 4"):
        pub.add(a, b)
    with pytest.raises(ValueError, match="x must have the ciphertext's size 3, got 4"):
        pub.add_plain(a, np.ones(4))
    with pytest.raises(TypeError, match="k must be an int, got float"):
        pub.mul_scalar(a, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        pub.mul_scalar(a, True)
    with pytest.raises(ValueError, match="k must fit in 64 bits"):
        pub.mul_scalar(a, 2**70)
    with pytest.raises(TypeError, match="a must be a CkksCiphertext, got bytes"):
        pub.add(b"x", a)  # type: ignore[arg-type]


# -- serialization ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_bytes_roundtrip(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator, depth: int
) -> None:
    x = _vec(rng, 5000)
    c = pub.encrypt(x)
    expected = x.copy()
    for _ in range(depth):
        c = pub.mul_plain(c, x)
        expected = expected * x
    data = pub.to_bytes(c)
    back = scheme.from_bytes(data)
    assert back.size == 5000 and back.depth == depth
    np.testing.assert_allclose(scheme.decrypt(back), expected, atol=TOL)
    assert scheme.to_bytes(back) == data


@pytest.fixture(scope="session")
def small_bytes(pub: CkksScheme) -> bytes:
    c = pub.encrypt(np.arange(5.0))
    return pub.to_bytes(pub.mul(c, c))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"NOPE" + b[4:], "not a CKKS ciphertext"),
        (lambda b: b[:4] + b"\x09" + b[5:], "unsupported CKKS ciphertext version 9"),
        (lambda b: b[:5] + b"\x01" + b[6:], "scheme id 1 is not ckks"),
        (lambda b: b[:-1], "truncated in chunk 0"),
        (lambda b: b + b"\x00", "1 trailing bytes"),
        (lambda b: b[:22] + b"\x00" + b[23:], "header says depth 0, ciphertext is at depth 1"),
        (lambda b: b[:22] + b"\x07" + b[23:], "depth 7 exceeds"),
        (lambda b: b[:14] + (99999).to_bytes(8, "big") + b[22:], "chunks cannot hold"),
    ],
)
def test_from_bytes_rejects(pub: CkksScheme, small_bytes: bytes, mutate, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        pub.from_bytes(mutate(small_bytes))


@settings(max_examples=100, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(data=st.binary(max_size=200))
def test_random_bytes_only_raise_value_errors(pub: CkksScheme, data: bytes) -> None:
    with pytest.raises(ValueError):
        pub.from_bytes(data)
    with pytest.raises(ValueError):
        pub.from_bytes(b"CFCK\x01\x03" + data)


@settings(max_examples=150, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    pos=st.integers(min_value=0, max_value=10**9),
    val=st.integers(min_value=0, max_value=255),
    cut=st.booleans(),
)
def test_corrupted_bytes_never_crash(
    scheme: CkksScheme, small_bytes: bytes, pos: int, val: int, cut: bool
) -> None:
    """A corrupted ciphertext is either rejected with a ValueError or decodes."""
    data = bytearray(small_bytes)
    i = pos % len(data)
    if cut:
        data = data[:i]
    else:
        data[i] = val
    try:
        c = scheme.from_bytes(bytes(data))
    except ValueError:
        return
    assert c.size == 5
    # payload bits flipped inside SEAL's data decode to garbage, not a crash
    with contextlib.suppress(ValueError):
        scheme.decrypt(c)


# -- secret key export and the registry's classmethods ---------------------------


def test_secret_key_roundtrip_keeps_fingerprint(
    scheme: CkksScheme, pub: CkksScheme, rng: np.random.Generator
) -> None:
    x = _vec(rng, 20)
    c = pub.encrypt(x)
    data = scheme.export_secret_key_bytes()
    assert data[:4] == b"CFSK" and data[5] == 3  # registry reads the scheme id at byte 5
    back = CkksScheme.from_secret_bytes(data)
    assert back.has_secret_key and back.fingerprint == scheme.fingerprint
    np.testing.assert_allclose(back.decrypt(c), x, atol=TOL)
    np.testing.assert_allclose(scheme.decrypt(back.encrypt(x)), x, atol=TOL)


def test_secret_key_export_needs_secret(pub: CkksScheme) -> None:
    with pytest.raises(MissingSecretKeyError, match="holds only the public context"):
        pub.export_secret_key_bytes()


def _parts(secret: bytes) -> tuple[bytes, bytes]:
    """(public bytes, TenSEAL secret context) inside ``export_secret_key_bytes`` output."""
    pub_len = int.from_bytes(secret[6:14], "big")
    return secret[14 : 14 + pub_len], secret[14 + pub_len + 8 :]


def _with_len(blob: bytes) -> bytes:
    return len(blob).to_bytes(8, "big") + blob


def test_secret_key_of_another_context_is_refused(scheme: CkksScheme, other: CkksScheme) -> None:
    my_pub, _ = _parts(scheme.export_secret_key_bytes())
    _, their_ctx = _parts(other.export_secret_key_bytes())
    spliced = b"CFSK\x01\x03" + _with_len(my_pub) + _with_len(their_ctx)
    with pytest.raises(KeyMismatchError, match="does not match the public context"):
        load_secret_ckks(spliced)
    with pytest.raises(DecodeError, match="not CKKS secret key bytes"):
        load_secret_ckks(scheme.public_bytes())


def test_public_loader_refuses_a_secret_context(scheme: CkksScheme) -> None:
    good = scheme.public_bytes()
    _, secret_ctx = _parts(scheme.export_secret_key_bytes())
    header = good[: 12 + good[11]]  # fixed fields, then one byte per prime
    with pytest.raises(DecodeError, match="carry a secret key"):
        load_public_ckks(header + _with_len(secret_ctx))


def test_registry_classmethods(scheme: CkksScheme) -> None:
    fresh = CkksScheme.generate(params="n4096-depth1")
    assert fresh.params == NAMED_PARAMS["n4096-depth1"] and fresh.has_secret_key
    loaded = CkksScheme.from_public_bytes(scheme.public_bytes())
    assert loaded.fingerprint == scheme.fingerprint and not loaded.has_secret_key


@pytest.mark.parametrize("offset", [2.0**4, 2.0**8, 2.0**14])
def test_large_plain_offsets_survive_later_products(scheme: CkksScheme, offset: float) -> None:
    """(Enc(u + m) - m) * (Enc(v + m) - m) * ... must decrypt to u v^2 (TenSEAL #462)."""
    rng = np.random.default_rng(5)
    u, v = rng.uniform(-1, 1, 16), rng.uniform(-1, 1, 16)
    m = np.full(16, offset)
    a = scheme.add_plain(scheme.encrypt(u + m), -m)
    b = scheme.add_plain(scheme.encrypt(v + m), -m)
    out = scheme.decrypt(scheme.mul(scheme.mul(a, b), b))
    np.testing.assert_allclose(out, u * v * v, atol=1e-4)


# --------------------------------------------------------------------------- issue 18


def test_encryption_bytes_hold_the_public_key_only(scheme: CkksScheme) -> None:
    """Users need to encrypt, nothing else: no secret, no relinearization keys."""
    enc = load_public_ckks(scheme.encryption_bytes())
    assert (
        enc.fingerprint == scheme.fingerprint == load_public_ckks(scheme.public_bytes()).fingerprint
    )
    assert not enc.has_secret_key and not enc.can_evaluate and scheme.can_evaluate
    assert 3 * len(scheme.encryption_bytes()) < len(scheme.public_bytes())
    ct = enc.encrypt(np.array([1.5, -2.0]))
    with pytest.raises(MissingEvaluationKeyError, match="encryption key only"):
        enc.mul(ct, ct)
    assert np.allclose(scheme.decrypt(scheme.from_bytes(enc.to_bytes(ct))), [1.5, -2.0], atol=TOL)


def test_context_versions_must_match_their_keys(scheme: CkksScheme) -> None:
    """Version 1 must carry relinearization keys, version 2 must not."""
    enc, ev = scheme.encryption_bytes(), scheme.public_bytes()
    assert enc[4] == 2 and ev[4] == 1
    with pytest.raises(DecodeError, match="carries relinearization keys"):
        load_public_ckks(enc[:4] + b"\x02" + ev[5:])
    with pytest.raises(DecodeError, match="lacks relinearization keys"):
        load_public_ckks(ev[:4] + b"\x01" + enc[5:])
    with pytest.raises(DecodeError, match="unsupported CKKS context version 3"):
        load_public_ckks(enc[:4] + b"\x03" + enc[5:])


def test_seeded_encryption_is_half_the_bytes_and_fresh(scheme: CkksScheme, pub: CkksScheme) -> None:
    x = np.linspace(-3.0, 3.0, 5000)  # two chunks
    seeded, full = scheme.encrypt_bytes(x), scheme.to_bytes(scheme.encrypt(x))
    assert len(seeded) < 0.55 * len(full)
    assert scheme.encrypt_bytes(x) != seeded  # fresh randomness every call
    back = pub.from_bytes(seeded)
    assert back.depth == 0 and np.allclose(scheme.decrypt(back), x, atol=TOL)
    # a public-key holder cannot seed: same size as a plain encryption
    assert abs(len(pub.encrypt_bytes(x)) - len(full)) < 0.02 * len(full)
    # a seeded ciphertext minus a public-key encryption of a large mask, squared:
    # the unused slots must match TenSEAL's (cyclic fill), or the mask survives there
    m = np.full(x.size, 2.0**16)
    masked = pub.from_bytes(scheme.encrypt_bytes(x / 4 + m))
    y = pub.add(masked, pub.encrypt(-m))
    assert np.allclose(scheme.decrypt(pub.mul(y, y)), (x / 4) ** 2, atol=1e-3)


def test_mod_switch_drops_primes_keeps_values(scheme: CkksScheme, pub: CkksScheme) -> None:
    x = np.linspace(-1.0, 1.0, 100)
    ct = pub.encrypt(x)
    low = pub.mod_switch(ct, 2)
    assert low.depth == 2 and len(pub.to_bytes(low)) < 0.6 * len(pub.to_bytes(ct))
    assert np.allclose(scheme.decrypt(low), x, atol=TOL)
    sent = pub.encrypt_bytes(x, depth=1)
    assert pub.from_bytes(sent).depth == 1
    assert np.allclose(scheme.decrypt(pub.from_bytes(sent)), x, atol=TOL)
    # usable where it is needed: added to a product (depth 1)
    prod = pub.mul(ct, ct)
    assert np.allclose(scheme.decrypt(pub.add(prod, pub.from_bytes(sent))), x * x + x, atol=1e-4)
    with pytest.raises(ValueError, match="depth must be an int >= the ciphertext's 2"):
        pub.mod_switch(low, 1)
    with pytest.raises(BudgetExceededError, match="mod_switch would need multiplicative depth 3"):
        pub.mod_switch(ct, 3)


def test_seal_scratch_files_never_outlive_their_use() -> None:
    """The seeded path hands the secret key to SEAL's bindings through a private
    scratch file (they only load from paths): nothing, the key included, may remain."""
    import os

    from cipherfact.crypto import ckks

    owner = make_ckks_scheme("n8192-depth2")
    blob = owner.encrypt_bytes(np.arange(10, dtype=np.float64), seeded=True)
    assert np.allclose(owner.decrypt(owner.from_bytes(blob))[:10], np.arange(10), atol=1e-3)
    scratch = ckks._SCRATCH[os.getpid()]
    assert stat_mode(scratch) == 0o700 and os.listdir(scratch) == []
    owner.mod_switch(owner.encrypt(np.ones(4)), 1)
    assert os.listdir(scratch) == []


def stat_mode(path: str) -> int:
    import os
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)
