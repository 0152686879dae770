"""Benchmark (issue 18): csr_fhe_mf's bytes per rating, lever by lever, and at MovieLens size.

Phases (``--phase``, repeatable; default all), every figure measured in this
process on the same data and factors:

* ``levers``: one epoch of csr_fhe_mf per wire lever, cumulatively switched on
  (before -> users get the encryption key only -> seeded refresh -> uploads
  mod-switched), on the bundled 100 x 300 data and at ml-latest-small's shape.
  Bytes per epoch are the same every epoch (same structure, same ciphertext
  levels), so one epoch measures them; setup bytes are per user.
* ``movielens``: csr_fhe_mf (all levers) for ``--epochs`` epochs at
  ml-latest-small's shape (synthetic, ``csr-movielens-size``): seconds and bytes
  per epoch, RMSE against its plaintext twin; then packed FedMF-full with the
  same factors on the same ratings for the first ``--fedmf-users`` users of
  one epoch. FedMF-full sends every user the same messages (all items, packed),
  so the epoch's bytes are the measured per-user bytes times the users, exactly;
  its seconds are extrapolated linearly in users (stated in the output).
* ``density``: 100 x 300 at several densities, one epoch each: csr_fhe_mf bytes
  vs packed FedMF-full (measured at one density; it does not depend on it).
* ``hide``: 100 x 300, hide_pattern vs not with the same public item divisor:
  RMSE of both (and of their twins), seconds and bytes per epoch, cost factor.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/csr_bytes.py --out /tmp/csr-bytes
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.crypto import PaillierOptions, generate_scheme, load_public_scheme
from cipherfact.crypto.ckks import load_public_ckks, make_ckks_scheme
from cipherfact.data.ratings import Ratings
from cipherfact.protocols.base import Profiler
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.protocols.ratings.job import csr_config, fedmf_config, load_split
from cipherfact.simulations.engine import InMemoryEngine
from cipherfact.simulations.results import machine_info, package_versions
from cipherfact.simulations.scenario import load_scenario

LEVERS = [
    ("before", dict(seeded_refresh=False, mod_switch_uploads=False), True),
    (
        "+ users get the encryption key only",
        dict(seeded_refresh=False, mod_switch_uploads=False),
        False,
    ),
    ("+ seeded refresh (CSP -> RS)", dict(seeded_refresh=True, mod_switch_uploads=False), False),
    (
        "+ uploads mod-switched (users -> RS)",
        dict(seeded_refresh=True, mod_switch_uploads=True),
        False,
    ),
]


def _rmse(U: np.ndarray, V: np.ndarray, data: Ratings, offset: float) -> float:
    pred = offset + np.einsum("sf,sf->s", U[data.users], V[data.items])
    return float(np.sqrt(np.mean((data.values - pred) ** 2)))


def run_csr(
    train: Ratings,
    test: Ratings,
    cfg: csr.CsrFheMFConfig,
    epochs: int,
    *,
    users_get_evaluation_keys: bool = False,
) -> dict[str, Any]:
    """Setup and ``epochs`` epochs of csr_fhe_mf in memory: bytes per stage, seconds, RMSE.

    ``users_get_evaluation_keys`` re-creates the state before issue 18 (the CSP
    sent its evaluation context, relinearization keys included, to every user).
    """
    scheme = make_ckks_scheme(cfg.plan().params)
    profs = {"rs": Profiler(), "csp": Profiler(), "users": Profiler()}
    rs = csr.RecommenderServer(cfg, load_public_ckks, profs["rs"])
    csp = csr.CryptoServiceProvider(cfg, scheme, profs["csp"])
    roles: dict[int, Any] = {csr.RS_ID: rs, csr.CSP_ID: csp}
    for u in range(cfg.n_users):
        m = train.users == u
        roles[csr.user_id(u)] = csr.CsrUser(
            u, train.items[m], train.values[m], cfg, load_public_ckks, profiler=profs["users"]
        )
    engine = InMemoryEngine(roles)
    if users_get_evaluation_keys:
        start = csp.start

        def old_start() -> list[Any]:
            return [
                e if e.receiver == csr.RS_ID else replace(e, payload=scheme.public_bytes())
                for e in start()
            ]

        csp.start = old_start  # type: ignore[method-assign]
    t0 = time.perf_counter()
    engine.start()
    setup_s = time.perf_counter() - t0
    setup = dict(engine.stats.bytes_by_stage)
    for p in profs.values():
        p.take()
    per_epoch = []
    for _ in range(epochs):
        before = dict(engine.stats.bytes_by_stage)
        t0 = time.perf_counter()
        engine.run_outer()
        wall = time.perf_counter() - t0
        (AU, AV), (MU, MV) = csp.masked_factors(), rs.factor_masks()
        per_epoch.append(
            {
                "wall_s": wall,
                "party_s": {k: sum(p.take().values()) for k, p in profs.items()},
                "bytes": {
                    k: v - before.get(k, 0)
                    for k, v in engine.stats.bytes_by_stage.items()
                    if v - before.get(k, 0)
                },
                "test_rmse": _rmse(AU - MU, AV - MV, test, cfg.rating_offset),
                "train_rmse": _rmse(AU - MU, AV - MV, train, cfg.rating_offset),
            }
        )
    assert rs.layout is not None
    neg_r, w = csr.twin_slots(rs.layout, train.users, train.items, train.values, cfg)
    twin: list[float] = []
    csr.run_twin(
        rs.layout, neg_r, w, cfg, lambda _e, U, V: twin.append(_rmse(U, V, test, cfg.rating_offset))
    )
    epoch_bytes = [sum(e["bytes"].values()) for e in per_epoch]
    return {
        "ckks_params": cfg.plan().name,
        "n_factors": cfg.n_factors,
        "users": cfg.n_users,
        "items": cfg.n_items,
        "train_ratings": train.n_ratings,
        "slots": rs.layout.nnz,
        "chunks": rs.layout.n_chunks,
        "setup_s": setup_s,
        "setup_bytes_by_stage": setup,
        "setup_bytes_per_user": (
            setup.get("context", 0) - len(scheme.public_bytes()) + setup.get("ratings", 0)
        )
        / cfg.n_users,
        "context_bytes_rs": len(scheme.public_bytes()),
        "context_bytes_user": (setup.get("context", 0) - len(scheme.public_bytes())) / cfg.n_users,
        "upload_bytes_per_user": setup.get("ratings", 0) / cfg.n_users,
        "epochs": per_epoch,
        "epoch_bytes_by_stage": per_epoch[-1]["bytes"],
        "bytes_per_epoch": float(np.mean(epoch_bytes)),
        "bytes_per_rating_per_epoch": float(np.mean(epoch_bytes)) / train.n_ratings,
        "seconds_per_epoch": float(np.mean([e["wall_s"] for e in per_epoch])),
        "test_rmse": per_epoch[-1]["test_rmse"],
        "twin_test_rmse": twin[epochs - 1] if len(twin) >= epochs else twin[-1],
    }


def fedmf_full_partial(
    scenario: Any, train_split: Any, n_users_run: int, key_bits: int
) -> dict[str, Any]:
    """Epoch 0 of packed FedMF-full for the first ``n_users_run`` users: per-user bytes, seconds."""
    train = train_split.train
    cfg = fedmf_config(scenario, train)
    codec = fedmf.fedmf_codec(cfg)
    options = PaillierOptions(packing=True)
    key = generate_scheme("paillier", codec=codec, key_bits=key_bits, options=options)
    server = fedmf.FedMFServer(
        cfg, lambda b: load_public_scheme("paillier", b, codec=codec, options=options)
    )
    roles: dict[int, Any] = {fedmf.SERVER_ID: server}
    for u in range(cfg.n_users):
        m = train.users == u
        roles[fedmf.user_id(u)] = fedmf.FedMFUser(
            u, train.items[m], train.values[m], cfg, key, send_key=(u == 0)
        )
    engine = InMemoryEngine(roles)
    engine.start()  # key + Enc(V0): setup
    base = {u: _user_bytes(engine, u) for u in range(cfg.n_users)}
    t0 = time.perf_counter()
    engine.agents[fedmf.SERVER_ID].send(server.begin_outer())
    while server._turn is not None and server._turn < n_users_run:
        for agent in engine.agents.values():
            agent.poll()
    wall = time.perf_counter() - t0
    done = server._turn if server._turn is not None else cfg.n_users
    per_user = [_user_bytes(engine, u) - base[u] for u in range(done)]
    if len(set(per_user)) != 1:
        raise RuntimeError(f"FedMF-full per-user bytes differ: {sorted(set(per_user))}")
    return {
        "users_run": done,
        "n_users": cfg.n_users,
        "items_per_ciphertext": roles[fedmf.user_id(0)].blocks.per,
        "measured_wall_s": wall,
        "bytes_per_user": per_user[0],
        "bytes_per_epoch": per_user[0] * cfg.n_users,
        "seconds_per_epoch_extrapolated": wall * cfg.n_users / done,
    }


def _user_bytes(engine: InMemoryEngine, u: int) -> int:
    a = fedmf.user_id(u)
    return engine.stats.bytes_sent_by(a) + engine.stats.bytes_received_by(a)


def _data(
    name: str, overrides: list[str], seed_overrides: list[str] | None = None
) -> tuple[Any, Any]:
    scenario = load_scenario(name, overrides)
    return scenario, load_split(scenario.data, scenario.seed)


def phase_levers(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shapes = {
        "100x300": ("100x300 10%", "csr-fhe-mf-synthetic"),
        "ml": ("ml-latest-small shape", "csr-movielens-size"),
    }
    for label, name in (shapes[k] for k in args.shapes):
        scenario, split = _data(name, [f"n_factors={args.factors}"])
        rows = []
        for lever, kw, old_keys in LEVERS:
            cfg = csr.CsrFheMFConfig(**{**_cfg_fields(csr_config(scenario, split.train)), **kw})
            r = run_csr(split.train, split.test, cfg, 1, users_get_evaluation_keys=old_keys)
            rows.append({"lever": lever, **r})
            print(
                label,
                lever,
                round(r["bytes_per_rating_per_epoch"], 1),
                round(r["setup_bytes_per_user"]),
            )
        out[label] = rows
    return out


def _cfg_fields(cfg: csr.CsrFheMFConfig) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def phase_movielens(args: argparse.Namespace) -> dict[str, Any]:
    scenario, split = _data(
        "csr-movielens-size", [f"n_factors={args.factors}", f"epochs={args.epochs}"]
    )
    cfg = csr_config(scenario, split.train)
    r = run_csr(split.train, split.test, cfg, args.epochs)
    print(
        "csr ml", r["seconds_per_epoch"], r["bytes_per_epoch"], r["test_rmse"], r["twin_test_rmse"]
    )
    fs = load_scenario(
        "fedmf-synthetic",
        [
            "epochs=1",
            "mode=full",
            f"n_factors={args.factors}",
            f"crypto.key_bits={args.key_bits}",
            "data.generator=movielens",
            "data.n_users=610",
            "data.n_items=9724",
            "data.density=0.017",
            "data.scale_low=0.5",
            "data.scale_high=5.0",
            "rating_offset=3.0",
        ],
    )
    fsplit = load_split(fs.data, scenario.seed)
    assert fsplit.train.n_ratings == split.train.n_ratings
    f = fedmf_full_partial(fs, fsplit, args.fedmf_users, args.key_bits)
    print("fedmf ml", f)
    return {
        "csr_fhe_mf": r,
        "fedmf_full_packed": f,
        "bytes_ratio_fedmf_over_csr": f["bytes_per_epoch"] / r["bytes_per_epoch"],
        "seconds_ratio_fedmf_over_csr": f["seconds_per_epoch_extrapolated"]
        / r["seconds_per_epoch"],
        "rmse_gap_to_twin": abs(r["test_rmse"] - r["twin_test_rmse"]),
    }


def phase_density(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for density in args.densities:
        scenario, split = _data(
            "csr-fhe-mf-synthetic", [f"n_factors={args.factors}", f"data.density={density}"]
        )
        r = run_csr(split.train, split.test, csr_config(scenario, split.train), 1)
        rows.append(
            {
                "density": density,
                "train_ratings": r["train_ratings"],
                "chunks": r["chunks"],
                "csr_bytes_per_epoch": r["bytes_per_epoch"],
                "csr_seconds_per_epoch": r["seconds_per_epoch"],
            }
        )
        print("density", rows[-1])
    fs = load_scenario(
        "fedmf-synthetic",
        ["epochs=1", "mode=full", f"n_factors={args.factors}", f"crypto.key_bits={args.key_bits}"],
    )
    f = fedmf_full_partial(fs, load_split(fs.data, fs.seed), args.fedmf_users, args.key_bits)
    for row in rows:
        row["fedmf_full_bytes_per_epoch"] = f["bytes_per_epoch"]
        row["ratio_csr_over_fedmf"] = row["csr_bytes_per_epoch"] / f["bytes_per_epoch"]
    return {"rows": rows, "fedmf_full_packed": f}


def phase_hide(args: argparse.Namespace) -> dict[str, Any]:
    scenario, split = _data(
        "csr-fhe-mf-synthetic", [f"n_factors={args.factors}", f"epochs={args.epochs}"]
    )
    train = split.train
    norm = float(np.bincount(train.items, minlength=train.n_items).max())
    base = _cfg_fields(csr_config(scenario, train))
    pad = int(np.bincount(train.users, minlength=train.n_users).max())
    plain = run_csr(
        train, split.test, csr.CsrFheMFConfig(**{**base, "item_norm": norm}), args.epochs
    )
    hide = run_csr(
        train,
        split.test,
        csr.CsrFheMFConfig(**{**base, "item_norm": norm, "hide_pattern": True, "pad_to": pad}),
        args.epochs,
    )
    jacobi = run_csr(train, split.test, csr.CsrFheMFConfig(**base), args.epochs)
    for r in (plain, hide, jacobi):
        r.pop("epochs")
    return {
        "item_norm": norm,
        "pad_to": pad,
        "not_hidden": plain,
        "hide_pattern": hide,
        "default_per_item_counts": jacobi,
        "rmse_diff": abs(plain["test_rmse"] - hide["test_rmse"]),
        "cost_factor_seconds": hide["seconds_per_epoch"] / plain["seconds_per_epoch"],
        "cost_factor_bytes": hide["bytes_per_epoch"] / plain["bytes_per_epoch"],
        "cost_factor_setup_bytes": hide["setup_bytes_per_user"] / plain["setup_bytes_per_user"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", action="append", choices=["levers", "movielens", "density", "hide"])
    p.add_argument("--factors", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fedmf-users", type=int, default=5)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--densities", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--shapes", nargs="+", choices=["100x300", "ml"], default=["100x300", "ml"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="csr-bytes-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    phases = args.phase or ["levers", "movielens", "density", "hide"]
    result: dict[str, Any] = {
        "machine": machine_info(),
        "versions": package_versions(),
        "args": vars(args) | {"out": str(out_dir)},
    }
    funcs = {
        "levers": phase_levers,
        "movielens": phase_movielens,
        "density": phase_density,
        "hide": phase_hide,
    }
    for phase in phases:
        t0 = time.perf_counter()
        result[phase] = funcs[phase](args)
        result[phase + "_wall_s"] = time.perf_counter() - t0
        (out_dir / "csr_bytes.json").write_text(json.dumps(result, indent=2, default=str))
    print(out_dir / "csr_bytes.json")


if __name__ == "__main__":
    main()
