"""The decryption pool shared by all keys of an in-memory simulation."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.crypto import FixedPointCodec, generate_scheme
from cipherfact.crypto.parallel import SharedDecryptPool

CODEC = FixedPointCodec(frac_bits=15, int_bits=6, scalar_bits=12, max_terms=16)


def test_pool_decrypts_exactly_like_the_serial_path_for_several_keys():
    rng = np.random.default_rng(0)
    schemes = [
        generate_scheme("paillier", codec=CODEC, key_bits=512, insecure_test_keys=True)
        for _ in range(2)
    ]
    cts = [(s, s.encrypt(rng.uniform(-5, 5, 90))) for s in schemes]
    serial = [s.decrypt(c) for s, c in cts]
    with SharedDecryptPool(2) as pool:
        for s in schemes:
            s.use_shared_pool(pool)
        pooled = [s.decrypt(c) for s, c in cts]
        for s in schemes:
            s.use_shared_pool(None)
    for a, b in zip(serial, pooled, strict=True):
        assert np.array_equal(a, b)


def test_pool_refuses_public_only_keys_and_bad_sizes():
    s = generate_scheme("paillier", codec=CODEC, key_bits=512, insecure_test_keys=True)
    with SharedDecryptPool(1) as pool, pytest.raises(ValueError, match="needs the secret key"):
        s.public().use_shared_pool(pool)
    with pytest.raises(ValueError, match="processes must be a positive int"):
        SharedDecryptPool(0)
