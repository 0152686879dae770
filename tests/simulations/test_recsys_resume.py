"""csr_fhe_mf and FedMF checkpoint and resume in memory through the one runner path:
an interrupted run resumed from its checkpoint ends where the uninterrupted run
ends (FedMF bit for bit; csr_fhe_mf to CKKS noise), and checkpoints hold no key."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cipherfact.protocols.ratings.app import RecsysApp
from cipherfact.protocols.ratings.model import RatingsModel
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    load_checkpoint,
    state_from_npz,
)
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.runner import refuse_checkpoints
from cipherfact.simulations.scenario import ScenarioError, load_scenario

FEDMF = [
    "data.n_users=6",
    "data.n_items=12",
    "epochs=3",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]
CSR = ["data.n_users=8", "data.n_items=16", "epochs=3"]
# Two uninterrupted in-memory csr_fhe_mf runs differ by ~1e-6 in RMSE (fresh CKKS
# noise), so a resumed run is held to that noise, not to bits.
CKKS_RMSE_TOL = 1e-4


class InterruptedRunError(RuntimeError):
    pass


def _run(name: str, overrides: list[str], out: Path, **options: Any) -> dict[str, Any]:
    opts = sim.SimOptions(progress=False, **options)
    return sim.simulate(load_scenario(name, overrides), out, options=opts)


def _epochs(out: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def interrupt_and_resume(
    name: str, overrides: list[str], out: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> dict[str, Any]:
    """Run with a checkpoint after every epoch, fail in epoch 2, resume."""
    real = RecsysApp.record

    def interrupted(self: RecsysApp, t: int, *args: Any) -> Any:
        if t == 2:
            raise InterruptedRunError("stopped in epoch 2")
        return real(self, t, *args)

    with monkeypatch.context() as m:
        m.setattr(RecsysApp, "record", interrupted)
        with pytest.raises(InterruptedRunError):
            _run(name, overrides, out, checkpoint_every=1, **options)
    failed = json.loads((out / "summary.json").read_text())
    assert failed["status"].startswith("failed: InterruptedRunError") and failed["epochs"] == 2
    assert _epochs(out) == [0, 1]
    resumed = _run(name, overrides, out, checkpoint_every=1, resume=True, **options)
    assert resumed["status"] == "completed" and resumed["epochs"] == 3
    assert _epochs(out) == [0, 1, 2]
    return resumed


def test_fedmf_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _run("fedmf-synthetic", FEDMF, tmp_path / "full")
    resumed = interrupt_and_resume("fedmf-synthetic", FEDMF, tmp_path / "cut", monkeypatch)
    a, b = RatingsModel.load(tmp_path / "full"), RatingsModel.load(tmp_path / "cut")
    assert np.array_equal(a.U, b.U) and np.array_equal(a.V, b.V)
    for key in ("train_rmse", "test_rmse", "plain_test_rmse"):
        assert resumed[key] == full[key], key


@pytest.mark.parametrize("extra", [[], ["crypto.hide_pattern=true"]], ids=["clear", "hidden"])
def test_csr_resume_matches_to_ckks_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    # hide_pattern: the resumed users draw fresh secret dummies, so the slot layout
    # differs from the interrupted run's; the restored per-user/per-item state does not
    overrides = [*CSR, *extra]
    full = _run("csr-fhe-mf-synthetic", overrides, tmp_path / "full")
    resumed = interrupt_and_resume("csr-fhe-mf-synthetic", overrides, tmp_path / "cut", monkeypatch)
    for key in ("train_rmse", "test_rmse"):
        assert resumed[key] == pytest.approx(full[key], abs=CKKS_RMSE_TOL), key
    # the resumed epoch trains on: a resume that restarted from the initial
    # factors (or unmasked nothing) would be far off
    a, b = RatingsModel.load(tmp_path / "full"), RatingsModel.load(tmp_path / "cut")
    assert np.allclose(a.U, b.U, atol=1e-3) and np.allclose(a.V, b.V, atol=1e-3)


def test_checkpoint_files_hold_each_party_state_and_no_key(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    summary = _run("fedmf-synthetic", FEDMF, out, checkpoint_every=2)
    n = summary["n_users"]
    root = out / CHECKPOINT_DIR
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    files = sorted(root.glob("outer-*/agent-*.npz"))
    assert len(files) == n + 1
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    states = [state_from_npz(f.read_bytes()) for f in files]
    assert states[0] == {"role": "server", "epoch": 2}
    assert all(sorted(s) == ["epoch", "role", "vector"] for s in states[1:-1])
    assert sorted(states[-1]) == ["V", "epoch", "role", "vector"]  # the last user keeps V
    for f in files:  # numbers only: no pickle, no key material
        with np.load(f, allow_pickle=False) as z:
            assert all(z[k].dtype.kind in "iufU" for k in z.files)

    csr_out = tmp_path / "csr"
    _run("csr-fhe-mf-synthetic", CSR, csr_out, checkpoint_every=3)
    meta = json.loads((csr_out / CHECKPOINT_DIR / "latest.json").read_text())["meta"]
    ckpt = load_checkpoint(csr_out, meta)
    roles = {i: state_from_npz(b) for i, b in ckpt.states.items()}
    assert sorted(roles[0]) == ["M_U", "M_V", "epoch", "role"] and roles[0]["role"] == "rs"
    assert sorted(roles[1]) == ["A_U", "A_V", "epoch", "role"] and roles[1]["role"] == "csp"
    assert all(r == {"role": "user"} for i, r in roles.items() if i >= 2)


def test_resume_of_a_changed_job_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    _run("fedmf-synthetic", FEDMF, out, checkpoint_every=1)
    with pytest.raises(
        CheckpointError, match=r"configuration changed \(lr: 0.02 in the checkpoint, 0.002 now\)"
    ):
        _run("fedmf-synthetic", [*FEDMF, "lr=0.002"], out, resume=True)
    with pytest.raises(CheckpointError, match="belongs to another job"):
        _run("csr-fhe-mf-synthetic", CSR, out, resume=True)


def test_resume_at_the_end_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    _run("fedmf-synthetic", FEDMF, out, checkpoint_every=3)
    with pytest.raises(Exception, match="nothing to resume"):
        _run("fedmf-synthetic", FEDMF, out, resume=True)


def test_resume_keeps_network_emulation_and_refuses_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = NetworkModel(latency_ms=20.0, seed=4)
    full = _run("fedmf-synthetic", FEDMF, tmp_path / "full", network=net)
    resumed = interrupt_and_resume(
        "fedmf-synthetic", FEDMF, tmp_path / "cut", monkeypatch, network=net
    )
    # every epoch's simulated time is in the total (the resumed setup's included)
    epochs = sum(
        json.loads(x)["simulated_network_s"]
        for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    )
    assert epochs == pytest.approx(full["simulated_network_s"] - full["network"]["setup_s"])
    assert resumed["simulated_network_s"] == pytest.approx(epochs + resumed["network"]["setup_s"])
    # a summary cannot add emulated and unemulated epochs: a changed network is refused
    with pytest.raises(
        CheckpointError, match=r'network: {"bandwidth_mbps": null.* in the checkpoint, null now'
    ):
        _run("fedmf-synthetic", FEDMF, tmp_path / "cut", resume=True)


@pytest.mark.parametrize("option", [{"checkpoint_every": 1}, {"resume": True}])
def test_an_app_without_checkpoint_identity_refuses_in_one_line(option: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError, match=r"^toy has no checkpoints; drop --checkpoint-every"):
        refuse_checkpoints("toy", sim.SimOptions(progress=False, **option))
    refuse_checkpoints("toy", sim.SimOptions(progress=False))  # nothing asked, nothing refused
