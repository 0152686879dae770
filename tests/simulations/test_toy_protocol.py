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


@pytest.mark.grpc
def test_toy_protocol_runs_over_grpc_with_mtls(tmp_path: Path, toy: Any, monkeypatch) -> None:
    """The same registry entry plus its ``node`` deploys it: every agent a gRPC server
    with the job's certificates (here threads of this process, since the toy's
    registry line lives in this test), gathered into summary.json and metrics.jsonl."""
    import threading
    import time

    from cipherfact.deploy.jobfile import load_job
    from cipherfact.deploy.local import gather, write_local_job
    from cipherfact.deploy.nodes import make_node

    entry = registry.PROTOCOLS["toy_sum"]
    monkeypatch.setitem(
        registry.PROTOCOLS,
        "toy_sum",
        registry.ProtocolEntry(entry.scenario, entry.simulate, node="toy_sum:ToySumNode"),
    )
    scenario_file = tmp_path / "toy.toml"
    scenario_file.write_text('protocol = "toy_sum"\nn_agents = 4\nouter_iters = 3\n')
    job = write_local_job(str(scenario_file), [], None, tmp_path / "job", timeouts={"peer_s": 20})
    deploy = load_job(job)
    nodes = [make_node(deploy, i) for i in range(4)]
    codes = [1] * 4

    def serve(i: int) -> None:
        nodes[i].run()
        codes[i] = 0

    started = time.monotonic()
    threads = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    summary = gather(job, time.monotonic() - started, codes)
    assert summary["status"] == "completed", summary["status"]
    assert summary["transport"] == "mTLS" and summary["outer_iters_completed"] == 3
    scenario = toy.ToySumScenario(n_agents=4, outer_iters=3, name="toy")
    lines = [json.loads(x) for x in (tmp_path / "job" / "metrics.jsonl").read_text().splitlines()]
    assert [m["report"] for m in lines] == [_expected(toy, scenario, t) for t in range(3)]
    assert summary["traffic"]["messages_by_stage"] == {"go": 9, "value": 9}
