"""``cipherfact bench solvers`` runs end to end on a tiny size and reports every method."""

from __future__ import annotations

import argparse
import json

import pytest

from cipherfact.bench import solvers as bench


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", (40, 30, 3, 2))
    monkeypatch.setattr(bench, "REPEATS", 2)


def _args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(["--quick", "--out", str(tmp_path), *extra])


def test_quick_run_writes_table_and_json(tiny, tmp_path, capsys):
    assert bench.main(_args(tmp_path, "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "solvers.json").read_text())
    assert printed["rows"] == saved["rows"]
    methods = {r["method"] for r in saved["rows"]}
    assert {"numpy-mu", "numpy-hals", "sklearn-mu", "sklearn-cd"} <= methods
    assert {r["matrix"] for r in saved["rows"]} == {"dense", "csr2%"}
    for row in saved["rows"]:
        assert row["ms_per_iter"] > 0 and len(row["ms_all_repeats"]) == 2
        if row["method"].startswith("sklearn"):
            assert row["ratio_vs_sklearn"] == 1.0
    assert saved["context"]["threads"] == 1
    table = (tmp_path / "solvers.md").read_text()
    assert "| dense | 40x30, r=3 | numpy-hals |" in table and "threads: 1" in table


def test_csr_matrix_has_the_requested_density():
    mats = bench.make_matrices(200, 100, 4, seed=0)
    density = mats["csr2%"].nnz / (200 * 100)
    assert 0.015 < density < 0.025 and mats["dense"].min() > 0


@pytest.mark.parametrize(
    "flag,match",
    [
        ("--threads=0", "--threads must be >= 1, got 0"),
        ("--iters=0", "--iters must be >= 1, got 0"),
    ],
)
def test_bad_arguments(tmp_path, flag, match):
    with pytest.raises(ValueError, match=match):
        bench.main(_args(tmp_path, flag))
