"""`cipherfact simulate`: outputs, progress-free runs, and errors before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cipherfact import cli
from cipherfact.protocols.ppdnmf import job as ppdnmf_job
from cipherfact.simulations.results import read_metrics

TINY = [
    "--set", "n_agents=4",
    "--set", "rank=2",
    "--set", "data.rows=10",
    "--set", "data.cols=24",
    "--set", "outer_iters=3",
    "--set", "inner_iters=3",
]  # fmt: skip


def run_cli(*args: str) -> int:
    return cli.main(["simulate", "ppdnmf-synthetic", "--quiet", *args])


def test_simulate_writes_every_output(tmp_path):
    out = tmp_path / "run"
    rc = run_cli(*TINY, "--set", "crypto.scheme=plain", "--out", str(out))
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "protocol",
        "scheme",
        "n_agents",
        "rel_error",
        "centralized_rel_error",
        "consensus_spread",
        "wall_s",
        "bytes_total",
        "messages_total",
    ):
        assert key in summary, key
    assert summary["status"] == "completed"
    assert summary["protocol"] == "ppdnmf" and summary["scheme"] == "plain"
    assert summary["n_agents"] == 4
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["outer"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert {
            "rel_error",
            "consensus_spread",
            "bytes",
            "crypto_s",
            "compute_s",
            "transport_s",
        } <= set(m)
        assert m["bytes"] > 0
    assert summary["bytes_total"] == sum(m["bytes"] for m in metrics) + summary["bytes_setup"]
    factors = np.load(out / "factors.npz")
    assert {f"W_{i}" for i in range(4)} <= set(factors.files)
    assert factors["W_0"].shape == (10, 2) and factors["H_0"].shape == (2, 6)
    assert abs(summary["rel_error"] - metrics[-1]["rel_error"]) < 1e-12
    for png in ("error.png", "bytes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_twin_runs_write_bit_identical_factor_files(tmp_path):
    keys = ["--set", "crypto.key_bits=512", "--set", "crypto.insecure_test_keys=true"]
    assert run_cli(*TINY, *keys, "--out", str(tmp_path / "p")) == 0
    assert run_cli(*TINY, *keys, "--set", "crypto.scheme=plain", "--out", str(tmp_path / "q")) == 0
    assert (tmp_path / "p" / "factors.npz").read_bytes() == (
        tmp_path / "q" / "factors.npz"
    ).read_bytes()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rank=40"], "rank must be between 1 and min"),
        (["n_agents=30"], r"more agents \(30\) than columns \(24\)"),
        (["topology.kind='erdos_renyi'", "topology.degree=0.2"], "erdos_renyi"),
        (["colour='blue'"], "unknown scenario field 'colour'"),
        (["crypto.colour='blue'"], "unknown scenario field 'crypto.colour'"),
        (["outer_iters='many'"], "must be int"),
        (["crypto.key_bits=1024"], "below 2048"),
        (["crypto.scheme='rot13'"], "crypto.scheme must be"),
    ],
)
def test_bad_input_fails_before_any_key_is_generated(
    monkeypatch, tmp_path, capsys, overrides, message
):
    def forbidden(*_a, **_k):
        raise AssertionError("keys generated before the input was checked")

    monkeypatch.setattr(ppdnmf_job, "generate_keys", forbidden)
    args = [a for o in overrides for a in ("--set", o)]
    rc = run_cli(*TINY[:-4], *args, "--out", str(tmp_path / "bad"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.array([[1.0, -2.0], [3.0, 4.0]]), "Negative values in"),
        (np.array([[1.0, np.nan], [3.0, 4.0]]), "non-finite value nan"),
    ],
)
def test_bad_data_file_is_refused(tmp_path, capsys, matrix, message):
    path = tmp_path / "x.npy"
    np.save(path, np.tile(matrix, (3, 4)))
    rc = run_cli(
        "--set",
        f"data.path='{path}'",
        "--set",
        "n_agents=2",
        "--set",
        "rank=1",
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 2
    assert message in capsys.readouterr().err


def test_user_matrix_from_csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (8, 5)) @ rng.uniform(0, 1, (5, 30))
    path = tmp_path / "x.csv"
    np.savetxt(path, X, delimiter=",")
    out = tmp_path / "o"
    rc = run_cli(
        "--set",
        f"data.path='{path}'",
        "--set",
        "n_agents=3",
        "--set",
        "rank=3",
        "--set",
        "topology.degree=2.0",
        "--set",
        "outer_iters=2",
        "--set",
        "inner_iters=2",
        "--set",
        "crypto.scheme=plain",
        "--out",
        str(out),
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_shape"] == [8, 30]
    assert summary["scenario"]["data"]["kind"] == "file"


def test_unknown_scenario_name(capsys):
    assert cli.main(["simulate", "no-such-scenario"]) == 2
    assert "bundled scenarios" in capsys.readouterr().err


def test_metrics_written_counts_the_complete_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What an interrupted run reports as done: the lines its metrics file kept
    (a signal can land after a line is written and before the runner counts it)."""
    from cipherfact.simulations.results import RunWriter

    writer = RunWriter(tmp_path / "run")
    assert writer.metrics_written() == 0
    for t in range(3):
        writer.append_metrics({"outer": t, "wall_s": 0.1})
    assert writer.metrics_written() == 3
    writer.truncate_metrics(2)
    assert RunWriter(tmp_path / "run", append=True).metrics_written() == 2
    assert RunWriter(tmp_path / "run").metrics_written() == 0  # a new run starts empty
