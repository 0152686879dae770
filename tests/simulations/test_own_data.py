"""One's own data through the protocol-named scenarios: ``cipherfact simulate
ppdnmf --data X.npy`` and ``cipherfact simulate fedmf --data ratings.csv``; the
results describe the file, and ``python -m cipherfact`` is the same command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cipherfact.cli import main
from cipherfact.simulations.scenario import ScenarioError, load_scenario


def test_protocol_names_load_their_bundled_defaults() -> None:
    assert load_scenario("ppdnmf").name == "ppdnmf-synthetic"
    assert load_scenario("csr-fhe-mf").protocol == "csr_fhe_mf"
    assert load_scenario("fedmf", ["epochs=2"]).epochs == 2
    with pytest.raises(ScenarioError, match="unknown scenario 'nmf'"):
        load_scenario("nmf")


def test_own_matrix_through_simulate_ppdnmf(tmp_path: Path) -> None:
    X = np.random.default_rng(3).exponential(size=(12, 40))
    np.save(tmp_path / "mine.npy", X)
    out = tmp_path / "run"
    args = ["simulate", "ppdnmf", "--data", str(tmp_path / "mine.npy"), "--out", str(out),
            "--quiet", "--set", "n_agents=4", "--set", "rank=3", "--set", "outer_iters=2",
            "--set", "inner_iters=2", "--set", "crypto.scheme=none"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_shape"] == [12, 40]
    assert "rows" not in summary["scenario"]["data"]  # no generator sizes next to the file's
    with np.load(out / "factors.npz") as f:
        assert f["W_0"].shape == (12, 3)


def test_own_ratings_through_simulate_fedmf_and_wrong_kind(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "ratings.csv"
    rows = [f"{u},{i},{(u * i) % 5 + 1}" for u in range(6) for i in range(0, 12, 2)]
    csv.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    args = ["simulate", "fedmf", "--data", str(csv), "--out", str(out), "--quiet",
            "--set", "epochs=1", "--set", "crypto.key_bits=512",
            "--set", "crypto.insecure_test_keys=true"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_users"] == 6 and summary["model"] == "model.npz"
    np.save(tmp_path / "matrix.npy", np.ones((4, 4)))
    assert main([*args[:2], "--data", str(tmp_path / "matrix.npy"), *args[4:]]) == 2
    err = capsys.readouterr().err
    assert "ratings" in err and "Traceback" not in err


def test_python_dash_m_cipherfact() -> None:
    proc = subprocess.run([sys.executable, "-m", "cipherfact", "--version"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("cipherfact ")
