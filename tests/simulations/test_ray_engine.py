"""The Ray engine against the in-memory reference: same factors, resume, failures.

One small local Ray (2 CPUs) for the whole module, shut down at the end; the
engine sees it initialized and neither starts nor stops its own.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from cipherfact.cli import main  # noqa: E402
from cipherfact.protocols.ppdnmf.app import PPDNMFApp  # noqa: E402
from cipherfact.simulations import simulate as sim  # noqa: E402
from cipherfact.simulations.network import NetworkModel  # noqa: E402
from cipherfact.simulations.ray_grid import RayEngineError, ray_session  # noqa: E402
from cipherfact.simulations.ray_local import start_local_ray  # noqa: E402
from cipherfact.simulations.scenario import load_scenario  # noqa: E402

pytestmark = pytest.mark.ray

SMALL = [
    "n_agents=6",
    "outer_iters=3",
    "inner_iters=4",
    "data.rows=12",
    "data.cols=40",
    "crypto.processes=1",
]
PLAIN = [*SMALL, "crypto.scheme=plain"]
PAILLIER = [*SMALL, "outer_iters=2", "crypto.key_bits=512", "crypto.insecure_test_keys=true"]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _scenario(overrides: list[str]) -> Any:
    return load_scenario("ppdnmf-synthetic", overrides)


def _run(overrides: list[str], out: Path, **options: Any) -> dict[str, Any]:
    opts = sim.SimOptions(progress=False, **options)
    return sim.simulate(_scenario(overrides), out, options=opts)


def _factors(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "factors.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_same_factors(a: Path, b: Path) -> None:
    fa, fb = _factors(a), _factors(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        assert np.array_equal(fa[key], fb[key]), key


@pytest.mark.parametrize(
    "overrides",
    [PLAIN, PAILLIER, [*PAILLIER, "exchange=pairwise"]],
    ids=["secagg-plain", "secagg-paillier512", "pairwise-paillier512"],
)
def test_factors_bit_identical_to_inmemory(overrides: list[str], tmp_path: Path) -> None:
    inm = _run(overrides, tmp_path / "inmemory", backend="inmemory")
    # two actors, so that envelopes cross between them (with Paillier the default
    # is one actor per two CPUs: one on this 2-CPU test cluster)
    ray_summary = _run(overrides, tmp_path / "ray", backend="ray", ray_actors=2)
    _assert_same_factors(tmp_path / "inmemory", tmp_path / "ray")
    assert ray_summary["status"] == "completed"
    assert ray_summary["rel_error"] == inm["rel_error"]
    assert ray_summary["bytes_total"] == inm["bytes_total"]
    assert ray_summary["messages_total"] == inm["messages_total"]
    assert ray_summary["traffic_per_agent"] == inm["traffic_per_agent"]
    facts = ray_summary["ray"]
    assert facts["actors"] == 2
    assert sorted(a for agents in facts["agents_per_actor"].values() for a in agents) == list(
        range(6)
    )
    assert facts["cross_actor_messages"] > 0 and facts["local_messages"] > 0
    assert (tmp_path / "ray" / "graph.png").stat().st_size > 0
    # the engine used the module's Ray and left it running
    assert ray.is_initialized()


def test_many_agents_per_actor_and_pool_size(tmp_path: Path) -> None:
    summary = _run(PLAIN, tmp_path / "r", backend="ray", ray_actors=1)
    _run(PLAIN, tmp_path / "i", backend="inmemory")
    _assert_same_factors(tmp_path / "i", tmp_path / "r")
    assert summary["ray"]["agents_per_actor"] == {"0": [0, 1, 2, 3, 4, 5]}
    assert summary["ray"]["cross_actor_messages"] == 0


def test_network_emulation_is_seeded_and_engine_independent(tmp_path: Path) -> None:
    net = NetworkModel(latency_ms=50.0, bandwidth_mbps=10.0, loss=0.2, jitter=0.3, seed=7)
    a = _run(PLAIN, tmp_path / "a", backend="ray", network=net)
    b = _run(PLAIN, tmp_path / "b", backend="inmemory", network=net)
    other = _run(
        PLAIN,
        tmp_path / "c",
        backend="inmemory",
        network=NetworkModel(latency_ms=50.0, bandwidth_mbps=10.0, loss=0.2, jitter=0.3, seed=8),
    )
    assert a["simulated_network_s"] == b["simulated_network_s"]
    assert a["network"] == b["network"]
    assert a["network"]["retransmissions"] > 0
    assert other["simulated_network_s"] != a["simulated_network_s"]
    # at least one 50 ms +- 30 % latency per wave: 3 outer x 4 rounds x 2 stages + keys
    assert a["simulated_network_s"] > 25 * 0.035
    assert a["estimated_total_s"] >= a["simulated_network_s"]
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["simulated_network_s"] > 0 for line in lines)
    # losses cost time: the same links without loss are faster
    lossless = _run(
        PLAIN,
        tmp_path / "d",
        backend="inmemory",
        network=NetworkModel(latency_ms=50.0, bandwidth_mbps=10.0, jitter=0.3, seed=7),
    )
    assert lossless["simulated_network_s"] < a["simulated_network_s"]
    assert lossless["network"]["retransmissions"] == 0


_record = PPDNMFApp.record


def killing_record(self: PPDNMFApp, t: int, reports: Any, grid: Any, *rest: Any) -> Any:
    """The app's record, but actor 0's process is killed after outer iteration 2."""
    out = _record(self, t, reports, grid, *rest)
    if t == 2:
        pid = ray.get(grid.hosts[0].pid.remote())
        os.kill(pid, signal.SIGKILL)
    return out


def test_dead_actor_stops_the_run_and_resume_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = [*PLAIN, "outer_iters=5"]
    _run(overrides, tmp_path / "full", backend="inmemory")
    out = tmp_path / "killed"
    monkeypatch.setattr(PPDNMFApp, "record", killing_record)
    with pytest.raises(
        RayEngineError,
        match=r"Ray actor 0 hosting agents \[\d+(, \d+)*\] died during outer iteration 3",
    ):
        _run(overrides, out, backend="ray", checkpoint_every=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("failed: RayEngineError: Ray actor 0")
    assert summary["outer_iters_completed"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # kept on disk

    monkeypatch.undo()
    resumed = _run(overrides, out, backend="ray", checkpoint_every=2, resume=True)
    assert resumed["status"] == "completed"
    _assert_same_factors(tmp_path / "full", out)
    outers = [json.loads(x)["outer"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert outers == [0, 1, 2, 3, 4]  # truncated to the checkpoint (2), then 2..4 again
    assert resumed["outer_iters_completed"] == 5


def test_resume_without_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        _run(PLAIN, tmp_path, backend="ray", resume=True)


def test_resume_of_another_job_is_refused(tmp_path: Path) -> None:
    _run(PLAIN, tmp_path, backend="ray", checkpoint_every=1)
    with pytest.raises(ValueError, match="belongs to another job: job_id"):
        _run([*PLAIN, "seed=1"], tmp_path, backend="ray", resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        _run(PLAIN, tmp_path, backend="ray", resume=True)


def test_ray_session_reuses_a_running_instance() -> None:
    with ray_session(None) as started:
        assert started is False
    assert ray.is_initialized()


def test_cli_ray_backend_with_network_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    args = ["simulate", "ppdnmf-synthetic", "--backend", "ray", "--quiet", "--out", str(out)]
    for item in PLAIN:
        args += ["--set", item]
    args += ["--latency-ms", "20", "--bandwidth-mbps", "100", "--ray-actors", "2"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["simulated_network_s"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"]["latency_ms"] == 20.0
    assert summary["network"]["seed"] == 0  # the scenario's seed
    assert summary["ray"]["actors"] == 2
