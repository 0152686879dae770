"""csr_fhe_mf: accuracy against the plaintext twin, what RS and CSP see, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto.ckks import MissingEvaluationKeyError, load_public_ckks, make_ckks_scheme
from cipherfact.crypto.errors import InsecureParameterError
from cipherfact.data.ratings import Ratings, load_ratings, split_random, synthetic_ratings
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.csr_fhe_mf.layout import (
    SlotLayout,
    decode_parts,
    encode_parts,
    linear_step,
    plan_csr_params,
)
from cipherfact.simulations.engine import InMemoryEngine


def _config(train: Ratings, **kw: object) -> csr.CsrFheMFConfig:
    base = dict(job_id="t", n_users=train.n_users, n_items=train.n_items, n_factors=2, epochs=3)
    base.update(kw)
    return csr.CsrFheMFConfig(**base)  # type: ignore[arg-type]


def _run(train: Ratings, test: Ratings, cfg: csr.CsrFheMFConfig, observer=None, record=False):
    """Run the protocol in memory; returns (protocol RMSEs, twin RMSEs, roles)."""
    scheme = make_ckks_scheme(cfg.plan().params)
    rs = csr.RecommenderServer(cfg, load_public_ckks)
    cspr = csr.CryptoServiceProvider(cfg, scheme)
    cspr.record_view = record
    roles = {csr.RS_ID: rs, csr.CSP_ID: cspr}
    for u in range(cfg.n_users):
        m = train.users == u
        roles[csr.user_id(u)] = csr.CsrUser(
            u, train.items[m], train.values[m], cfg, load_public_ckks
        )
    engine = InMemoryEngine(roles, observer=observer)
    engine.start()

    def rmse(U: np.ndarray, V: np.ndarray) -> float:
        pred = cfg.rating_offset + np.einsum("sf,sf->s", U[test.users], V[test.items])
        return float(np.sqrt(np.mean((test.values - pred) ** 2)))

    got = []
    for _ in range(cfg.epochs):
        engine.run_outer()
        (AU, AV), (MU, MV) = cspr.masked_factors(), rs.factor_masks()
        got.append(rmse(AU - MU, AV - MV))
    twin: list[float] = []
    # the users' dummies are secret: the twin reads them from the structure RS received
    assert rs.layout is not None
    neg_r, weights = csr.twin_slots(rs.layout, train.users, train.items, train.values, cfg)
    csr.run_twin(rs.layout, neg_r, weights, cfg, lambda _e, U, V: twin.append(rmse(U, V)))
    return got, twin, roles


@pytest.fixture(scope="module")
def data() -> tuple[Ratings, Ratings]:
    rng = np.random.default_rng(0)
    return tuple(split_random(synthetic_ratings(24, 40, 2, 0.2, rng=rng), 0.2, rng))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def synthetic_run(data):
    train, test = data
    seen: list[Envelope] = []
    got, twin, roles = _run(train, test, _config(train), observer=seen.append, record=True)
    return got, twin, roles, seen


def test_matches_twin_on_synthetic(synthetic_run) -> None:
    got, twin, _, _ = synthetic_run
    assert len(got) == 3
    assert max(abs(a - b) for a, b in zip(got, twin, strict=True)) < 0.01
    assert got[-1] < got[0] + 0.05  # trains (does not blow up)


def test_matches_twin_on_movielens_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    r = synthetic_ratings(20, 30, 2, 0.25, rng=rng, step=0.5)
    path = tmp_path / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"]
    for u, i, v, t in zip(r.users, r.items, r.values, r.timestamps, strict=True):
        lines.append(f"{u * 7 + 1},{i * 3 + 10},{v:g},{int(t) + 1_000_000}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_ratings(path)
    assert loaded.n_ratings == r.n_ratings
    train, test = split_random(loaded, 0.2, np.random.default_rng(1))
    got, twin, _ = _run(train, test, _config(train, epochs=2))
    assert max(abs(a - b) for a, b in zip(got, twin, strict=True)) < 0.01


def test_each_setup_stage_is_one_causal_step(synthetic_run) -> None:
    """Network emulation charges a (round, stage) as one wave of parallel messages,
    so no stage may hold a message and the answer to it: users send RS their
    structure, then RS sends the layout to every user and to the CSP at once."""
    _, _, roles, seen = synthetic_run
    users = {csr.user_id(u) for u in range(len(roles) - 2)}
    setup = [e for e in seen if e.round == csr.SETUP_ROUND]
    routes: dict[str, set[tuple[int, int]]] = {}
    for e in setup:
        routes.setdefault(e.stage, set()).add((e.sender, e.receiver))
    assert routes["structure"] == {(u, csr.RS_ID) for u in users}
    assert routes["layout"] == {(csr.RS_ID, v) for v in users | {csr.CSP_ID}}
    assert routes["context"] == {(csr.CSP_ID, v) for v in users | {csr.RS_ID}}
    assert routes["ratings"] == {(u, csr.RS_ID) for u in users}


def test_rs_never_receives_plaintext(synthetic_run, data) -> None:
    train, _ = data
    _, _, _, seen = synthetic_run
    to_rs = [e for e in seen if e.receiver == csr.RS_ID]
    stages = {e.stage for e in to_rs}
    assert stages == {"context", "structure", "ratings", "refreshed"}
    # Plaintext ratings on the wire would show as runs of float64 values: look for
    # each user's consecutive ratings (in data order and in item order), raw and
    # offset, as 16-byte runs (a single 8-byte double such as 2.0 also occurs in
    # the ciphertexts' own serialized parameters).
    ratings = set()
    for u in np.unique(train.users):
        mine = train.users == u
        for vals in (train.values[mine], train.values[mine][np.argsort(train.items[mine])]):
            for shifted in (vals, vals - 3.0):
                arr = np.asarray(shifted, dtype=np.float64)
                ratings |= {arr[k : k + 2].tobytes() for k in range(arr.size - 1)}
    for env in to_rs:
        if env.stage in ("ratings", "refreshed"):
            for part in decode_parts(env.payload, "test"):
                assert len(part) == 4 or part[:4] == b"CFCK", env.describe()
        if env.stage == "structure":  # public item indices only
            assert np.frombuffer(env.payload, ">u8").max() < train.n_items
        if env.stage == "context":  # the CSP's public CKKS context (key material)
            assert env.payload[:4] == b"CFPK"
            continue
        for raw in ratings:
            assert raw not in env.payload and raw[::-1] not in env.payload


def test_csp_view_is_masked(data) -> None:
    """Two runs on different data: the CSP's decrypted values look like the masks."""
    views = []
    for seed in (11, 12):
        rng = np.random.default_rng(seed)
        train, test = split_random(synthetic_ratings(24, 40, 2, 0.2, rng=rng), 0.2, rng)
        cfg = _config(train, epochs=1)
        _, _, roles = _run(train, test, cfg, record=True)
        views.append(np.concatenate([v.ravel() for v in roles[csr.CSP_ID].view]))
    planned = cfg.plan()
    expected_std = 2.0**planned.value_bits * 2.0**planned.mask_bits / np.sqrt(3.0)
    for v in views:
        se = expected_std / np.sqrt(v.size)
        assert abs(v.mean()) < 5 * se
        assert abs(v.std() / expected_std - 1) < 5 / np.sqrt(v.size) + 0.01
    a, b = views
    se = expected_std * np.sqrt(1 / a.size + 1 / b.size)
    assert abs(a.mean() - b.mean()) < 5 * se
    # the sample std of a uniform variable has standard error sigma * sqrt(0.2 / n)
    assert abs(a.std() - b.std()) < 5 * expected_std * np.sqrt(0.2 * (1 / a.size + 1 / b.size))


def test_hide_pattern_pads_and_matches_twin(data) -> None:
    train, test = data
    pad = int(np.bincount(train.users).max()) + 2
    seen: list[Envelope] = []
    cfg = _config(train, epochs=2, hide_pattern=True, pad_to=pad, item_norm=8.0)
    assert cfg.plan().depth == 3
    got, twin, _ = _run(train, test, cfg, observer=seen.append)
    assert max(abs(a - b) for a, b in zip(got, twin, strict=True)) < 0.01
    sizes = {len(e.payload) // 8 for e in seen if e.stage == "structure" and e.receiver == 0}
    assert sizes == {pad}


def test_hide_pattern_does_not_change_the_result(data) -> None:
    """Padded and unpadded runs on the same data: the same factors up to CKKS noise.

    Dummies carry weight 0 and no count of the padded structure enters the
    step; with the old per-item slot counts (dummies included) the twins differ
    by far more than the tolerance, so this test can fail.
    """
    train, test = data
    pad = int(np.bincount(train.users).max()) + 3
    norm = float(np.bincount(train.items).max())
    plain_cfg = _config(train, epochs=3, item_norm=norm)
    hide_cfg = _config(train, epochs=3, item_norm=norm, hide_pattern=True, pad_to=pad)
    got_plain, twin_plain, roles_plain = _run(train, test, plain_cfg)
    got_hide, twin_hide, roles_hide = _run(train, test, hide_cfg)
    assert roles_hide[csr.RS_ID].layout.nnz == train.n_users * pad > train.n_ratings
    assert max(abs(a - b) for a, b in zip(twin_plain, twin_hide, strict=True)) < 1e-12
    assert max(abs(a - b) for a, b in zip(got_plain, got_hide, strict=True)) < 1e-4

    def factors(roles):
        (AU, AV), (MU, MV) = roles[csr.CSP_ID].masked_factors(), roles[csr.RS_ID].factor_masks()
        return AU - MU, AV - MV

    for a, b in zip(factors(roles_plain), factors(roles_hide), strict=True):
        assert np.max(np.abs(a - b)) < 1e-3
    # the old step (per-user and per-item slot counts of the padded structure)
    layout = roles_hide[csr.RS_ID].layout
    neg_r, w = csr.twin_slots(layout, train.users, train.items, train.values, hide_cfg)
    U, V = hide_cfg.initial_factors()
    for _ in range(hide_cfg.epochs):
        ne = w * np.einsum("sf,sf->s", U[layout.slot_users], V[layout.slot_items]) + neg_r
        gU, gV = ne[:, None] * V[layout.slot_items], ne[:, None] * U[layout.slot_users]
        U, V = linear_step(layout, U, V, gU, gV, hide_cfg.lr, hide_cfg.reg)
    Up, Vp = factors(roles_plain)
    assert max(np.max(np.abs(U - Up)), np.max(np.abs(V - Vp))) > 1e-2


def test_users_get_the_encryption_key_only(data) -> None:
    """RS alone gets relinearization keys; a user's context can encrypt, nothing more."""
    train, _ = data
    cfg = _config(train, epochs=1)
    scheme = make_ckks_scheme(cfg.plan().params)
    csp = csr.CryptoServiceProvider(cfg, scheme)
    out = csp.start()
    to_rs = [e for e in out if e.receiver == csr.RS_ID]
    to_users = [e for e in out if e.receiver != csr.RS_ID]
    assert len(to_rs) == 1 and len(to_users) == cfg.n_users
    assert {e.payload for e in to_users} == {scheme.encryption_bytes()}
    assert to_rs[0].payload == scheme.public_bytes()
    assert 3 * len(to_users[0].payload) < len(to_rs[0].payload)
    user_scheme = load_public_ckks(to_users[0].payload)
    assert not user_scheme.has_secret_key and not user_scheme.can_evaluate
    ct = user_scheme.encrypt(np.ones(3))
    with pytest.raises(MissingEvaluationKeyError, match="encryption key only"):
        user_scheme.mul(ct, ct)
    assert np.allclose(scheme.decrypt(scheme.from_bytes(user_scheme.to_bytes(ct))), 1.0, atol=1e-4)
    # RS refuses a context it could not multiply with
    rs = csr.RecommenderServer(cfg, load_public_ckks)
    with pytest.raises(ProtocolError, match="no relinearization keys"):
        rs.step(Envelope("t", -1, "context", csr.CSP_ID, csr.RS_ID, scheme.encryption_bytes()))


@pytest.mark.parametrize("hide", [False, True])
def test_wire_levers_change_bytes_not_results(data, hide) -> None:
    """Seeded refreshes and mod-switched uploads: fewer bytes, the same numbers."""
    train, test = data
    extra = (
        dict(hide_pattern=True, pad_to=int(np.bincount(train.users).max()), item_norm=8.0)
        if hide
        else {}
    )
    sizes = {}
    for levers in (False, True):
        seen: list[Envelope] = []
        cfg = _config(train, epochs=1, seeded_refresh=levers, mod_switch_uploads=levers, **extra)
        got, twin, _ = _run(train, test, cfg, observer=seen.append)
        assert abs(got[0] - twin[0]) < 1e-3
        sizes[levers] = {
            stage: sum(len(e.payload) for e in seen if e.stage == stage)
            for stage in ("refreshed", "ratings", "masked")
        }
    assert sizes[True]["refreshed"] < 0.55 * sizes[False]["refreshed"]  # seeded: c1 is a seed
    assert sizes[True]["ratings"] < 0.8 * sizes[False]["ratings"]  # primes RS never uses
    assert abs(sizes[True]["masked"] - sizes[False]["masked"]) < 0.02 * sizes[False]["masked"]


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def setup_roles(data):
    train, _ = data
    cfg = _config(train, epochs=1)
    scheme = make_ckks_scheme(cfg.plan().params)
    rs = csr.RecommenderServer(cfg, load_public_ckks)
    rs.step(Envelope("t", -1, "context", csr.CSP_ID, csr.RS_ID, scheme.public_bytes()))
    return cfg, scheme, rs


def test_rs_rejects_wrong_context_ciphertext(data) -> None:
    train, _ = data
    cfg = _config(train, epochs=1)
    scheme = make_ckks_scheme(cfg.plan().params)
    other = make_ckks_scheme(cfg.plan().params)
    rs = csr.RecommenderServer(cfg, load_public_ckks)
    rs.step(Envelope("t", -1, "context", csr.CSP_ID, csr.RS_ID, scheme.public_bytes()))
    for u in range(cfg.n_users):
        items = np.unique(train.items[train.users == u]).astype(">u8").tobytes()
        rs.step(Envelope("t", -1, "structure", csr.user_id(u), csr.RS_ID, items))
    size = rs.layout.chunk_sizes()[0]
    foreign = other.to_bytes(other.encrypt(np.zeros(size)))
    payload = encode_parts([(0).to_bytes(4, "big"), foreign])
    with pytest.raises(ProtocolError, match=r"RS: ratings from agent 2: bad ciphertext.*context"):
        rs.step(Envelope("t", -1, "ratings", csr.user_id(0), csr.RS_ID, payload))
    with pytest.raises(ProtocolError, match="RS: ratings from agent 3: bad payload magic"):
        rs.step(Envelope("t", -1, "ratings", csr.user_id(1), csr.RS_ID, b"garbage-bytes"))
    good = scheme.to_bytes(scheme.encrypt(np.zeros(size)))
    broken = good[:-10]
    payload = encode_parts([(0).to_bytes(4, "big"), broken])
    with pytest.raises(ProtocolError, match="RS: ratings from agent 4: bad ciphertext"):
        rs.step(Envelope("t", -1, "ratings", csr.user_id(2), csr.RS_ID, payload))


@pytest.mark.parametrize(
    ("stage", "sender", "match"),
    [
        ("masked", csr.CSP_ID, "unexpected stage 'masked' from agent 1"),
        ("refreshed", csr.user_id(0), r"stage 'refreshed' from agent 2, expected it from"),
        ("context", csr.user_id(3), r"stage 'context' from agent 5"),
    ],
)
def test_rs_rejects_unexpected_messages(setup_roles, stage, sender, match) -> None:
    _, _, rs = setup_roles
    with pytest.raises(ProtocolError, match=match):
        rs.step(Envelope("t", 0, stage, sender, csr.RS_ID, b"x"))


def test_rs_rejects_other_job(setup_roles) -> None:
    _, _, rs = setup_roles
    with pytest.raises(ProtocolError, match="envelope for job 'other'"):
        rs.step(Envelope("other", 0, "refreshed", csr.CSP_ID, csr.RS_ID, b""))


def test_csp_rejects_masked_before_layout(setup_roles) -> None:
    cfg, scheme, _ = setup_roles
    cspr = csr.CryptoServiceProvider(cfg, scheme)
    with pytest.raises(ProtocolError, match="after the layout"):
        cspr.step(Envelope("t", 0, "masked", csr.RS_ID, csr.CSP_ID, encode_parts([])))
    with pytest.raises(ProtocolError, match="bad layout from agent 0"):
        cspr.step(Envelope("t", -1, "layout", csr.RS_ID, csr.CSP_ID, b"short"))
    with pytest.raises(ProtocolError, match="unexpected stage 'structure'"):
        cspr.step(Envelope("t", -1, "structure", csr.RS_ID, csr.CSP_ID, b"short"))


def test_csp_needs_secret_key(setup_roles) -> None:
    cfg, scheme, _ = setup_roles
    with pytest.raises(ValueError, match="needs the CKKS secret key"):
        csr.CryptoServiceProvider(cfg, scheme.public())


# --------------------------------------------------------------------------- planner


def test_planner_picks_cheapest_fitting_set() -> None:
    assert plan_csr_params(2, 16.0, 10).name == "n8192-depth2"
    assert plan_csr_params(2, 16.0, 20).name == "n8192-depth2-s30"
    assert plan_csr_params(3, 16.0, 20).name == "n8192-depth3"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(depth=2, value_bound=16.0, mask_bits=40), InsecureParameterError, "max_error"),
        (
            dict(depth=2, value_bound=16.0, mask_bits=20, params="n8192-depth2"),
            InsecureParameterError,
            "holds",
        ),
        (
            dict(depth=3, value_bound=1.0, mask_bits=4, params="n8192-depth2"),
            InsecureParameterError,
            "supports depth 2",
        ),
        (dict(depth=2, value_bound=1.0, mask_bits=4, params="nope"), ValueError, "unknown CKKS"),
        (dict(depth=0, value_bound=1.0, mask_bits=4), ValueError, "depth must be"),
        (dict(depth=2, value_bound=-1.0, mask_bits=4), ValueError, "value_bound must be"),
        (dict(depth=2, value_bound=1.0, mask_bits=-1), ValueError, "mask_bits must be"),
        (
            dict(depth=2, value_bound=1.0, mask_bits=4, factor_mask_bits=30),
            InsecureParameterError,
            "factor_mask_bits=30",
        ),
    ],
)
def test_planner_refuses(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        plan_csr_params(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_factors=0), "n_factors must be a positive int"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(reg=-1.0), "reg must be >= 0"),
        (dict(hide_pattern=True, pad_to=0), "pad_to must be in"),
        (dict(hide_pattern=True, pad_to=2), "hide_pattern needs item_norm > 0"),
        (dict(item_norm=-1.0), "item_norm must be finite and >= 0"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        csr.CsrFheMFConfig(job_id="t", n_users=3, n_items=4, **kwargs)  # type: ignore[arg-type]


def test_user_entries_validation() -> None:
    cfg = csr.CsrFheMFConfig(
        job_id="t", n_users=3, n_items=4, hide_pattern=True, pad_to=2, item_norm=1.0
    )
    with pytest.raises(ValueError, match="more than pad_to=2"):
        csr.user_entries(np.array([0, 1, 2]), np.ones(3), cfg)
    with pytest.raises(ValueError, match="distinct indices"):
        csr.user_entries(np.array([0, 0]), np.ones(2), cfg)
    items, neg_r, w = csr.user_entries(np.array([3]), np.array([5.0]), cfg)
    assert items.size == 2 and w.sum() == 1 and neg_r[w == 1][0] == -2.0
    with pytest.raises(TypeError):  # no way to hand in a (seeded) generator for dummies
        csr.user_entries(np.array([3]), np.array([5.0]), cfg, np.random.default_rng(0))  # type: ignore[call-arg]


def test_twin_slots_rebuild_the_users_entries() -> None:
    cfg = csr.CsrFheMFConfig(
        job_id="t", n_users=2, n_items=6, hide_pattern=True, pad_to=4, item_norm=1.0
    )
    ratings = {0: (np.array([5, 1]), np.array([4.0, 2.0])), 1: (np.array([0]), np.array([5.0]))}
    entries = [csr.user_entries(*ratings[u], cfg) for u in range(2)]
    layout = SlotLayout(
        np.repeat(np.arange(2), 4), np.concatenate([e[0] for e in entries]), 2, 6, 4096
    )
    users = np.array([0, 0, 1])
    items = np.concatenate([ratings[0][0], ratings[1][0]])
    values = np.concatenate([ratings[0][1], ratings[1][1]])
    neg_r, w = csr.twin_slots(layout, users, items, values, cfg)
    assert np.array_equal(neg_r, np.concatenate([e[1] for e in entries]))
    assert np.array_equal(w, np.concatenate([e[2] for e in entries]))
    absent = np.setdiff1d(np.arange(6), entries[1][0])[0]  # not in user 1's structure
    with pytest.raises(ValueError, match="not these users' structure"):
        csr.twin_slots(layout, users, np.array([5, 1, absent]), values, cfg)


def test_layout_bytes_round_trip() -> None:
    layout = SlotLayout(np.array([0, 0, 1, 2]), np.array([1, 3, 0, 2]), 3, 4, 4096)
    back = SlotLayout.from_bytes(layout.to_bytes())
    assert np.array_equal(back.slot_users, layout.slot_users)
    assert np.array_equal(back.slot_items, layout.slot_items)
    with pytest.raises(ValueError, match="slot layout bytes have length"):
        SlotLayout.from_bytes(layout.to_bytes()[:-1])
