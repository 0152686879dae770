"""Scenario loading: bundled names, TOML files, overrides, strict fields."""

from __future__ import annotations

import pytest

from cipherfact.simulations.scenario import (
    PPDNMFScenario,
    ScenarioError,
    bundled_scenarios,
    load_scenario,
    parse_override,
)


def test_bundled_scenarios_load_with_the_papers_setup():
    assert {"ppdnmf-synthetic", "ppdnmf-digits"} <= set(bundled_scenarios())
    s = load_scenario("ppdnmf-synthetic")
    assert isinstance(s, PPDNMFScenario)
    assert (s.n_agents, s.rank, s.outer_iters, s.inner_iters) == (10, 5, 100, 30)
    assert (s.data.rows, s.data.cols, s.data.snr_db) == (30, 200, 20.0)
    assert s.topology.degree == 3.0 and s.crypto.key_bits == 2048
    assert load_scenario("ppdnmf-digits").data.kind == "digits"


def test_overrides_reach_nested_fields_and_are_typed():
    s = load_scenario(
        "ppdnmf-synthetic",
        ["crypto.key_bits=3072", "outer_iters=20", "topology.kind=ring", "data.snr_db=10"],
    )
    assert s.crypto.key_bits == 3072 and s.outer_iters == 20
    assert s.topology.kind == "ring" and s.data.snr_db == 10.0


def test_uneven_column_split():
    from cipherfact.protocols.ppdnmf.job import prepare_job

    sizes = [4, 40, 10, 26, 20, 30, 12, 18, 15, 25]
    job = prepare_job(load_scenario("ppdnmf-synthetic", [f"data.agent_cols={sizes}"]))
    assert [len(c) for c in job.columns] == sizes
    with pytest.raises(ValueError, match="sum"):
        prepare_job(load_scenario("ppdnmf-synthetic", ["data.agent_cols=[1, 2]", "n_agents=2"]))
    with pytest.raises(ScenarioError, match=r"'data.agent_cols\[1\]' must be int"):
        load_scenario("ppdnmf-synthetic", ["data.agent_cols=[1, 'x']"])


def test_toml_file_and_path_implies_file_data(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('seed = 3\nrank = 2\n[data]\npath = "x.npy"\n')
    s = load_scenario(str(path))
    assert s.name == "mine" and s.seed == 3 and s.data.kind == "file"
    s2 = load_scenario("ppdnmf-digits", ["data.path='y.csv'"])
    assert s2.data.kind == "file" and s2.data.path == "y.csv"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nope=1"], "unknown scenario field 'nope'"),
        (["topology.nope=1"], "unknown scenario field 'topology.nope'"),
        (["rank=2.5"], "'rank' must be int"),
        (["crypto=3"], "'crypto' must be a table"),
        (["n_agents=1"], "n_agents must be >= 2"),
        (["data.kind='video'"], "data.kind must be"),
        (["data.kind='file'"], "needs data.path"),
        (["protocol='teleport'"], "unknown protocol 'teleport'"),
    ],
)
def test_invalid_scenarios_are_refused(overrides, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario("ppdnmf-synthetic", overrides)


def test_bad_sources():
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario("missing.toml")
    with pytest.raises(ScenarioError, match="--set expects key=value"):
        parse_override("novalue")


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("rank = = 2")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(str(path))
