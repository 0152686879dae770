"""docs/examples/toy_sum.py is a whole protocol: one registry line makes it run with
``cipherfact simulate``'s progress, metrics, summary, network emulation,
checkpoints and resume, none of which it implements."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cipherfact import registry
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.network import NetworkModel

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setitem(  # the one registry line
        registry.PROTOCOLS,
        "toy_sum",
        registry.ProtocolEntry(
            scenario="toy_sum:ToySumScenario", simulate="toy_sum:simulate_toy_sum"
        ),
    )
    import toy_sum

    yield toy_sum
    sys.modules.pop("toy_sum", None)


def _expected(toy: Any, scenario: Any, t: int) -> list[int]:
    values = np.random.default_rng(scenario.seed).integers(
        0, 100, (scenario.n_agents, scenario.size)
    )
    return ((t + 1) * values[1:].sum(axis=0)).tolist()


def test_toy_protocol_runs_with_every_runner_feature(tmp_path: Path, toy: Any) -> None:
    scenario = toy.ToySumScenario(n_agents=5, outer_iters=4)
    net = NetworkModel(latency_ms=10.0, seed=1)
    summary = sim.simulate(scenario, tmp_path, options=sim.SimOptions(progress=False, network=net))
    assert summary["status"] == "completed" and summary["outer_iters_completed"] == 4
    assert summary["final_sum"] == _expected(toy, scenario, 3)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["sum"] for m in lines] == [_expected(toy, scenario, t) for t in range(4)]
    assert all(m["simulated_network_s"] >= 0.01 for m in lines)  # the runner's emulation
    assert summary["estimated_total_s"] > summary["simulated_network_s"] > 0
    assert np.load(tmp_path / "sum.npy").tolist() == summary["final_sum"]


def test_toy_protocol_checkpoints_and_resumes(tmp_path: Path, toy: Any, monkeypatch) -> None:
    scenario = toy.ToySumScenario(outer_iters=5)
    real = toy.ToySumApp.record

    def stop_at_3(self: Any, t: int, *args: Any) -> Any:
        if t == 3:
            raise KeyboardInterrupt
        return real(self, t, *args)

    monkeypatch.setattr(toy.ToySumApp, "record", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        sim.simulate(scenario, tmp_path, options=sim.SimOptions(progress=False, checkpoint_every=2))
    assert json.loads((tmp_path / "summary.json").read_text())["status"].startswith("failed")
    monkeypatch.setattr(toy.ToySumApp, "record", real)
    opts = sim.SimOptions(progress=False, checkpoint_every=2, resume=True)
    summary = sim.simulate(scenario, tmp_path, options=opts)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["outer"] for m in lines] == [0, 1, 2, 3, 4]  # 2..4 redone after the checkpoint
    assert summary["final_sum"] == _expected(toy, scenario, 4)
