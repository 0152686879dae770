"""Shared fixtures: session-scoped test keys and the scheme parametrization.

Adding a scheme to the contract suite is one entry in ``SCHEME_CASES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cipherfact.crypto import (
    FixedPointCodec,
    PaillierOptions,
    PaillierScheme,
    Scheme,
    generate_scheme,
)
from cipherfact.crypto.keys import PaillierKeyMaterial, generate_key_material

CODEC = FixedPointCodec(frac_bits=24, int_bits=8, scalar_bits=16, max_terms=16, guard_bits=2)
TEST_KEY_BITS = 1024


@dataclass(frozen=True)
class SchemeCase:
    """How to build a scheme for the contract suite, and how exact it is."""

    make: Callable[[], Scheme]
    atol: float = 0.0  # 0.0: decryptions must equal the fixed-point reference exactly
    randomized_bytes: bool = True  # rerandomize must change the serialized bytes


SCHEME_CASES: dict[str, SchemeCase] = {
    "paillier": SchemeCase(
        lambda: generate_scheme(
            "paillier", codec=CODEC, key_bits=TEST_KEY_BITS, insecure_test_keys=True
        )
    ),
    "plain": SchemeCase(lambda: generate_scheme("plain", codec=CODEC, key_bits=TEST_KEY_BITS)),
    "ckks": SchemeCase(lambda: generate_scheme("ckks"), atol=1e-4),
}


@pytest.fixture(scope="session", params=sorted(SCHEME_CASES))
def scheme_case(request: pytest.FixtureRequest) -> tuple[str, SchemeCase, Scheme]:
    """(name, case, a scheme holding its secret key), one key per scheme per session."""
    case = SCHEME_CASES[request.param]
    return request.param, case, case.make()


@pytest.fixture(scope="session")
def key_a() -> PaillierKeyMaterial:
    return generate_key_material(TEST_KEY_BITS, insecure_test_keys=True)


@pytest.fixture(scope="session")
def key_b() -> PaillierKeyMaterial:
    return generate_key_material(TEST_KEY_BITS, insecure_test_keys=True)


@pytest.fixture(scope="session")
def paillier(key_a: PaillierKeyMaterial) -> PaillierScheme:
    """Scheme with key A, default (fast) options."""
    return PaillierScheme(key_a, codec=CODEC, options=PaillierOptions())


@pytest.fixture(scope="session")
def paillier_b(key_b: PaillierKeyMaterial) -> PaillierScheme:
    return PaillierScheme(key_b, codec=CODEC, options=PaillierOptions())
