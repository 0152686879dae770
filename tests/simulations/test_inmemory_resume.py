"""The in-memory backend has the Ray backend's features: checkpoints, resume, network.

Both run ppdnmf on a grid (``LocalGrid`` here), so a run interrupted after a
checkpoint and resumed ends with the uninterrupted run's factors, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cipherfact.protocols.ppdnmf.app import PPDNMFApp
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.checkpoint import CheckpointError
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.scenario import load_scenario

SMALL = [
    "n_agents=5",
    "outer_iters=5",
    "inner_iters=3",
    "data.rows=10",
    "data.cols=30",
    "crypto.scheme=none",
]


class InterruptedRunError(RuntimeError):
    pass


def _run(out: Path, overrides: list[str] = SMALL, **options: Any) -> dict[str, Any]:
    opts = sim.SimOptions(progress=False, **options)
    return sim.simulate(load_scenario("ppdnmf-synthetic", overrides), out, options=opts)


def _factors(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "factors.npz") as f:
        return {k: f[k] for k in f.files}


def _outers(out: Path) -> list[int]:
    return [json.loads(x)["outer"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_inmemory_run_resumes_to_the_same_factors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = _run(tmp_path / "full")
    real = PPDNMFApp.record

    def interrupted(self: PPDNMFApp, t: int, *args: Any) -> Any:
        if t == 3:
            raise InterruptedRunError("stopped in outer iteration 3")
        return real(self, t, *args)

    out = tmp_path / "cut"
    monkeypatch.setattr(PPDNMFApp, "record", interrupted)
    with pytest.raises(InterruptedRunError):
        _run(out, checkpoint_every=2)
    failed = json.loads((out / "summary.json").read_text())
    assert failed["status"].startswith("failed: InterruptedRunError")
    assert _outers(out) == [0, 1, 2]
    assert (out / "checkpoint").is_dir()

    monkeypatch.undo()
    resumed = _run(out, checkpoint_every=2, resume=True)
    assert resumed["status"] == "completed"
    assert _outers(out) == [0, 1, 2, 3, 4]  # truncated to the checkpoint (2), then 2..4
    assert resumed["outer_iters_completed"] == 5
    fa, fb = _factors(tmp_path / "full"), _factors(out)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        assert np.array_equal(fa[key], fb[key]), key
    assert resumed["rel_error"] == full["rel_error"]


def test_resume_refuses_a_changed_configuration(tmp_path: Path) -> None:
    _run(tmp_path, checkpoint_every=2)
    with pytest.raises(CheckpointError, match="inner_iters: 3 in the checkpoint, 4 now"):
        _run(tmp_path, [*SMALL, "inner_iters=4"], checkpoint_every=2, resume=True)


def test_inmemory_network_emulation_charges_every_outer_iteration(tmp_path: Path) -> None:
    summary = _run(tmp_path, network=NetworkModel(latency_ms=20.0, seed=3))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # at least one 20 ms wave per inner round and stage
    assert all(line["simulated_network_s"] >= 3 * 0.02 for line in lines)
    assert summary["network"]["setup_s"] > 0
    assert summary["estimated_total_s"] > summary["protocol_s"]
