"""`cipherfact simulate` for the recommendation scenarios: files, fields, sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cipherfact.data.ratings import synthetic_ratings
from cipherfact.protocols.ratings.job import load_split
from cipherfact.simulations.scenario import ScenarioError, load_scenario
from cipherfact.simulations.simulate import simulate

SMALL = ["data.n_users=16", "data.n_items=24", "data.density=0.25", "n_factors=2"]
REQUIRED = (
    "protocol",
    "train_rmse",
    "test_rmse",
    "plain_test_rmse",
    "epochs",
    "wall_s",
    "seconds_per_epoch",
    "bytes_total",
    "bytes_per_party",
    "seconds_per_party",
)


@pytest.mark.parametrize(
    ("name", "extra", "parties"),
    [
        ("csr-fhe-mf-synthetic", ["epochs=2"], {"rs", "csp", "users"}),
        (
            "fedmf-synthetic",
            ["epochs=2", "crypto.key_bits=512", "crypto.insecure_test_keys=true"],
            {"server", "users"},
        ),
    ],
)
def test_bundled_scenarios_write_results(tmp_path: Path, name, extra, parties) -> None:
    scenario = load_scenario(name, [*SMALL, *extra])
    summary = simulate(scenario, tmp_path, progress=False)
    assert summary["status"] == "completed"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["epochs"] == 2
    assert set(on_disk["bytes_per_party"]) == parties
    assert set(on_disk["seconds_per_party"]) == parties
    assert abs(on_disk["test_rmse"] - on_disk["plain_test_rmse"]) < 0.01
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]
    for png in ("rmse.png", "bytes.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_unknown_field_is_an_error() -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario field 'crypto\.mask_bitz'"):
        load_scenario("csr-fhe-mf-synthetic", ["crypto.mask_bitz=3"])
    with pytest.raises(ScenarioError, match=r"unknown scenario field 'data\.rows'"):
        load_scenario("fedmf-synthetic", ["data.rows=3"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.split=weird"], "data.split must be one of"),
        (["data.train=a.csv"], "must be given together"),
        (["mode=half"], "mode must be 'full' or 'part'"),
        (["crypto.scheme=ckks"], "crypto.scheme must be 'paillier' or 'plain'"),
    ],
)
def test_invalid_fedmf_values(overrides, match) -> None:
    with pytest.raises(ScenarioError, match=match):
        load_scenario("fedmf-synthetic", overrides)


def test_impossible_mask_is_refused_before_keys(tmp_path: Path) -> None:
    scenario = load_scenario("csr-fhe-mf-synthetic", [*SMALL, "crypto.mask_bits=45"])
    with pytest.raises(ScenarioError, match="mask_bits=45"):
        simulate(scenario, tmp_path, progress=False)


def _write(path: Path, rows) -> None:
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{i},{v:g},{t}" for u, i, v, t in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_data_sources(tmp_path: Path) -> None:
    r = synthetic_ratings(10, 15, 2, 0.4, rng=np.random.default_rng(0))
    rows = list(zip(r.users + 1, r.items + 100, r.values, r.timestamps.astype(int), strict=True))
    _write(tmp_path / "all.csv", rows)
    _write(tmp_path / "train.csv", rows[: len(rows) - 10])
    _write(tmp_path / "test.csv", rows[len(rows) - 10 :])
    base = load_scenario("csr-fhe-mf-synthetic", [f"data.path={tmp_path / 'all.csv'}"]).data
    split = load_split(base, 0)
    assert split.train.n_ratings + split.test.n_ratings == r.n_ratings
    last = load_scenario(
        "csr-fhe-mf-synthetic", [f"data.path={tmp_path / 'all.csv'}", "data.split=last_k"]
    ).data
    assert load_split(last, 0).test.n_ratings == 10  # one per user
    explicit = load_scenario(
        "fedmf-synthetic",
        [f"data.train={tmp_path / 'train.csv'}", f"data.test={tmp_path / 'test.csv'}"],
    ).data
    split = load_split(explicit, 0)
    assert split.train.n_ratings == len(rows) - 10
    assert split.test.n_ratings + split.n_dropped_test == 10
