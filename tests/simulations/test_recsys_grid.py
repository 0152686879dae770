"""csr_fhe_mf and fedmf in memory run on the same grid as on Ray: network emulation
works for them too (checkpoints: test_recsys_resume.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cipherfact.simulations import simulate as sim
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.scenario import load_scenario

FEDMF = [
    "data.n_users=8",
    "data.n_items=20",
    "epochs=2",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]
CSR = ["data.n_users=10", "data.n_items=20", "epochs=2"]


def _run(name: str, overrides: list[str], out: Path, **options: Any) -> dict[str, Any]:
    opts = sim.SimOptions(progress=False, **options)
    return sim.simulate(load_scenario(name, overrides), out, options=opts)


@pytest.mark.parametrize(
    ("name", "overrides"), [("fedmf-synthetic", FEDMF), ("csr-fhe-mf-synthetic", CSR)]
)
def test_inmemory_recsys_network_emulation(tmp_path: Path, name: str, overrides: list[str]) -> None:
    plain = _run(name, overrides, tmp_path / "plain")
    slow = _run(name, overrides, tmp_path / "slow", network=NetworkModel(latency_ms=40.0, seed=1))
    assert "simulated_network_s" not in plain
    lines = [json.loads(x) for x in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # unlimited bandwidth: an epoch costs its exchanges' latencies. csr_fhe_mf: RS to
    # CSP and back. FedMF: the users take turns, so each user's items and gradients
    # are one 40 ms exchange each way, one user after the other.
    exchanges = 2 * slow["n_users"] if name == "fedmf-synthetic" else 2
    for line in lines:
        assert line["simulated_network_s"] == pytest.approx(exchanges * 0.04)
    assert slow["network"]["latency_ms"] == 40.0 and slow["network"]["setup_s"] >= 0.04
    assert slow["simulated_network_s"] == pytest.approx(
        slow["network"]["setup_s"] + sum(line["simulated_network_s"] for line in lines)
    )
    assert slow["estimated_total_s"] > slow["simulated_network_s"]
    assert slow["bytes_total"] > 0 and "ray" not in slow
    if name == "fedmf-synthetic":  # exact fixed point: emulation changes no number
        assert slow["test_rmse"] == plain["test_rmse"]
