"""Real agent processes on loopback with mTLS: same factors as the in-memory simulation."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from cipherfact.deploy.local import deploy_local, launch, wait_all, write_local_job
from cipherfact.deploy.node import checkpoint_path
from cipherfact.simulations.ppdnmf_job import prepare_job, run_inmemory
from cipherfact.simulations.scenario import load_scenario

from .conftest import SMALL, same_factors

pytestmark = pytest.mark.grpc

N = 4
SCENARIO = "ppdnmf-synthetic"


def reference(overrides: list[str]) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    job = prepare_job(load_scenario(SCENARIO, [*overrides, f"n_agents={N}"]))
    *_, last = run_inmemory(job)
    return last.Ws, last.Hs, last.stats.bytes_total


def test_four_processes_with_mtls_match_inmemory_bit_for_bit(tmp_path: Path) -> None:
    summary = deploy_local(SCENARIO, N, tmp_path, SMALL, timeouts={"peer_s": 30}, timeout_s=150)
    assert summary["status"] == "completed", summary["status"]
    assert summary["transport"] == "mTLS"
    Ws, Hs, sim_bytes = reference(SMALL)
    assert same_factors(tmp_path / "factors.npz", Ws, Hs) == []
    # The payload bytes the agents put on the wire are the ones the simulation counts.
    assert summary["bytes_total"] == sim_bytes
    assert summary["grpc_bytes_total"] > summary["bytes_total"]
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["outer"] for m in metrics] == [0, 1]
    for i in range(N):
        log = (tmp_path / "agents" / f"agent-{i}" / "agent.log").read_text()
        assert "(mTLS)" in log and f"agent {i} completed 6 rounds" in log


FAULT = ["outer_iters=8", *SMALL[1:]]
FAULT_TIMEOUTS = {"peer_s": 6, "retries": 2, "backoff_s": 0.1, "backoff_max_s": 0.2}


@pytest.mark.slow
def test_killed_agent_stops_the_others_and_resume_gives_same_factors(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, FAULT, N, tmp_path, checkpoint_every=1,
                          timeouts=FAULT_TIMEOUTS)
    procs = launch(job, N)
    victim = 2
    deadline = time.monotonic() + 120
    target = checkpoint_path(tmp_path / "agents" / f"agent-{victim}", 1)
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.exists(), "agent 2 never reached its first checkpoint"
    assert procs[victim].poll() is None, "agent 2 finished before it could be killed"
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    codes = wait_all(procs, timeout=60)
    stopped_within = time.monotonic() - killed_at
    assert codes[victim] == -signal.SIGKILL
    assert [c for i, c in enumerate(codes) if i != victim] == [1] * (N - 1)
    # peer_s of silence plus retries and abort notices; never a hang
    assert stopped_within < FAULT_TIMEOUTS["peer_s"] + 10
    for i in (0, 1, 3):
        result = json.loads((tmp_path / "agents" / f"agent-{i}" / "result.json").read_text())
        assert result["status"].startswith("failed: ")
        assert "agent 2" in result["status"] and "round" in result["status"]

    summary = deploy_local(SCENARIO, N, tmp_path, FAULT, checkpoint_every=1, resume=True,
                           timeouts={"peer_s": 30}, timeout_s=150)
    assert summary["status"] == "completed", summary["status"]
    Ws, Hs, _ = reference(FAULT)
    assert same_factors(tmp_path / "factors.npz", Ws, Hs) == []
    resumed = {json.loads((tmp_path / "agents" / f"agent-{i}" / "result.json").read_text())[
        "resumed_from"] for i in range(N)}
    assert len(resumed) == 1 and resumed.pop() >= 1


@pytest.mark.slow
def test_sigterm_stops_an_agent_cleanly_and_tells_its_neighbours(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, FAULT, N, tmp_path, checkpoint_every=1,
                          timeouts=FAULT_TIMEOUTS)
    procs = launch(job, N)
    target = checkpoint_path(tmp_path / "agents" / "agent-1", 1)
    deadline = time.monotonic() + 120
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert procs[1].poll() is None
    procs[1].send_signal(signal.SIGTERM)
    codes = wait_all(procs, timeout=60)
    assert codes[1] == 143
    assert [c for i, c in enumerate(codes) if i != 1] == [1] * (N - 1)
    stopped = json.loads((tmp_path / "agents" / "agent-1" / "result.json").read_text())
    assert stopped["status"].startswith("stopped: agent 1 stopped by signal at round")
    statuses = [
        json.loads((tmp_path / "agents" / f"agent-{i}" / "result.json").read_text())["status"]
        for i in (0, 2, 3)
    ]
    # Each neighbour either got agent 1's abort notice or found it gone first; both name it.
    for status in statuses:
        assert status.startswith("failed: ") and "agent 1" in status and "round" in status, status
