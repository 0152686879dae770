"""Randomness computed ahead in a worker process (``FactorPrefetcher``): the factors
are valid, each is used once, and a dry queue only means computing inline; the
DJN tables of keys that serve a whole run are widened within a budget."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from cipherfact.crypto import PaillierOptions, PaillierScheme, djn, paillier_math, prefetch
from cipherfact.crypto.djn import WIDE_WINDOW, table_bytes, wide_window
from cipherfact.crypto.keys import PaillierKeyMaterial
from cipherfact.crypto.prefetch import FactorPrefetcher, spec_table_bytes

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


def test_a_key_given_to_the_prefetcher_starts_its_first_batch_at_once(
    key_a: PaillierKeyMaterial,
) -> None:
    """``use_prefetcher`` primes the key: the worker starts and computes a first batch
    before any encryption asks, so the first one finds factors ready (without the
    prime it found no queue and computed every factor inline)."""
    owner = PaillierScheme(key_a, codec=CODEC)
    with FactorPrefetcher(depth=2, min_batch=4) as prefetcher:
        owner.use_prefetcher(prefetcher)
        queue = prefetcher._queues[owner._math.spec]
        assert [n for _, n in queue.inflight] == [4]
        queue.inflight[0][0].result(timeout=60)  # the worker delivered, nobody asked yet
        owner.use_prefetcher(prefetcher)  # a key already queued is not primed again
        assert [n for _, n in queue.inflight] == [4]
        ct = owner.encrypt(np.ones(3))  # one packed integer: one factor
        assert (prefetcher.prefetched, prefetcher.inline) == (1, 0)
        assert np.array_equal(owner.decrypt(ct), np.ones(3))
    # a key past the table budget is left to the caller, and starts no worker
    with FactorPrefetcher(table_budget=0) as empty:
        owner.use_prefetcher(empty)
        assert empty._executor is None and not empty._queues
    owner.use_prefetcher(None)


def test_the_worker_widens_public_keys_tables_only(
    key_a: PaillierKeyMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's budget goes to public keys (one 4096-bit chain per reply); an
    owner's CRT tables keep the options' window, even when offered first."""
    monkeypatch.setattr(djn, "_wide_bytes_held", [0])
    monkeypatch.setattr(prefetch, "_WORKER_MATH", {})
    paillier_math._public_table.cache_clear()
    options = PaillierOptions(djn_public=True, djn_window_bits=7)
    owner = PaillierScheme(key_a, codec=CODEC, options=options)._math.spec
    public = PaillierScheme(replace(key_a, p=None, q=None), codec=CODEC, options=options)
    for spec in (owner, public._math.spec):  # the owner's key first, as in a run
        factors = prefetch._worker_factors(spec, 2)
        assert len(set(factors)) == 2
    windows = {
        spec: [t.window_bits for t in prefetch._WORKER_MATH[spec]._djn_tables()]
        for spec in (owner, public._math.spec)
    }
    assert windows == {owner: [7, 7], public._math.spec: [WIDE_WINDOW]}
    assert prefetch.worker_options(owner).djn_wide_tables is False
    # the worker's factors still re-randomize correctly under the public key
    ct = public.encrypt(np.ones(2))
    mixed = public._make(
        ct,
        ct.size,
        ct.terms,
        ct.scale,
        ct.offset,
        [
            public._math.add(c, public._math.mpz(r))
            for c, r in zip(
                ct.ints, prefetch._worker_factors(public._math.spec, len(ct.ints)), strict=True
            )
        ],
    )
    assert np.array_equal(PaillierScheme(key_a, codec=CODEC).decrypt(mixed), np.ones(2))
    paillier_math._public_table.cache_clear()


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


def test_wide_window_picks_the_widest_that_fits_and_charges_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One policy for every process (agents' hosts and prefetch workers alike):
    the widest window up to ``WIDE_WINDOW`` whose tables fit what is left of the
    process's budget, charged once; past the budget, the options' window."""
    monkeypatch.setattr(djn, "_wide_bytes_held", [0])
    assert table_bytes(4096, 448, 7) == 64 * 128 * 512  # the 4.2 MB of a 2048-bit key
    nine = table_bytes(4096, 448, WIDE_WINDOW)
    budget = 2 * nine + table_bytes(4096, 448, WIDE_WINDOW - 1)
    assert wide_window([4096], 448, 7, budget) == WIDE_WINDOW
    assert wide_window([4096], 448, 7, budget) == WIDE_WINDOW
    assert wide_window([4096], 448, 7, budget) == WIDE_WINDOW - 1  # 9 no longer fits
    assert wide_window([4096], 448, 7, budget) == 7  # nothing wider fits: the floor
    assert djn._wide_bytes_held == [budget]
    # a key owner's two CRT tables (half-size moduli) are charged together
    monkeypatch.setattr(djn, "_wide_bytes_held", [0])
    assert wide_window([2048, 2048], 448, 7, nine) == WIDE_WINDOW
    assert djn._wide_bytes_held == [2 * table_bytes(2048, 448, WIDE_WINDOW)]


def test_wide_tables_are_built_wide_and_give_the_same_ciphertexts(
    key_a: PaillierKeyMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``djn_wide_tables``: the key's tables get the wide window (a public table once
    per key, however many holders), and encryption still decrypts correctly."""
    monkeypatch.setattr(djn, "_wide_bytes_held", [0])
    paillier_math._public_table.cache_clear()
    wide = PaillierOptions(djn_public=True, djn_window_bits=7, djn_wide_tables=True)
    narrow = replace(wide, djn_wide_tables=False)
    owner = PaillierScheme(key_a, codec=CODEC, options=wide)
    public = replace(key_a, p=None, q=None)
    holders = [PaillierScheme(public, codec=CODEC, options=wide) for _ in range(2)]
    plain = PaillierScheme(public, codec=CODEC, options=narrow)
    x = np.array([1.5, -2.0, 0.25])
    for s in (*holders, plain, owner):
        assert np.array_equal(owner.decrypt(owner.from_bytes(s.to_bytes(s.encrypt(x)))), x)
    assert [t.window_bits for t in owner._math._djn_tables()] == [WIDE_WINDOW] * 2
    assert holders[0]._math._djn_tables()[0] is holders[1]._math._djn_tables()[0]
    assert holders[0]._math._djn_tables()[0].window_bits == WIDE_WINDOW
    assert plain._math._djn_tables()[0].window_bits == 7
    bits = key_a.n.bit_length()
    charged = 2 * table_bytes(bits, 448, 9) + table_bytes(2 * bits, 448, 9)
    assert djn._wide_bytes_held == [charged]  # the public table charged once
    paillier_math._public_table.cache_clear()


def test_a_niced_worker_runs_below_the_caller() -> None:
    """``nice``: the worker runs that many levels below this process (Ray actors'
    workers at 19 mostly use the time their actor waits); 0 keeps the same priority."""
    import os

    here = os.nice(0)
    for nice in (0, 7):
        with FactorPrefetcher(nice=nice) as prefetcher:
            worker = prefetcher._pool().submit(os.nice, 0).result(timeout=60)
        assert worker == min(here + nice, 19)


def test_keys_past_the_table_budget_are_computed_by_the_caller(
    key_a: PaillierKeyMaterial, key_b: PaillierKeyMaterial
) -> None:
    """The worker serves keys while their tables fit ``table_budget``; a later key
    gets no queue (every factor computed inline), so the worker stays bounded."""
    options = PaillierOptions(djn_public=True, djn_window_bits=7)
    first = PaillierScheme(replace(key_a, p=None, q=None), codec=CODEC, options=options)
    second = PaillierScheme(replace(key_b, p=None, q=None), codec=CODEC, options=options)
    one_table = spec_table_bytes(first._math.spec)
    assert one_table == table_bytes(2 * key_a.n.bit_length(), 448, 7)
    owner = PaillierScheme(key_a, codec=CODEC, options=options)
    assert spec_table_bytes(owner._math.spec) == 2 * table_bytes(key_a.n.bit_length(), 448, 7)
    no_table = PaillierScheme(key_b, codec=CODEC, options=PaillierOptions(djn=False))
    assert spec_table_bytes(no_table._math.spec) == 0
    with FactorPrefetcher(depth=2, min_batch=2, table_budget=one_table) as prefetcher:
        for s in (first, second):
            s.use_prefetcher(prefetcher)
        _wait_for_worker(prefetcher, first)
        for _ in range(3):
            ct = second.encrypt(np.ones(2))
            assert np.array_equal(
                PaillierScheme(key_b, codec=CODEC).decrypt(
                    PaillierScheme(key_b, codec=CODEC).from_bytes(second.to_bytes(ct))
                ),
                np.ones(2),
            )
        assert list(prefetcher._queues) == [first._math.spec]  # the second key: no queue
        assert prefetcher._declined == {second._math.spec}
