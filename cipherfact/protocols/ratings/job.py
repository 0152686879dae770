"""Run a csr_fhe_mf or fedmf scenario in memory and write its results folder.

Output: ``summary.json``, ``metrics.jsonl`` (one line per epoch, appended and
flushed as it goes), ``rmse.png`` and ``bytes.png``. A failed run still writes
``summary.json`` with ``status`` saying why.

RMSE is measured outside the protocol: for csr_fhe_mf by combining the CSP's
masked factors with RS's masks (a measurement hook no party has), for fedmf
from the users' vectors and the server's Enc(V) decrypted with the users' key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.traffic import TrafficStats
from cipherfact.data.ratings import (
    Ratings,
    RatingsSplit,
    load_ratings,
    load_train_test,
    split_last_k,
    split_random,
    synthetic_ratings,
)
from cipherfact.protocols.base import Profiler
from cipherfact.protocols.ratings.scenario import CsrFheMFScenario, FedMFScenario, RatingsSpec
from cipherfact.simulations.results import RunWriter, machine_info, package_versions
from cipherfact.simulations.scenario import ScenarioError, run_label, scenario_to_dict
from cipherfact.solvers.ratings import fit_ratings_mf
from cipherfact.solvers.ratings import rmse as mf_rmse

__all__ = ["RecsysRun", "check_ratings", "load_split", "rating_bound"]


def load_split(spec: RatingsSpec, seed: int) -> RatingsSplit:
    """The scenario's train/test ratings (synthetic, one file split, or two files)."""
    rng = np.random.default_rng([seed, 0x5254])
    cols = {
        "user_col": spec.user_col or None,
        "item_col": spec.item_col or None,
        "rating_col": spec.rating_col or None,
        "timestamp_col": spec.timestamp_col or None,
    }
    try:
        if spec.source == "explicit":
            return load_train_test(spec.train, spec.test, fmt=spec.format, **cols)  # type: ignore[arg-type]
        if spec.source == "file":
            ratings = load_ratings(spec.path, fmt=spec.format, **cols)  # type: ignore[arg-type]
        elif spec.generator == "movielens":
            from cipherfact.data.synthetic_ratings import movielens_like_ratings

            ratings = movielens_like_ratings(
                rng,
                n_users=spec.n_users,
                n_items=spec.n_items,
                n_ratings=round(spec.density * spec.n_users * spec.n_items),
                rank=spec.rank,
                noise=spec.noise,
                scale=(spec.scale_low, spec.scale_high),
            )
        else:
            ratings = synthetic_ratings(
                spec.n_users,
                spec.n_items,
                spec.rank,
                spec.density,
                rng=rng,
                noise=spec.noise,
                scale=(spec.scale_low, spec.scale_high),
            )
        if spec.split == "last_k":
            return split_last_k(ratings, spec.last_k)
        return split_random(ratings, spec.test_fraction, rng)
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"data: {exc}") from exc


def rating_bound(scenario: CsrFheMFScenario | FedMFScenario) -> tuple[float, str, str]:
    """Largest |rating - rating_offset| the protocol's arithmetic carries, the bound
    as a formula of the scenario's fields, and the field to change.

    A coarse bound that names an absurd rating (and keeps every test RMSE finite);
    the exact check of a run's numbers is the twin pre-flight (``csr_config``,
    ``fedmf_config``). csr_fhe_mf: the masks hide values up to
    ``crypto.value_bound`` (the planner's bound), and the first residuals are the
    ratings' distance from the offset. fedmf: the users' updates are Paillier
    fixed point with ``crypto.int_bits`` integer bits, one kept as headroom; a
    residual beyond that range cannot be fitted with values it carries.
    """
    if isinstance(scenario, CsrFheMFScenario):
        return scenario.crypto.value_bound, "crypto.value_bound", "raise crypto.value_bound"
    return (
        2.0 ** (scenario.crypto.int_bits - 1),
        "2**(crypto.int_bits - 1)",
        "raise crypto.int_bits",
    )


def _check_values(scenario: CsrFheMFScenario | FedMFScenario, data: Ratings, what: str) -> None:
    """Every rating within ``rating_bound`` of the offset (so metrics stay finite too)."""
    if data.n_ratings == 0:
        return
    bound, formula, fix = rating_bound(scenario)
    deviation = np.abs(data.values - scenario.rating_offset)
    k = int(np.argmax(deviation))
    if not deviation[k] <= bound:  # also refuses nan
        raise ScenarioError(
            f"{scenario.protocol}: {what} rating {data.values[k]:g} (user "
            f"{data.user_ids[data.users[k]]}, item {data.item_ids[data.items[k]]}) lies "
            f"{deviation[k]:g} from rating_offset = {scenario.rating_offset:g}; at most "
            f"{formula} = {bound:g} is allowed: rescale the ratings, set rating_offset or {fix}"
        )


def check_ratings(scenario: CsrFheMFScenario | FedMFScenario, split: RatingsSplit) -> None:
    """The data checks of a recommendation run, before any key: ratings within the
    protocol's bound (``rating_bound``), at least one test rating (else every test
    RMSE would be nan)."""
    _check_values(scenario, split.train, "training")
    _check_values(scenario, split.test, "test")
    if split.test.n_ratings == 0:
        dropped = (
            f" ({split.n_dropped_test} dropped: their user or item is not in data.train)"
            if split.n_dropped_test
            else ""
        )
        raise ScenarioError(
            f"{scenario.protocol}: the split leaves no test rating{dropped}; every test RMSE "
            "would be undefined"
        )


#: Largest expected number of out-of-range masked values a csr_fhe_mf run may have
#: (``_csr_preflight``): above it the CSP or RS would likely stop the run halfway.
CSR_MAX_EXPECTED_STOPS = 0.01


def _csr_preflight(scenario: CsrFheMFScenario, train: Ratings, cfg: Any) -> None:
    """Run the plaintext twin before any key and refuse a run the CSP or RS would stop.

    The protocol computes the twin's numbers (up to CKKS's ``max_error``). A
    gradient g is sent as g + m with m uniform in +-2**(value_bits + mask_bits),
    and the CSP stops the run when |g + m| > 2**value_bits * (2**mask_bits + 1):
    for |g| = 2**value_bits + d that happens with probability d / 2**(value_bits +
    mask_bits + 1); the factors likewise against ``factor_bound`` and
    ``factor_mask_bits``. The sum of these probabilities over the run is the
    expected number of stops; above ``CSR_MAX_EXPECTED_STOPS`` the run is refused
    (the bundled scenario's brief overshoot in epochs 16-17 sums to ~1e-6; a
    diverging run to far more than 1). With ``hide_pattern`` the real structure
    has secret dummy slots; the pre-flight runs without them.
    """
    planned = cfg.plan()
    gbound, fbound = 2.0**planned.value_bits, 2.0**planned.factor_bits
    gwidth = 2.0 ** (planned.value_bits + planned.mask_bits + 1)
    fwidth = 2.0 ** (planned.factor_bits + planned.factor_mask_bits + 1)
    structures = [np.sort(_by_user(train, u)[0]) for u in range(cfg.n_users)]
    order = np.lexsort((train.items, train.users))
    users, items = train.users[order], train.items[order]
    neg_r = -(train.values[order] - cfg.rating_offset)
    expected = 0.0
    worst = (0.0, 0, "gradient")
    with np.errstate(all="ignore"):
        twin, _ = csr_twin(train, cfg, csr_layout(cfg, structures))
        states = [cfg.initial_factors(), *twin]
        for epoch, (U, V) in enumerate(states):
            factors = np.abs(np.concatenate([U.ravel(), V.ravel()]))
            checks = [(factors, fbound, fwidth, "factor")]
            if epoch < len(twin):
                ne = np.einsum("sf,sf->s", U[users], V[items]) + neg_r
                grads = np.abs(ne[:, None] * np.hstack([U[users], V[items]]))
                checks.append((grads.ravel(), gbound, gwidth, "gradient"))
            for values, bound, width, what in checks:
                peak = float(np.max(values))
                if not np.isfinite(peak):
                    expected, worst = float("inf"), (peak, epoch, what)
                    break
                expected += float(np.sum(np.maximum(values - bound, 0.0))) / width
                if peak / bound > worst[0] / (gbound if worst[2] == "gradient" else fbound):
                    worst = (peak, epoch, what)
            if not expected <= CSR_MAX_EXPECTED_STOPS:
                break
    if not expected <= CSR_MAX_EXPECTED_STOPS:
        peak, epoch, what = worst
        field = "crypto.value_bound" if what == "gradient" else "crypto.factor_bound"
        bound = cfg.value_bound if what == "gradient" else cfg.factor_bound
        raise ScenarioError(
            f"csr_fhe_mf: the plaintext twin (run before any key) has a {what} of "
            f"{peak:.3g} in epoch {epoch}, beyond {field} = {bound:g}; the masks would not "
            f"cover it and the run would stop (expected stops {expected:.3g} > "
            f"{CSR_MAX_EXPECTED_STOPS:g}): lower lr, rescale the ratings or raise {field}"
        )


def _fedmf_preflight(scenario: FedMFScenario, train: Ratings, cfg: Any) -> None:
    """Run FedMF's float twin before any key: every value the users encrypt (the
    gradients; the server's initial V) must fit the fixed point's integer range.

    The protocol computes the same numbers up to 2**-frac_bits; one integer bit is
    kept as headroom for that rounding: |value| < 2**(crypto.int_bits - 1).
    """
    from cipherfact.protocols.fedmf import roles as fedmf

    limit = 2.0 ** (cfg.int_bits - 1)
    if not abs(cfg.init_value) < limit:
        raise ScenarioError(
            f"fedmf: |init_value| = {abs(cfg.init_value):g} must be < 2**(crypto.int_bits - 1) "
            f"= {limit:g} (the fixed point's range): lower init_value or raise crypto.int_bits"
        )
    U = np.full((cfg.n_users, cfg.n_factors), cfg.init_value)
    V = np.full((cfg.n_items, cfg.n_factors), cfg.init_value)
    per_user = []
    for u in range(cfg.n_users):
        items, values = _by_user(train, u)
        order = np.argsort(items, kind="stable")
        per_user.append((items[order], values[order]))
    with np.errstate(all="ignore"):
        for epoch in range(cfg.epochs):
            for u, (items, values) in enumerate(per_user):
                U[u], grads = fedmf.user_update(U[u], V, items, values, cfg)
                for j, g in grads.items():
                    peak = float(np.max(np.abs(g)))
                    if not peak < limit:
                        raise ScenarioError(
                            f"fedmf: user {train.user_ids[u]}'s update of item "
                            f"{train.item_ids[j]} reaches {peak:.3g} in epoch {epoch} (float "
                            f"twin, before any key), not below 2**(crypto.int_bits - 1) = "
                            f"{limit:g}: lower lr, rescale the ratings or raise crypto.int_bits"
                        )
                    V[j] = V[j] - g


def _rmse(U: np.ndarray, V: np.ndarray, data: Ratings, offset: float) -> float:
    if data.n_ratings == 0:
        return float("nan")
    pred = offset + np.einsum("sf,sf->s", U[data.users], V[data.items])
    return float(np.sqrt(np.mean((data.values - pred) ** 2)))


def epoch_rmse(
    factors: tuple[np.ndarray, np.ndarray],
    twin: tuple[np.ndarray, np.ndarray],
    train: Ratings,
    test: Ratings,
    offset: float,
) -> dict[str, float]:
    """One epoch's train/test RMSE of the protocol's factors and of the plaintext twin's
    (the fields every backend writes into ``metrics.jsonl``)."""
    return {
        "train_rmse": _rmse(*factors, train, offset),
        "test_rmse": _rmse(*factors, test, offset),
        "plain_train_rmse": _rmse(*twin, train, offset),
        "plain_test_rmse": _rmse(*twin, test, offset),
    }


def _by_user(data: Ratings, u: int) -> tuple[np.ndarray, np.ndarray]:
    mask = data.users == u
    return data.items[mask], data.values[mask]


@dataclass
class RecsysRun:
    """A built job: roles, party groups, the twin's curve (None for csr_fhe_mf: the
    twin follows the structure the users actually send, so the runner asks the CSP
    for it after the setup) and the facts ``summary.json`` reports."""

    roles: dict[AgentId, Any]
    profilers: dict[str, Profiler]
    groups: dict[AgentId, str]
    twin: list[tuple[np.ndarray, np.ndarray]] | None
    offset: float
    epochs: int
    info: dict[str, Any]


def csr_config(scenario: CsrFheMFScenario, train: Ratings) -> Any:
    """The protocol's ``CsrFheMFConfig`` for a scenario and its training ratings.

    Every party derives the same config from the scenario alone (the padding
    length is the public maximum of ratings per user), so a deployed party
    needs no message to agree on it.
    """
    pad = scenario.crypto.pad_to or int(np.bincount(train.users, minlength=train.n_users).max())
    # with hide_pattern and item_norm = 0: the largest item's count (made public, like pad)
    norm = scenario.item_norm or (
        float(np.bincount(train.items, minlength=train.n_items).max())
        if scenario.crypto.hide_pattern
        else 0.0
    )
    return _checked_csr_config(
        scenario, train, csr_config_for(scenario, train.n_users, train.n_items, pad, norm)
    )


def csr_config_for(
    scenario: CsrFheMFScenario, n_users: int, n_items: int, pad: int, item_norm: float = -1.0
) -> Any:
    """``csr_config`` from the public sizes alone (a deployment whose users keep their
    ratings on their own machines); ``pad`` matters only with ``hide_pattern``,
    ``item_norm`` (default: the scenario's) is the public item step divisor."""
    from cipherfact.protocols.csr_fhe_mf import roles as csr

    c = scenario.crypto
    try:
        cfg = csr.CsrFheMFConfig(
            job_id=scenario.name,
            n_users=n_users,
            n_items=n_items,
            n_factors=scenario.n_factors,
            epochs=scenario.epochs,
            lr=scenario.lr,
            reg=scenario.reg,
            init_scale=scenario.init_scale,
            init_seed=scenario.seed,
            rating_offset=scenario.rating_offset,
            mask_bits=c.mask_bits,
            value_bound=c.value_bound,
            factor_mask_bits=c.factor_mask_bits,
            factor_bound=c.factor_bound,
            max_error=c.max_error,
            ckks_params=c.params,
            hide_pattern=c.hide_pattern,
            pad_to=pad if c.hide_pattern else 0,
            item_norm=scenario.item_norm if item_norm < 0 else item_norm,
        )
        cfg.plan()
    except ValueError as exc:  # includes InsecureParameterError from the planner
        raise ScenarioError(f"csr_fhe_mf: {exc}") from exc
    return cfg


def _checked_csr_config(scenario: CsrFheMFScenario, train: Ratings, cfg: Any) -> Any:
    _check_values(scenario, train, "training")
    _csr_preflight(scenario, train, cfg)
    return cfg


def csr_user(
    scenario: CsrFheMFScenario,
    train: Ratings,
    cfg: Any,
    u: int,
    profiler: Profiler | None = None,
) -> Any:
    """User ``u``'s role, holding only its own ratings (built alike by every backend).

    With ``hide_pattern`` the user draws its dummy items from the OS CSPRNG
    itself; nothing here seeds them (RS could replay a seeded draw)."""
    from cipherfact.crypto.ckks import load_public_ckks
    from cipherfact.protocols.csr_fhe_mf import roles as csr

    items, values = _by_user(train, u)
    return csr.CsrUser(u, items, values, cfg, load_public_ckks, profiler=profiler)


def csr_layout(cfg: Any, structures: list[np.ndarray]) -> Any:
    """The public slot layout from the users' item lists, in user order (as RS builds it)."""
    from cipherfact.protocols.csr_fhe_mf.layout import SlotLayout

    return SlotLayout(
        np.repeat(np.arange(cfg.n_users, dtype=np.int64), [s.size for s in structures]),
        np.concatenate(structures).astype(np.int64),
        cfg.n_users,
        cfg.n_items,
        cfg.plan().params.slot_count,
    )


def csr_twin(
    train: Ratings, cfg: Any, layout: Any
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """The plaintext twin's factors after every epoch, and the slot layout's sizes.

    ``layout`` is the public structure the users actually sent (their padded item
    lists with ``hide_pattern``): the dummies are secret random draws, so the twin
    reads them from there instead of drawing its own."""
    from cipherfact.protocols.csr_fhe_mf import roles as csr

    neg_r, weights = csr.twin_slots(layout, train.users, train.items, train.values, cfg)
    twin: list[tuple[np.ndarray, np.ndarray]] = []
    csr.run_twin(layout, neg_r, weights, cfg, lambda _e, U, V: twin.append((U.copy(), V.copy())))
    return twin, {"slots_used": layout.nnz, "chunks": layout.n_chunks}


def csr_info(
    cfg: Any, scheme_description: Any, train: Ratings, sizes: dict[str, int]
) -> dict[str, Any]:
    """The parameter facts of a csr_fhe_mf job that ``summary.json`` reports."""
    planned = cfg.plan()
    return {
        "ckks_params": planned.name,
        "ckks": scheme_description,
        "depth": planned.depth,
        "mask_bits": cfg.mask_bits,
        "factor_mask_bits": cfg.factor_mask_bits,
        "predicted_error": planned.predicted_error,
        "hide_pattern": cfg.hide_pattern,
        "pad_to": cfg.pad_to,
        "slots_used": sizes["slots_used"],
        "real_ratings": train.n_ratings,
        "chunks": sizes["chunks"],
    }


def build_csr(scenario: CsrFheMFScenario, split: RatingsSplit) -> RecsysRun:
    """Keys, roles and the plaintext twin of a csr_fhe_mf job."""
    from cipherfact.crypto.ckks import load_public_ckks, make_ckks_scheme
    from cipherfact.protocols.csr_fhe_mf import roles as csr

    train = split.train
    cfg = csr_config(scenario, train)
    scheme = make_ckks_scheme(cfg.plan().params)
    profs = {"rs": Profiler(), "csp": Profiler(), "users": Profiler()}
    rs = csr.RecommenderServer(cfg, load_public_ckks, profs["rs"])
    csp = csr.CryptoServiceProvider(cfg, scheme, profs["csp"])
    roles: dict[AgentId, Any] = {csr.RS_ID: rs, csr.CSP_ID: csp}
    groups = {csr.RS_ID: "rs", csr.CSP_ID: "csp"}
    for u in range(cfg.n_users):
        roles[csr.user_id(u)] = csr_user(scenario, train, cfg, u, profs["users"])
        groups[csr.user_id(u)] = "users"
    structures = [roles[csr.user_id(u)].structure for u in range(cfg.n_users)]
    layout = csr_layout(cfg, structures)
    sizes = {"slots_used": layout.nnz, "chunks": layout.n_chunks}
    info = csr_info(cfg, scheme.describe(), train, sizes)
    return RecsysRun(roles, profs, groups, None, cfg.rating_offset, cfg.epochs, info)


def fedmf_config(scenario: FedMFScenario, train: Ratings) -> Any:
    """The protocol's ``FedMFConfig`` for a scenario and its training ratings."""
    from cipherfact.protocols.fedmf import roles as fedmf

    try:
        cfg = fedmf.FedMFConfig(
            job_id=scenario.name,
            n_users=train.n_users,
            n_items=train.n_items,
            n_factors=scenario.n_factors,
            epochs=scenario.epochs,
            mode=scenario.mode,
            lr=scenario.lr,
            reg_u=scenario.reg_u,
            reg_v=scenario.reg_v,
            init_value=scenario.init_value,
            rating_offset=scenario.rating_offset,
            frac_bits=scenario.crypto.frac_bits,
            int_bits=scenario.crypto.int_bits,
        )
        fedmf.fedmf_codec(cfg)  # validates the slot layout
    except ValueError as exc:
        raise ScenarioError(f"fedmf: {exc}") from exc
    _check_values(scenario, train, "training")
    _fedmf_preflight(scenario, train, cfg)
    return cfg


def build_fedmf(scenario: FedMFScenario, split: RatingsSplit) -> RecsysRun:
    """Shared key pair, server and users of a FedMF job, and its float reference."""
    from cipherfact.crypto import PaillierOptions, generate_scheme, load_public_scheme
    from cipherfact.protocols.fedmf import roles as fedmf

    train, c = split.train, scenario.crypto
    cfg = fedmf_config(scenario, train)
    codec = fedmf.fedmf_codec(cfg)
    options = PaillierOptions(packing=not c.naive)
    key = generate_scheme(
        c.scheme,
        codec=codec,
        key_bits=c.key_bits,
        insecure_test_keys=c.insecure_test_keys,
        options=options,
    )

    def load_public(data: bytes) -> Any:
        return load_public_scheme(
            c.scheme,
            data,
            codec=codec,
            options=options,
            min_key_bits=c.key_bits,  # check_peer_key: the shared key meets the job's size
            **({"insecure_test_keys": c.insecure_test_keys} if c.scheme == "paillier" else {}),
        )

    profs = {"server": Profiler(), "users": Profiler()}
    server = fedmf.FedMFServer(cfg, load_public, profs["server"])
    roles: dict[AgentId, Any] = {fedmf.SERVER_ID: server}
    groups = {fedmf.SERVER_ID: "server"}
    users = []
    for u in range(cfg.n_users):
        items, values = _by_user(train, u)
        user = fedmf.FedMFUser(
            u, items, values, cfg, key, send_key=(u == 0), profiler=profs["users"]
        )
        users.append(user)
        roles[fedmf.user_id(u)] = user
        groups[fedmf.user_id(u)] = "users"
    twin = fedmf.fedmf_reference(train.users, train.items, train.values, cfg)

    info = {
        "mode": cfg.mode,
        "naive": c.naive,
        "scheme": c.scheme,
        "key_bits": c.key_bits,
        "items_per_ciphertext": users[0].blocks.per,
        "slot_bits": codec.slot_bits,
    }
    return RecsysRun(roles, profs, groups, twin, cfg.rating_offset, cfg.epochs, info)


def party_bytes(stats: TrafficStats, groups: dict[AgentId, str]) -> dict[str, dict[str, int]]:
    """Bytes sent and received per party group ("rs", "csp", "users", ...)."""
    out: dict[str, dict[str, int]] = {}
    for agent, group in groups.items():
        entry = out.setdefault(group, {"sent": 0, "received": 0})
        entry["sent"] += stats.bytes_sent_by(agent)
        entry["received"] += stats.bytes_received_by(agent)
    return out


def summary_header(
    scenario: Any, backend: str, split: RatingsSplit, info: dict[str, Any]
) -> dict[str, Any]:
    """The fields of ``summary.json`` known before training; shared by every backend."""
    train, test = split.train, split.test
    return {
        "protocol": scenario.protocol,
        "scenario": scenario_to_dict(scenario),
        "backend": backend,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "train_ratings": train.n_ratings,
        "test_ratings": test.n_ratings,
        "dropped_test_ratings": split.n_dropped_test,
        **info,
        "machine": machine_info(),
        "versions": package_versions(),
        "status": "running",
    }


def finish_summary(
    summary: dict[str, Any],
    scenario: Any,
    train: Ratings,
    test: Ratings,
    metrics: list[dict[str, Any]],
    writer: RunWriter,
    *,
    wall_s: float,
    setup_s: float,
    setup_bytes: int,
    stats: Any,
    bytes_per_party: dict[str, Any],
    seconds_per_party: dict[str, float],
) -> dict[str, Any]:
    """Complete ``summary.json`` and draw the plots; shared by every backend."""
    last = metrics[-1]
    summary.update(
        status="completed",
        epochs=len(metrics),
        train_rmse=last["train_rmse"],
        test_rmse=last["test_rmse"],
        plain_train_rmse=last["plain_train_rmse"],
        plain_test_rmse=last["plain_test_rmse"],
        wall_s=wall_s,
        setup_s=setup_s,
        seconds_per_epoch=sum(m["wall_s"] for m in metrics) / len(metrics),
        bytes_setup=setup_bytes,
        bytes_total=stats.bytes_total,
        bytes_per_epoch=sum(m["bytes"] for m in metrics) / len(metrics),
        bytes_per_party=bytes_per_party,
        seconds_per_party=seconds_per_party,
        traffic=stats.to_dict(),
    )
    # A plaintext ALS reference needs rank <= min(users, items); tiny jobs skip it.
    if (
        test.n_ratings
        and scenario.protocol == "csr_fhe_mf"
        and scenario.n_factors <= min(train.n_users, train.n_items)
    ):
        R = train.to_csr()
        ref = fit_ratings_mf(
            R, scenario.n_factors, method="als", biases=True, epochs=10, seed=scenario.seed
        )
        summary["mf_reference_test_rmse"] = mf_rmse(ref, _test_csr(test, R.shape))
    writer.write_json("summary.json", summary)
    title = f"{run_label(scenario)}: {train.n_users} users, {train.n_items} items"
    _plot_rmse(
        writer.out_dir / "rmse.png",
        {
            f"{scenario.protocol} test": [m["test_rmse"] for m in metrics],
            "plaintext twin test": [m["plain_test_rmse"] for m in metrics],
            f"{scenario.protocol} train": [m["train_rmse"] for m in metrics],
        },
        title,
    )
    _plot_party_bytes(writer.out_dir / "bytes.png", summary["bytes_per_party"], title)
    return summary


def _test_csr(test: Ratings, shape: tuple[int, int]) -> Any:
    import scipy.sparse as sp

    return sp.csr_matrix((test.values, (test.users, test.items)), shape=shape)


def _plot_rmse(path: Path, curves: dict[str, list[float]], title: str) -> None:
    """RMSE per epoch, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_party_bytes(path: Path, per_party: dict[str, dict[str, int]], title: str) -> None:
    """Bars of MB sent and received per party group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_party)
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.bar(xs - 0.2, [per_party[n]["sent"] / 1e6 for n in names], 0.4, label="sent")
    ax.bar(xs + 0.2, [per_party[n]["received"] / 1e6 for n in names], 0.4, label="received")
    ax.set_xticks(xs, names)
    ax.set_ylabel("MB (whole run)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
