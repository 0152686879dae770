"""Decryption batched across keys (``cipherfact.crypto.batch``): the same plaintexts as
``decrypt``, one at a time, for every fast path, key mix and ciphertext length."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme, ifma
from cipherfact.crypto.batch import DecryptBatch
from cipherfact.crypto.errors import DecodeError, KeyMismatchError, MissingSecretKeyError
from cipherfact.crypto.keys import PaillierKeyMaterial
from cipherfact.crypto.packed import PackedCiphertext
from cipherfact.crypto.parallel import SharedDecryptPool

from .conftest import CODEC

PATHS = ["gmpy2", "auto"] + (["ifma"] if ifma.available() else [])


def _schemes(keys: list[PaillierKeyMaterial], path: str, threads: int = 0) -> list[PaillierScheme]:
    options = PaillierOptions(fast_path=path, ifma_threads=threads)
    return [PaillierScheme(k, codec=CODEC, options=options) for k in keys]


def _collect(plain: Callable[[], np.ndarray], seconds: float) -> tuple[np.ndarray, float]:
    return plain(), seconds


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ints_per_ct", [(1,), (2, 1), (3, 3, 1), (1, 5, 2, 4), (7, 9)])
def test_batch_equals_one_by_one_decryption(
    key_a: PaillierKeyMaterial,
    key_b: PaillierKeyMaterial,
    path: str,
    ints_per_ct: tuple,
    threads: int,
) -> None:
    """Odd lane counts (1..32 CRT halves in all), keys alternating, every fast path,
    library calls on one thread or two."""
    rng = np.random.default_rng(len(ints_per_ct))
    schemes = _schemes([key_a, key_b], path, threads)
    reference = _schemes([key_a, key_b], "gmpy2", 1)
    slots = schemes[0].layout.slots
    batch: DecryptBatch[tuple[np.ndarray, float]] = DecryptBatch()
    expected = []
    for i, count in enumerate(ints_per_ct):
        s = schemes[i % 2]
        x = rng.uniform(-100, 100, count * slots - (i % slots))  # last integer partly filled
        ct = s.add(s.encrypt(x), s.encrypt(-x / 3))
        assert len(ct.ints) == count
        expected.append(reference[i % 2].decrypt(ct))
        assert s.decrypt(ct).tobytes() == expected[-1].tobytes()
        batch.add(s, ct, _collect)
    assert len(batch) == len(ints_per_ct)
    got = batch.flush()
    assert len(batch) == 0 and batch.flush() == []
    for (plain, seconds), want in zip(got, expected, strict=True):
        assert plain.tobytes() == want.tobytes()
        assert seconds >= 0.0


def test_keys_with_a_worker_pool_decrypt_on_their_own_path(
    key_a: PaillierKeyMaterial, key_b: PaillierKeyMaterial
) -> None:
    a, b = _schemes([key_a, key_b], "auto")
    x = np.linspace(-3, 3, 3 * a.layout.slots)
    ca, cb = a.encrypt(x), b.encrypt(-x)
    with SharedDecryptPool(1) as pool:
        b.use_shared_pool(pool)
        assert b.batch_math() is None and a.batch_math() is not None
        batch: DecryptBatch[tuple[np.ndarray, float]] = DecryptBatch()
        batch.add(a, ca, _collect)
        batch.add(b, cb, _collect)
        (pa, _), (pb, _) = batch.flush()
        b.use_shared_pool(None)
    assert pa.tobytes() == a.decrypt(ca).tobytes()
    assert pb.tobytes() == b.decrypt(cb).tobytes()


def test_add_checks_the_key_and_the_secret(
    key_a: PaillierKeyMaterial, key_b: PaillierKeyMaterial
) -> None:
    a, b = _schemes([key_a, key_b], "auto")
    ct = a.encrypt(np.ones(4))
    batch: DecryptBatch[tuple[np.ndarray, float]] = DecryptBatch()
    with pytest.raises(KeyMismatchError, match="encrypted under key"):
        batch.add(b, ct, _collect)
    with pytest.raises(MissingSecretKeyError, match="holds only the public key"):
        batch.add(a.public(), ct, _collect)
    assert len(batch) == 0


def test_a_corrupted_ciphertext_fails_in_its_own_continuation(
    key_a: PaillierKeyMaterial,
) -> None:
    """The slot checks run when the continuation asks for its plaintext, so the caller's
    own error handling names the culprit; the other items are unaffected."""
    a = _schemes([key_a], "auto")[0]
    good = a.encrypt(np.arange(5.0))
    too_big = a._encrypt_ints([key_a.n - 1])  # a packed integer beyond the slot layout
    bad = PackedCiphertext(
        scheme_name=good.scheme_name,
        key_fingerprint=good.key_fingerprint,
        size=good.size,
        layout=good.layout,
        terms=1,
        scale=1,
        offset=1,
        ints=tuple(too_big),
    )
    outcomes: list[str] = []

    def then(plain: Callable[[], np.ndarray], seconds: float) -> None:
        try:
            plain()
            outcomes.append("ok")
        except DecodeError as exc:
            outcomes.append(str(exc))

    batch: DecryptBatch[None] = DecryptBatch()
    batch.add(a, bad, then)
    batch.add(a, good, then)
    batch.flush()
    assert "exceeds the slot layout" in outcomes[0]
    assert outcomes[1] == "ok"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, r"ifma_threads must be in \[0, 64\]"),
        (65, ValueError, "got 65"),
        (1.5, TypeError, "ifma_threads must be an int"),
    ],
)
def test_ifma_threads_validation(value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        PaillierOptions(ifma_threads=value)  # type: ignore[arg-type]


def test_thread_pool_is_one_per_size_and_validated() -> None:
    assert ifma.thread_pool(2) is ifma.thread_pool(2)
    assert 1 <= ifma.auto_threads() <= ifma.AUTO_THREADS
    with pytest.raises(ValueError, match="threads must be a positive int"):
        ifma.thread_pool(0)
