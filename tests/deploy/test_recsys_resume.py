"""Deployed csr_fhe_mf and FedMF parties checkpoint in their own folders and resume over
gRPC with mTLS to the uninterrupted deployed run's result (FedMF bit for bit, csr_fhe_mf
to CKKS noise); a resume with a changed job is refused in one line."""

from __future__ import annotations

import dataclasses
import json
import signal
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cipherfact.deploy.local import deploy_local, launch, wait_all, write_local_job
from cipherfact.deploy.party_checkpoint import checkpoint_path, latest_checkpoint
from cipherfact.simulations.checkpoint import state_from_npz

pytestmark = pytest.mark.grpc

FEDMF = "fedmf-synthetic"
FEDMF_SMALL = [
    "data.n_users=3",
    "data.n_items=10",
    "data.density=0.5",
    "epochs=4",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]
CSR = "csr-fhe-mf-synthetic"
CSR_SMALL = ["data.n_users=3", "data.n_items=10", "data.density=0.5", "epochs=4"]
CKKS_TOL = 1e-4
FAULT_TIMEOUTS = {"peer_s": 6, "retries": 2, "backoff_s": 0.1, "backoff_max_s": 0.2}


def _agent(out: Path, i: int) -> Path:
    return out / "agents" / f"agent-{i}"


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _result(out: Path, i: int) -> dict[str, Any]:
    return json.loads((_agent(out, i) / "result.json").read_text())


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600 and (
        stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    )


def _keys(path: Path) -> set[str]:
    return {k for k in state_from_npz(path.read_bytes()) if not k.startswith("past_")}


def test_fedmf_party_failing_mid_job_resumes_bit_for_bit(tmp_path: Path) -> None:
    full_out, cut = tmp_path / "full", tmp_path / "cut"
    full = deploy_local(
        FEDMF, None, full_out, FEDMF_SMALL, checkpoint_every=1, timeouts={"peer_s": 30}
    )
    assert full["status"] == "completed", full["status"]
    # Each party wrote its own files: 0600 in a 0700 folder, only what it knows.
    ck = {i: checkpoint_path(_agent(full_out, i), 2) for i in range(4)}
    assert all(_private(p) for p in ck.values())
    config = {"job_config", "job_config_sha256", "job_counters"}
    assert _keys(ck[0]) == {"role", "epoch", *config}  # the server: the epoch only
    assert _keys(ck[1]) == _keys(ck[2]) == {"role", "epoch", "vector", *config}
    assert _keys(ck[3]) == {"role", "epoch", "vector", "V", *config}  # the last user
    for path in full_out.rglob("*"):  # no secret key bytes (magic "CFSK") anywhere
        assert not path.is_file() or b"CFSK" not in path.read_bytes(), path

    # The last user (agent 3) fails when it writes its checkpoint after epoch 2 (a
    # folder in the file's place: a full disk, say), which stops the whole job.
    job = write_local_job(
        FEDMF, FEDMF_SMALL, None, cut, checkpoint_every=1, timeouts=FAULT_TIMEOUTS
    )
    blocker = checkpoint_path(_agent(cut, 3), 2)
    blocker.mkdir(parents=True)
    codes = wait_all(launch(job, 4), timeout=60)
    assert codes == [1, 1, 1, 1], codes
    assert "IsADirectoryError" in _result(cut, 3)["status"]
    assert "agent 3" in _result(cut, 0)["status"]
    blocker.rmdir()
    assert latest_checkpoint(_agent(cut, 3)) == 1 and latest_checkpoint(_agent(cut, 0)) == 2

    changed = [x.replace("epochs=4", "epochs=5") for x in FEDMF_SMALL]
    with pytest.raises(ValueError, match=r"epochs: 4 in the checkpoint, 5 now") as refused:
        deploy_local(FEDMF, None, cut, changed, checkpoint_every=1, resume=True)
    assert "\n" not in str(refused.value)

    resumed = deploy_local(
        FEDMF, None, cut, FEDMF_SMALL, checkpoint_every=1, resume=True, timeouts={"peer_s": 30}
    )
    assert resumed["status"] == "completed", resumed["status"]
    assert resumed["resumed_from"] == 1 and full["resumed_from"] is None
    for key in ("train_rmse", "test_rmse", "messages_total"):
        assert resumed[key] == full[key], key
    # The epochs' bytes are the same; the setup's vary by a few bytes with the key (the
    # secret key in a box is variable-length integers), so they come from the first part.
    epochs_bytes = [s["bytes_total"] - s["bytes_setup"] for s in (resumed, full)]
    assert epochs_bytes[0] == epochs_bytes[1]
    assert abs(resumed["bytes_setup"] - full["bytes_setup"]) < 100
    # this run: epochs 1 to 3 after a fresh key's handover and Enc(V) restored
    assert 0 < resumed["bytes_this_run"] < full["bytes_total"]
    assert resumed["bytes_resume_setup"] > full["bytes_setup"]
    assert resumed["traffic"]["messages_by_stage"]["restore"] == 1
    rows, full_rows = _rows(cut), _rows(full_out)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    for a, b in zip(rows, full_rows, strict=True):
        for key in ("train_rmse", "test_rmse", "bytes"):
            assert a[key] == b[key], key
    with np.load(full_out / "model.npz") as f, np.load(cut / "model.npz") as g:
        assert np.array_equal(f["U"], g["U"]) and np.array_equal(f["V"], g["V"])
    for i in range(4):  # every party's own result file too (vectors, V per epoch)
        if i:
            with (
                np.load(_agent(full_out, i) / "factors.npz") as f,
                np.load(_agent(cut, i) / "factors.npz") as g,
            ):
                assert sorted(f.files) == sorted(g.files)
                assert all(np.array_equal(f[k], g[k]) for k in f.files), i
        # the newer checkpoints of the failed part were replaced by the resumed part's
        assert latest_checkpoint(_agent(cut, i)) == 4
    fingerprints = [_result(d, 1)["key_fingerprint"] for d in (full_out, cut)]
    assert fingerprints[0] != fingerprints[1]  # a fresh key, never a stored one


def test_csr_fhe_mf_killed_csp_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    full_out, cut = tmp_path / "full", tmp_path / "cut"
    full = deploy_local(CSR, None, full_out, CSR_SMALL, checkpoint_every=1, timeouts={"peer_s": 30})
    assert full["status"] == "completed", full["status"]

    job = write_local_job(CSR, CSR_SMALL, None, cut, checkpoint_every=1, timeouts=FAULT_TIMEOUTS)
    procs = launch(job, 5)
    targets = [checkpoint_path(_agent(cut, i), 1) for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(t.exists() for t in targets) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(t.exists() for t in targets), "RS and the CSP never reached their first checkpoint"
    assert procs[1].poll() is None, "the CSP finished before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    codes = wait_all(procs, timeout=60)
    assert codes[1] == -signal.SIGKILL and codes[0] == 1 and codes[2:] == [0, 0, 0]
    stopped_at = min(latest_checkpoint(_agent(cut, i)) or 0 for i in (0, 1))
    assert 1 <= stopped_at < 4
    # RS keeps its masks, the CSP its masked factors; users keep nothing.
    rs_ck, csp_ck = (checkpoint_path(_agent(cut, i), stopped_at) for i in (0, 1))
    assert _private(rs_ck) and _private(csp_ck)
    config = {"job_config", "job_config_sha256", "job_counters"}
    assert _keys(rs_ck) == {"role", "epoch", "M_U", "M_V", *config}
    assert _keys(csp_ck) == {"role", "epoch", "A_U", "A_V", *config}
    assert not any((_agent(cut, i) / "checkpoints").exists() for i in (2, 3, 4))

    changed = [x.replace("density=0.5", "density=0.6") for x in CSR_SMALL]
    with pytest.raises(ValueError, match=r"data\.density: 0\.5 in the checkpoint, 0\.6 now"):
        deploy_local(CSR, None, cut, changed, checkpoint_every=1, resume=True)

    resumed = deploy_local(
        CSR, None, cut, CSR_SMALL, checkpoint_every=1, resume=True, timeouts={"peer_s": 30}
    )
    assert resumed["status"] == "completed", resumed["status"]
    assert resumed["resumed_from"] == stopped_at
    for key in ("train_rmse", "test_rmse"):
        assert abs(resumed[key] - full[key]) < CKKS_TOL, key
    rows, full_rows = _rows(cut), _rows(full_out)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    for a, b in zip(rows, full_rows, strict=True):
        assert abs(a["train_rmse"] - b["train_rmse"]) < CKKS_TOL
    assert resumed["traffic"]["messages_by_stage"]["resume"] == 1
    assert abs(resumed["bytes_total"] / full["bytes_total"] - 1) < 0.01
    with np.load(cut / "factors.npz") as f, np.load(full_out / "factors.npz") as g:
        assert np.allclose(f["U"], g["U"], atol=1e-3) and np.allclose(f["V"], g["V"], atol=1e-3)


def test_a_csr_user_resumes_with_nothing_and_refusals_are_one_line(tmp_path: Path) -> None:
    from cipherfact.deploy.csr_node import CsrNode
    from cipherfact.deploy.jobfile import load_job
    from cipherfact.deploy.node_base import NodeError
    from cipherfact.deploy.nodes import make_node
    from cipherfact.deploy.party_checkpoint import PartyCheckpoints
    from cipherfact.simulations.scenario import load_scenario

    job = load_job(write_local_job(CSR, CSR_SMALL, None, tmp_path, checkpoint_every=1))
    user = make_node(job, 2, resume_from=3)  # a user keeps nothing: it uploads again
    assert user.resume_from == 3
    with pytest.raises(NodeError, match=r"agent 0: no checkpoint .*outer-00003\.npz") as missing:
        make_node(job, 0, resume_from=3).run()
    assert "\n" not in str(missing.value)
    status = json.loads((job.agent_out(0) / "result.json").read_text())["status"]
    assert status.startswith("failed before start: NodeError: agent 0: no checkpoint")
    # A CSP started by hand with a changed job refuses its checkpoint, before any key.
    written = CsrNode.checkpoint_config(load_scenario(CSR, CSR_SMALL), 5)
    PartyCheckpoints("csp", job.agent_out(1), written, 1, 4).save(1, {"role": "csp"}, {}, {})
    lr = [*CSR_SMALL, "lr=0.002"]
    changed = load_job(write_local_job(CSR, lr, None, tmp_path / "changed", checkpoint_every=1))
    changed = dataclasses.replace(changed, out=job.out)
    with pytest.raises(NodeError, match=r"^agent 1: cannot resume .*lr: [0-9.]+ in the checkpoint"):
        make_node(changed, 1, resume_from=1).run()
