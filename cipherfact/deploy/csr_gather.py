"""csr_fhe_mf's part of gathering a deployed job (``recsys_gather``).

RS wrote its factor masks M and the CSP its masked factors A = (U, V) + M
after every epoch; only this step, which sees both, subtracts them the way the
simulation's measurement hook does. A real deployment has no such step: no
single party holds both shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.deploy.csr_node import SHARE_FILE
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.recsys_gather import Epochs, setup_bytes
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.ratings.job import csr_config, csr_info, csr_layout, csr_twin
from cipherfact.simulations.results import read_metrics_tolerant


def _group(agent_id: int) -> str:
    return "rs" if agent_id == csr.RS_ID else "csp" if agent_id == csr.CSP_ID else "users"


def _shares(path: Path, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        return [(f[f"U_{e}"], f[f"V_{e}"]) for e in range(epochs)]


def _layout(path: Path, cfg: Any) -> Any:
    """The public structure the CSP received: the users' dummies are secret draws,
    so the twin takes them from here."""
    with np.load(path, allow_pickle=False) as f:
        users, items = f["slot_users"], f["slot_items"]
    structures = [items[users == u] for u in range(cfg.n_users)]
    return csr_layout(cfg, structures)


def read_csr(deploy: DeployJob, split: Any, results: Sequence[dict[str, Any]], ok: bool) -> Epochs:
    """The model A - M per epoch, the twin of the structure the CSP saw, and RS's and
    the CSP's traffic and seconds per epoch."""
    train = split.train
    cfg = csr_config(deploy.scenario, train)
    nnz = cfg.n_users * cfg.pad_to if cfg.hide_pattern else train.n_ratings
    sizes = {"slots_used": nnz, "chunks": -(-nnz // cfg.plan().params.slot_count)}
    info = csr_info(cfg, results[csr.CSP_ID].get("ckks"), train, sizes)
    out = Epochs(info, {i: _group(i) for i in range(len(results))}, cfg.rating_offset)
    if not ok:
        return out
    rs_out, csp_out = deploy.agent_out(csr.RS_ID), deploy.agent_out(csr.CSP_ID)
    out.twin, _ = csr_twin(train, cfg, _layout(csp_out / SHARE_FILE, cfg))
    masks = _shares(rs_out / SHARE_FILE, cfg.epochs)
    masked = _shares(csp_out / SHARE_FILE, cfg.epochs)
    rs_lines = {m["epoch"]: m for m in read_metrics_tolerant(rs_out / "metrics.jsonl")}
    csp_lines = {m["epoch"]: m for m in read_metrics_tolerant(csp_out / "metrics.jsonl")}
    for e in range(cfg.epochs):
        out.factors.append((masked[e][0] - masks[e][0], masked[e][1] - masks[e][1]))
        rs_m, csp_m = rs_lines[e], csp_lines[e]
        out.records.append(
            {
                "bytes": rs_m["bytes_sent"] + csp_m["bytes_sent"],
                "grpc_bytes": rs_m["grpc_bytes_sent"] + csp_m["grpc_bytes_sent"],
                "wall_s": rs_m["wall_s"],
                "rs_s": rs_m["crypto_s"] + rs_m["compute_s"],
                "csp_s": csp_m["crypto_s"] + csp_m["compute_s"],
            }
        )
    out.setup_bytes = setup_bytes(results)
    return out
