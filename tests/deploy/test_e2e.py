"""Real agent processes on loopback with mTLS: same factors as the in-memory simulation."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from cipherfact.deploy.local import deploy_local, launch, wait_all, write_local_job
from cipherfact.deploy.party_checkpoint import checkpoint_path
from cipherfact.protocols.ppdnmf.job import prepare_job, run_inmemory
from cipherfact.simulations.scenario import load_scenario

from .conftest import SMALL, same_factors

pytestmark = pytest.mark.grpc

N = 4
SCENARIO = "ppdnmf-synthetic"


def reference(overrides: list[str]) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    job = prepare_job(load_scenario(SCENARIO, [*overrides, f"n_agents={N}"]))
    *_, last = run_inmemory(job)
    return last.Ws, last.Hs, last.stats.bytes_total


@pytest.mark.parametrize("exchange", ["secagg", "pairwise"])
def test_four_processes_with_mtls_match_inmemory_bit_for_bit(tmp_path: Path, exchange: str) -> None:
    overrides = [*SMALL, f"exchange={exchange}"]
    summary = deploy_local(SCENARIO, N, tmp_path, overrides, timeouts={"peer_s": 30}, timeout_s=150)
    assert summary["status"] == "completed", summary["status"]
    assert summary["transport"] == "mTLS"
    Ws, Hs, sim_bytes = reference(overrides)
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


def test_killed_agent_stops_the_others_and_resume_gives_same_factors(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, FAULT, N, tmp_path, checkpoint_every=1, timeouts=FAULT_TIMEOUTS)
    procs = launch(job, N)
    victim = 2
    deadline = time.monotonic() + 120
    # Kill once every agent has a checkpoint to resume from (neighbours may lag a round).
    targets = [checkpoint_path(tmp_path / "agents" / f"agent-{i}", 1) for i in range(N)]
    while not all(t.exists() for t in targets) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(t.exists() for t in targets), "the agents never reached their first checkpoint"
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

    summary = deploy_local(
        SCENARIO,
        N,
        tmp_path,
        FAULT,
        checkpoint_every=1,
        resume=True,
        timeouts={"peer_s": 30},
        timeout_s=150,
    )
    assert summary["status"] == "completed", summary["status"]
    Ws, Hs, _ = reference(FAULT)
    assert same_factors(tmp_path / "factors.npz", Ws, Hs) == []
    resumed = {
        json.loads((tmp_path / "agents" / f"agent-{i}" / "result.json").read_text())["resumed_from"]
        for i in range(N)
    }
    assert len(resumed) == 1 and resumed.pop() >= 1


def test_sigterm_stops_an_agent_cleanly_and_tells_its_neighbours(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, FAULT, N, tmp_path, checkpoint_every=1, timeouts=FAULT_TIMEOUTS)
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


# --- csr_fhe_mf: RS, CSP and every user as separate processes -----------------------------

CSR = "csr-fhe-mf-synthetic"
CSR_SMALL = ["data.n_users=3", "data.n_items=10", "data.density=0.5", "epochs=2"]
# Two in-memory runs already differ by ~1e-6 in RMSE: CKKS encryption noise
# comes from fresh OS randomness, so results agree to that noise, not to bits.
CKKS_TOL = 1e-4


def test_csr_fhe_mf_parties_as_processes_match_inmemory(tmp_path: Path) -> None:
    from cipherfact.simulations.simulate import SimOptions, simulate

    summary = deploy_local(
        CSR, None, tmp_path / "grpc", CSR_SMALL, timeouts={"peer_s": 30}, timeout_s=150
    )
    assert summary["status"] == "completed", summary["status"]
    assert summary["transport"] == "mTLS" and summary["processes"] == 5
    mem = simulate(
        load_scenario(CSR, CSR_SMALL), tmp_path / "mem", options=SimOptions(progress=False)
    )
    for key in ("train_rmse", "test_rmse"):
        assert abs(summary[key] - mem[key]) < CKKS_TOL, key
    assert summary["plain_test_rmse"] == mem["plain_test_rmse"]
    # Same messages; ciphertext sizes vary by a fraction of a percent (compressed CKKS).
    assert summary["traffic"]["messages_total"] == mem["traffic"]["messages_total"]
    assert summary["traffic"]["messages_by_stage"] == mem["traffic"]["messages_by_stage"]
    assert abs(summary["bytes_total"] / mem["bytes_total"] - 1) < 0.01
    assert summary["grpc_bytes_total"] > summary["bytes_total"]
    rows, mem_rows = (
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("grpc", "mem")
    )
    assert [r["epoch"] for r in rows] == [0, 1]
    for a, b in zip(rows, mem_rows, strict=True):
        assert abs(a["test_rmse"] - b["test_rmse"]) < CKKS_TOL
    with np.load(tmp_path / "grpc" / "factors.npz") as f:
        U, V = f["U"], f["V"]
    assert U.shape == (3, 4) and V.shape == (10, 4)
    # the deployed job leaves the simulation's model file too: the data's ids, the offset
    from cipherfact.protocols.ratings.model import RatingsModel

    model, mem_model = RatingsModel.load(tmp_path / "grpc"), RatingsModel.load(tmp_path / "mem")
    assert summary["model"] == "model.npz" and np.array_equal(model.U, U)
    assert np.array_equal(model.user_ids, mem_model.user_ids) and model.offset == mem_model.offset
    assert np.array_equal(model.item_ids, mem_model.item_ids)
    # Each party keeps its own files: RS its masks, the CSP its masked factors, users nothing.
    agents = tmp_path / "grpc" / "agents"
    with (
        np.load(agents / "agent-0" / "share.npz") as rs,
        np.load(agents / "agent-1" / "share.npz") as csp,
    ):
        assert str(rs["kind"]) == "masks" and str(csp["kind"]) == "masked_factors"
        assert np.allclose(csp["U_1"] - rs["U_1"], U)
        assert not np.allclose(csp["U_1"], U, atol=1.0)  # the CSP's share hides the model
    for u in range(3):
        assert not (agents / f"agent-{u + 2}" / "share.npz").exists()
        log = (agents / f"agent-{u + 2}" / "agent.log").read_text()
        assert f"completed its part as user {u}" in log
    assert "completed its part as rs (2 epochs)" in (agents / "agent-0" / "agent.log").read_text()


def test_csr_fhe_mf_killed_csp_stops_rs_with_a_clear_error(tmp_path: Path) -> None:
    timeouts = {"peer_s": 5, "retries": 2, "backoff_s": 0.1, "backoff_max_s": 0.2}
    overrides = [*CSR_SMALL[:-1], "epochs=200"]
    job = write_local_job(CSR, overrides, None, tmp_path, timeouts=timeouts)
    procs = launch(job, 5)
    rs_metrics = tmp_path / "agents" / "agent-0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not rs_metrics.exists() or '"epoch": 1' not in rs_metrics.read_text()
    ):
        time.sleep(0.05)
    assert procs[1].poll() is None, "the CSP finished before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    codes = wait_all(procs, timeout=60)
    assert time.monotonic() - killed_at < timeouts["peer_s"] + 10
    assert codes[1] == -signal.SIGKILL and codes[0] == 1
    assert codes[2:] == [0, 0, 0]  # the users had finished their part
    status = json.loads((tmp_path / "agents" / "agent-0" / "result.json").read_text())["status"]
    assert status.startswith("failed: ") and "agent 1" in status and "round" in status, status


def test_csr_fhe_mf_users_with_their_own_rating_files(tmp_path: Path) -> None:
    """Each user process reads only its own CSV; RS and the CSP load no ratings at all.
    With the scenario's own ratings in the files, the model is the simulation's."""
    from cipherfact.deploy.local import gather
    from cipherfact.protocols.ratings.job import load_split
    from cipherfact.simulations.simulate import SimOptions, simulate

    scenario = load_scenario(CSR, CSR_SMALL)
    train = load_split(scenario.data, scenario.seed).train
    job = write_local_job(CSR, CSR_SMALL, None, tmp_path, timeouts={"peer_s": 30})
    text = job.read_text()
    for u in range(train.n_users):
        rows = train.users == u
        lines = [
            f"{i},{float(r)!r}" for i, r in zip(train.items[rows], train.values[rows], strict=True)
        ]
        (tmp_path / f"user-{u}.csv").write_text("item,rating\n" + "\n".join(lines) + "\n")
        text = text.replace(f"id = {u + 2}\n", f'id = {u + 2}\ndata_path = "user-{u}.csv"\n')
    job.write_text(text)
    started = time.monotonic()
    codes = wait_all(launch(job, train.n_users + 2), timeout=150)
    summary = gather(job, time.monotonic() - started, codes)
    assert summary["status"] == "completed", summary["status"]
    mem = simulate(scenario, tmp_path / "mem", options=SimOptions(progress=False))
    for key in ("train_rmse", "test_rmse"):
        assert abs(summary[key] - mem[key]) < CKKS_TOL, key


def test_ppdnmf_agents_with_their_own_data_files(tmp_path: Path) -> None:
    """Each agent reads only its own block; the gathered error is the error on those
    blocks, from what the agents report (their squared error and squared norm), not
    the error on the scenario's generated matrix, which the files replace."""
    from cipherfact.deploy.local import gather
    from cipherfact.protocols.ppdnmf.job import relative_error

    generated = prepare_job(load_scenario(SCENARIO, [*SMALL, f"n_agents={N}"]))
    own = [3.0 * block + 0.5 for block in generated.blocks]  # another nonnegative matrix
    job = write_local_job(SCENARIO, SMALL, N, tmp_path, timeouts={"peer_s": 30})
    text = job.read_text()
    for i, block in enumerate(own):
        np.save(tmp_path / f"block-{i}.npy", block)
        text = text.replace(f"id = {i}\n", f'id = {i}\ndata_path = "block-{i}.npy"\n')
    job.write_text(text)
    started = time.monotonic()
    codes = wait_all(launch(job, N), timeout=150)
    summary = gather(job, time.monotonic() - started, codes)
    assert summary["status"] == "completed", summary["status"]
    with np.load(tmp_path / "factors.npz") as f:
        Ws = [f[f"W_{i}"] for i in range(N)]
        Hs = [f[f"H_{i}"] for i in range(N)]
        assert not any(k.startswith("columns_") for k in f.files)  # no made-up column map
    on_own = relative_error(own, Ws, Hs)
    assert summary["rel_error"] == pytest.approx(on_own, rel=1e-9)
    assert abs(relative_error(generated.blocks, Ws, Hs) - on_own) > 0.01 * on_own
    assert summary["data_shape"] == [own[0].shape[0], sum(b.shape[1] for b in own)]
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["rel_error"] == pytest.approx(on_own, rel=1e-9)
