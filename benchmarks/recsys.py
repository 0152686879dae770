"""Benchmark: csr_fhe_mf vs FedMF-full / FedMF-part (packed and naive) vs plaintext.

Same synthetic data for every method (the bundled scenarios' data section).
Each protocol runs through ``cipherfact simulate``'s runner in this process,
one after the other on the same machine. Naive FedMF-full (one value per
Paillier ciphertext, as the original) is too slow for whole epochs at 2048
bits, so it runs the first ``--naive-users`` users of epoch 0 and the
per-epoch figures are extrapolated linearly in users (every user's messages
have the same size in "full" mode); the table says so.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/recsys.py --epochs 20 --naive-users 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.crypto import PaillierOptions, generate_scheme, load_public_scheme
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.protocols.ratings.job import fedmf_config, load_split
from cipherfact.simulations.engine import InMemoryEngine
from cipherfact.simulations.results import machine_info, package_versions
from cipherfact.simulations.scenario import load_scenario
from cipherfact.simulations.simulate import simulate


def _rmse(U: np.ndarray, V: np.ndarray, data: Any, offset: float) -> float:
    pred = offset + np.einsum("sf,sf->s", U[data.users], V[data.items])
    return float(np.sqrt(np.mean((data.values - pred) ** 2)))


def naive_fedmf_partial(scenario: Any, n_users_run: int, key_bits: int) -> dict[str, float]:
    """Epoch 0 of naive FedMF for the first ``n_users_run`` users: seconds and bytes."""
    split = load_split(scenario.data, scenario.seed)
    train = split.train
    cfg = fedmf_config(scenario, train)
    codec = fedmf.fedmf_codec(cfg)
    options = PaillierOptions(packing=False)
    key = generate_scheme("paillier", codec=codec, key_bits=key_bits, options=options)
    server = fedmf.FedMFServer(
        cfg, lambda b: load_public_scheme("paillier", b, codec=codec, options=options)
    )
    roles: dict[int, Any] = {0: server}
    for u in range(cfg.n_users):
        m = train.users == u
        roles[fedmf.user_id(u)] = fedmf.FedMFUser(
            u, train.items[m], train.values[m], cfg, key, send_key=(u == 0)
        )
    engine = InMemoryEngine(roles)
    engine.start()  # key + Enc(V0): setup, not timed
    b0 = engine.stats.bytes_total
    t0 = time.perf_counter()
    engine.agents[0].send(server.begin_outer())
    while server._turn is not None and server._turn < n_users_run:
        for agent in engine.agents.values():
            agent.poll()
    wall = time.perf_counter() - t0
    done = server._turn if server._turn is not None else cfg.n_users
    return {
        "users_run": done,
        "n_users": cfg.n_users,
        "wall_s": wall,
        "bytes": engine.stats.bytes_total
        - b0
        - engine.stats.bytes_by_stage.get("items", 0) / max(1, done + 1),  # one extra download
        "seconds_per_epoch": wall * cfg.n_users / done,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fedmf-epochs", type=int, default=2, help="measured FedMF epochs")
    p.add_argument("--naive-users", type=int, default=20)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="recsys-bench-"))
    rows: dict[str, dict[str, Any]] = {}

    csr_s = load_scenario("csr-fhe-mf-synthetic", [f"epochs={args.epochs}"])
    s = simulate(csr_s, out_dir / "csr", progress=False)
    rows["csr_fhe_mf"] = {
        "test_rmse": s["test_rmse"],
        "epochs": s["epochs"],
        "seconds_per_epoch": s["seconds_per_epoch"],
        "bytes_per_epoch": s["bytes_per_epoch"],
        "setup_bytes": s["bytes_setup"],
        "ckks": s["ckks_params"],
    }
    rows["plaintext twin"] = {"test_rmse": s["plain_test_rmse"], "epochs": s["epochs"]}
    hide = simulate(
        load_scenario(
            "csr-fhe-mf-synthetic", [f"epochs={args.epochs}", "crypto.hide_pattern=true"]
        ),
        out_dir / "csr-hide",
        progress=False,
    )
    rows["csr_fhe_mf hide_pattern"] = {
        "test_rmse": hide["test_rmse"],
        "epochs": hide["epochs"],
        "seconds_per_epoch": hide["seconds_per_epoch"],
        "bytes_per_epoch": hide["bytes_per_epoch"],
        "setup_bytes": hide["bytes_setup"],
        "ckks": hide["ckks_params"],
        "slots_used": hide["slots_used"],
    }

    # FedMF RMSE after the same number of epochs comes from its float twin (the
    # protocol matches it to 1e-3, tests/protocols/test_fedmf.py); cost is measured.
    split = load_split(csr_s.data, csr_s.seed)
    for mode in ("full", "part"):
        fs = load_scenario(
            "fedmf-synthetic",
            [f"epochs={args.fedmf_epochs}", f"mode={mode}", f"crypto.key_bits={args.key_bits}"],
        )
        f = simulate(fs, out_dir / f"fedmf-{mode}", progress=False)
        ref_cfg = fedmf.FedMFConfig(
            "ref",
            split.train.n_users,
            split.train.n_items,
            n_factors=fs.n_factors,
            epochs=args.epochs,
            mode=mode,
            lr=fs.lr,
            reg_u=fs.reg_u,
            reg_v=fs.reg_v,
            init_value=fs.init_value,
            rating_offset=fs.rating_offset,
        )
        curve = [
            _rmse(U, V, split.test, fs.rating_offset)
            for U, V in fedmf.fedmf_reference(
                split.train.users, split.train.items, split.train.values, ref_cfg
            )
        ]
        rows[f"FedMF-{mode} packed"] = {
            "test_rmse": curve[-1],
            "best_test_rmse": min(curve),
            "best_epoch": int(np.argmin(curve)) + 1,
            "measured_test_rmse": f["test_rmse"],
            "measured_epochs": f["epochs"],
            "epochs": args.epochs,
            "seconds_per_epoch": f["seconds_per_epoch"],
            "bytes_per_epoch": f["bytes_per_epoch"],
        }
        if mode == "full":
            naive = naive_fedmf_partial(fs, args.naive_users, args.key_bits)
            rows["FedMF-full naive"] = {
                "test_rmse": rows["FedMF-full packed"]["test_rmse"],
                "epochs": args.epochs,
                "seconds_per_epoch": naive["seconds_per_epoch"],
                "bytes_per_epoch": naive["bytes"] * naive["n_users"] / naive["users_run"],
                "extrapolated_from_users": naive["users_run"],
                "measured_wall_s": naive["wall_s"],
            }
    csr_curve = [json.loads(x)["test_rmse"] for x in (out_dir / "csr" / "metrics.jsonl").open()]
    naive_rmse = rows["FedMF-full naive"]["test_rmse"]
    reach = [i + 1 for i, v in enumerate(csr_curve) if abs(v - naive_rmse) <= 0.01]
    rows["csr_fhe_mf"]["first_epoch_within_0.01_of_fedmf"] = reach[0] if reach else None
    ratio_s = (
        rows["FedMF-full naive"]["seconds_per_epoch"] / rows["csr_fhe_mf"]["seconds_per_epoch"]
    )
    ratio_b = rows["FedMF-full naive"]["bytes_per_epoch"] / rows["csr_fhe_mf"]["bytes_per_epoch"]
    result = {
        "rows": rows,
        "speedup_vs_naive_full": ratio_s,
        "bytes_ratio_vs_naive_full": ratio_b,
        "rmse_gap_vs_naive_full": abs(
            rows["csr_fhe_mf"]["test_rmse"] - rows["FedMF-full naive"]["test_rmse"]
        ),
        "data": {
            "users": split.train.n_users,
            "items": split.train.n_items,
            "train": split.train.n_ratings,
            "test": split.test.n_ratings,
        },
        "machine": machine_info(),
        "versions": package_versions(),
        "args": vars(args) | {"out": str(out_dir)},
    }
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
