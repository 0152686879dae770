"""FedMF's part of gathering a deployed job (``recsys_gather``).

Each user wrote its own vector after every epoch and the key leader V after
every epoch (the Enc(V) it decrypted at its next turn, and the final model):
stacked, they are the factors the simulation measures with the users' key.
Traffic per epoch is every party's bytes of that round; the key distribution
(round -1) and the final model download (round ``epochs``) are outside the
epochs, as the simulation has neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cipherfact.deploy.fedmf_node import FACTORS_FILE, LEADER
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.recsys_gather import Epochs, setup_bytes
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.protocols.ratings.job import fedmf_config
from cipherfact.simulations.results import read_metrics_tolerant


def read_fedmf(
    deploy: DeployJob, split: Any, results: Sequence[dict[str, Any]], ok: bool
) -> Epochs:
    """(U, V) per epoch from the users' files, the float twin, and traffic per epoch."""
    scenario, train = deploy.scenario, split.train
    cfg = fedmf_config(scenario, train)
    server = results[fedmf.SERVER_ID]
    c = scenario.crypto
    info = {
        "mode": cfg.mode,
        "naive": c.naive,
        "scheme": c.scheme,
        "key_bits": c.key_bits,
        "items_per_ciphertext": server.get("items_per_ciphertext"),
        "slot_bits": server.get("slot_bits"),
    }
    groups = {i: "server" if i == fedmf.SERVER_ID else "users" for i in range(len(results))}
    out = Epochs(info, groups, cfg.rating_offset)
    if not ok:
        return out
    out.twin = fedmf.fedmf_reference(train.users, train.items, train.values, cfg)
    vectors = []
    for u in range(cfg.n_users):
        with np.load(deploy.agent_out(fedmf.user_id(u)) / FACTORS_FILE, allow_pickle=False) as f:
            vectors.append([f[f"u_{e}"] for e in range(cfg.epochs)])
    with np.load(deploy.agent_out(LEADER) / FACTORS_FILE, allow_pickle=False) as f:
        Vs = [f[f"V_{e}"] for e in range(cfg.epochs)]
    lines = [read_metrics_tolerant(deploy.agent_out(i) / "metrics.jsonl") for i in groups]
    by_epoch = [{m["epoch"]: m for m in party} for party in lines]
    for e in range(cfg.epochs):
        out.factors.append((np.stack([v[e] for v in vectors]), Vs[e]))
        rows = [p[e] for p in by_epoch]
        secs = {g: 0.0 for g in ("server", "users")}
        for i, m in enumerate(rows):
            secs[groups[i]] += m["crypto_s"] + m["compute_s"]
        out.records.append(
            {
                "bytes": sum(m["bytes_sent"] for m in rows),
                "grpc_bytes": sum(m["grpc_bytes_sent"] for m in rows),
                "wall_s": rows[fedmf.SERVER_ID]["wall_s"],
                **{f"{g}_s": s for g, s in secs.items()},
            }
        )
    out.setup_bytes = setup_bytes(results)
    return out
