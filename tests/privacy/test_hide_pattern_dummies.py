"""csr_fhe_mf ``hide_pattern``: RS must not be able to strip the dummy items (issue 12).

RS sees every user's padded item list in the clear (the ``structure`` message).
Before the fix the dummies came from ``default_rng([scenario.seed, 0x5544, u])``,
a seed RS knows from the public scenario, so RS could replay the draw and learn
which items each user really rated. The attack below is RS's code, run on RS's
view only: the public scenario and the structure messages of a real build.
Against the fixed code (dummies from the OS CSPRNG) it must learn nothing;
against a test double that seeds the dummies the old way it must succeed, so
the test can fail.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import ckks
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.ratings.job import csr_config, csr_user, load_split
from cipherfact.protocols.ratings.scenario import CsrCryptoSpec, CsrFheMFScenario, RatingsSpec

#: The attacker trusts an explanation of a padded list only when it accounts for
#: at least this many dummies: a list that was *not* drawn with the replayed
#: generator matches a replay of k draws with chance about (pad_to/n_items)**k.
MIN_DUMMIES = 5


def _scenario(seed: int = 11) -> CsrFheMFScenario:
    return CsrFheMFScenario(
        name="dummies",
        seed=seed,
        epochs=1,
        data=RatingsSpec(n_users=40, n_items=1000, density=0.03),
        crypto=CsrCryptoSpec(hide_pattern=True, pad_to=60),
    )


def _old_seeded_draw(seed: int, user: list[int]) -> Callable[[np.ndarray, int], np.ndarray]:
    """The broken variant: dummies from the public scenario seed, as before the fix."""

    def draw(free: np.ndarray, k: int) -> np.ndarray:
        return np.random.default_rng([seed, 0x5544, user[0]]).choice(free, size=k, replace=False)

    return draw


def _rs_view(
    scenario: CsrFheMFScenario, monkeypatch: pytest.MonkeyPatch, seeded: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Build the users as the simulation does; return what RS receives (each user's
    structure message, decoded) and, for scoring only, each user's real items."""
    train = load_split(scenario.data, scenario.seed).train
    cfg = csr_config(scenario, train)
    # Users only need the CKKS context once RS's layout arrives; the structure
    # message goes out first, so a stand-in context keeps this test CKKS-free.
    monkeypatch.setattr(ckks, "load_public_ckks", lambda _blob: object())
    current = [0]
    if seeded:
        monkeypatch.setattr(csr, "_secret_dummies", _old_seeded_draw(scenario.seed, current))
    views, real = [], []
    for u in range(cfg.n_users):
        current[0] = u
        user = csr_user(scenario, train, cfg, u)
        context = Envelope(
            cfg.job_id,
            csr.SETUP_ROUND,
            csr.STAGE_CONTEXT,
            csr.CSP_ID,
            csr.user_id(u),
            b"public context",
        )
        (msg,) = user.step(context)
        assert (msg.stage, msg.receiver) == (csr.STAGE_STRUCTURE, csr.RS_ID)
        views.append(np.frombuffer(msg.payload, ">u8").astype(np.int64))
        real.append(np.sort(train.items[train.users == u]))
    return views, real


def _explain(padded: np.ndarray, idx: np.ndarray, n_items: int) -> set[int] | None:
    """Items of ``padded`` that are real in every split consistent with dummies at
    positions ``idx`` of the (sorted) unrated items; None if no split fits.

    Walks the maximal runs of consecutive padded items: the unrated items before a
    run take consecutive positions that must not be dummy positions; the run's
    dummies take the next d positions, d being the number of consecutive dummy
    positions there (the unrated item after the run must not be one). A run with
    d = 0 is certainly real; 0 < d < run length leaves the run ambiguous.
    """
    dummy_pos = set(idx.tolist())
    runs = np.split(padded, np.flatnonzero(np.diff(padded) != 1) + 1)
    j, used, prev, certain = 0, 0, -1, set()

    def clear(lo: int, hi: int) -> bool:  # no dummy position in [lo, hi)
        return bool(np.searchsorted(idx, hi) == np.searchsorted(idx, lo))

    for run in runs:
        gap = int(run[0]) - prev - 1
        if not clear(j, j + gap):
            return None
        j += gap
        d = 0
        while j + d in dummy_pos:
            d += 1
        if d > run.size:
            return None
        if d == 0:
            certain.update(run.tolist())
        j, used, prev = j + d, used + d, int(run[-1])
    if not clear(j, j + n_items - 1 - prev) or used != idx.size:
        return None
    return certain


def attack(scenario: CsrFheMFScenario, views: list[np.ndarray]) -> list[set[int]]:
    """RS's attack with public knowledge only: for every user and every possible
    number n of real items, replay the old seeded draw of pad_to - n dummies and
    keep the explanations of the padded list that fit; claim as real with
    certainty the items real in all of them."""
    n_items, pad = scenario.data.n_items, scenario.crypto.pad_to
    claims = []
    for u, padded in enumerate(views):
        fits = []
        for n in range(1, pad - MIN_DUMMIES + 1):
            rng = np.random.default_rng([scenario.seed, 0x5544, u])
            idx = np.sort(rng.choice(n_items - n, size=pad - n, replace=False))
            labels = _explain(padded, idx, n_items)
            if labels is not None:
                fits.append(labels)
        claims.append(set.intersection(*fits) if fits else set())
    return claims


def _score(claims: list[set[int]], real: list[np.ndarray]) -> tuple[float, float]:
    """(share of all real items claimed correctly, share of claims that are real)."""
    hits = sum(len(c & set(r.tolist())) for c, r in zip(claims, real, strict=True))
    n_claims = sum(len(c) for c in claims)
    return hits / sum(r.size for r in real), hits / n_claims if n_claims else 0.0


def test_rs_cannot_strip_secret_dummies(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = _scenario()
    views, real = _rs_view(scenario, monkeypatch, seeded=False)
    pad = scenario.crypto.pad_to
    assert all(v.size == pad for v in views)  # the padding itself is in place
    assert all(np.isin(r, v).all() for r, v in zip(real, views, strict=True))
    identified, precision = _score(attack(scenario, views), real)
    base_rate = sum(r.size for r in real) / (pad * len(views))
    assert identified <= 0.05, (identified, precision)
    assert precision <= base_rate + 0.1 or identified == 0.0


def test_attack_strips_dummies_seeded_from_the_public_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same attack against the pre-fix derivation: RS identifies the real items."""
    scenario = _scenario()
    views, real = _rs_view(scenario, monkeypatch, seeded=True)
    identified, precision = _score(attack(scenario, views), real)
    assert identified >= 0.8, identified
    assert precision == 1.0


def test_dummies_differ_between_builds_of_the_same_scenario(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same public scenario, same ratings: the padded lists still differ (OS randomness)."""
    scenario = _scenario(seed=3)
    first, real = _rs_view(scenario, monkeypatch, seeded=False)
    second, _ = _rs_view(scenario, monkeypatch, seeded=False)
    differ = [not np.array_equal(a, b) for a, b in zip(first, second, strict=True)]
    padded_users = [r.size < scenario.crypto.pad_to for r in real]
    assert differ == padded_users
