"""Randomness computed ahead in a worker process (``FactorPrefetcher``): the factors
are valid, each is used once, and a dry queue only means computing inline."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme
from cipherfact.crypto.keys import PaillierKeyMaterial
from cipherfact.crypto.prefetch import (
    WORKER_MAX_WINDOW,
    WORKER_TABLE_BUDGET,
    FactorPrefetcher,
    spec_table_bytes,
    table_bytes,
    worker_options,
)

from .conftest import CODEC


def _wait_for_worker(prefetcher: FactorPrefetcher, scheme: PaillierScheme) -> None:
    """Encrypt until the worker's first batch has come back (it starts by spawning)."""
    deadline = time.monotonic() + 60
    while prefetcher.prefetched == 0:
        assert time.monotonic() < deadline, "the worker never delivered"
        scheme.encrypt(np.zeros(1))
        time.sleep(0.05)


@pytest.mark.parametrize("djn_public", [False, True], ids=["full-r^n", "djn"])
def test_prefetched_randomness_encrypts_correctly(
    key_a: PaillierKeyMaterial, djn_public: bool
) -> None:
    options = PaillierOptions(djn_public=djn_public)
    owner = PaillierScheme(key_a, codec=CODEC, options=options)
    senders = [owner.public(), owner.public()]  # two holders of the same key share a queue
    rng = np.random.default_rng(1)
    with FactorPrefetcher(depth=4, min_batch=4) as prefetcher:
        for s in [owner, *senders]:
            s.use_prefetcher(prefetcher)
        _wait_for_worker(prefetcher, senders[0])
        seen: set[int] = set()
        for i in range(12):
            s = senders[i % 2]
            x = rng.uniform(-50, 50, 2 * s.layout.slots + 1)  # 3 integers per ciphertext
            ct = s.encrypt(x)
            again = s.rerandomize(ct)
            for c in (ct, again):
                assert owner.decrypt(c).tobytes() == owner.decrypt(owner.encrypt(x)).tobytes()
                seen.update(int(v) for v in c.ints)
        # the key owner's own (CRT) randomness goes through the worker too
        own = owner.encrypt(np.arange(3.0))
        assert np.array_equal(owner.decrypt(own), np.arange(3.0))
        assert len(seen) == 12 * 2 * 3  # every factor used once: no ciphertext repeats
        assert prefetcher.prefetched > 0
        assert prefetcher.prefetched + prefetcher.inline >= 12 * 2 * 3


def test_close_is_idempotent_and_a_closed_prefetcher_still_serves(
    key_a: PaillierKeyMaterial,
) -> None:
    owner = PaillierScheme(key_a, codec=CODEC)
    prefetcher = FactorPrefetcher()
    owner.use_prefetcher(prefetcher)
    prefetcher.close()
    prefetcher.close()
    ct = owner.encrypt(np.ones(3))  # computes inline and restarts the worker
    assert np.array_equal(owner.decrypt(ct), np.ones(3))
    prefetcher.close()
    owner.use_prefetcher(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth must be a positive int"),
        ({"min_batch": -1}, "min_batch must be a positive int"),
        ({"depth": True}, "depth must be a positive int"),
        ({"nice": 20}, r"nice must be an int in \[0, 19\]"),
        ({"nice": -1}, r"nice must be an int in \[0, 19\]"),
    ],
)
def test_prefetcher_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FactorPrefetcher(**kwargs)


def test_use_prefetcher_refuses_other_objects(key_a: PaillierKeyMaterial) -> None:
    with pytest.raises(TypeError, match="prefetcher must be a FactorPrefetcher, got str"):
        PaillierScheme(key_a, codec=CODEC).use_prefetcher("pool")  # type: ignore[arg-type]


def test_worker_widens_public_djn_windows_within_its_table_budget(
    key_a: PaillierKeyMaterial,
) -> None:
    options = PaillierOptions(djn_public=True, djn_window_bits=7)
    public = (key_a.n, key_a.h_s, None, None, options)
    bits = 2 * key_a.n.bit_length()
    assert table_bytes(4096, 448, 7) == 64 * 128 * 512  # the 4.2 MB of a 2048-bit key
    wide = worker_options(public, used=0)
    assert wide.djn_window_bits == WORKER_MAX_WINDOW
    assert wide == replace(options, djn_window_bits=WORKER_MAX_WINDOW)
    nearly_full = WORKER_TABLE_BUDGET - table_bytes(bits, 448, WORKER_MAX_WINDOW) + 1
    assert worker_options(public, used=nearly_full).djn_window_bits == WORKER_MAX_WINDOW - 1
    assert worker_options(public, used=WORKER_TABLE_BUDGET) is options
    # full-length r**n has no table; a key owner's two CRT tables are widened too
    full = PaillierOptions(djn_public=False)
    assert worker_options((key_a.n, key_a.h_s, None, None, full), used=0) is full
    owner = (key_a.n, key_a.h_s, key_a.p, key_a.q, options)
    assert worker_options(owner, used=0).djn_window_bits == WORKER_MAX_WINDOW
    assert spec_table_bytes(owner, options) == 2 * table_bytes(key_a.n.bit_length(), 448, 7)


def test_a_niced_worker_runs_below_the_caller() -> None:
    """``nice``: the worker runs that many levels below this process (Ray actors'
    workers at 19 only use the time their actor waits); 0 keeps the same priority."""
    import os

    here = os.nice(0)
    for nice in (0, 7):
        with FactorPrefetcher(nice=nice) as prefetcher:
            worker = prefetcher._pool().submit(os.nice, 0).result(timeout=60)
        assert worker == min(here + nice, 19)
