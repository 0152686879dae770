"""``cipherfact bench protocols``: output files, per-point fields, reproducibility."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from cipherfact.bench.protocols_plan import NETWORK, SWEEPS, PointSpec, plan_points
from cipherfact.bench.protocols_points import CSV_FIELDS, point_row
from cipherfact.cli import main
from cipherfact.protocols.csr_fhe_mf.layout import CSR_PARAM_SETS, plan_csr_params
from cipherfact.protocols.ppdnmf.job import prepare_job
from cipherfact.simulations.scenario import load_scenario

OUTPUTS = (
    "points.csv",
    "points.json",
    "table.md",
    "cost_vs_agents.png",
    "bytes_vs_agents.png",
    "accuracy_ppdnmf.png",
    "accuracy_csr_fhe_mf.png",
    "accuracy_fedmf.png",
)


def _run(out: Path, *extra: str, size: str = "--tiny") -> dict[str, Any]:
    assert main(["bench", "protocols", size, "--out", str(out), *extra]) == 0
    return json.loads((out / "points.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The real ``--quick`` sweep (about 35 s on 2 idle cores)."""
    out = tmp_path_factory.mktemp("bench-protocols-quick")
    return out, _run(out, size="--quick")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench-protocols-tiny")
    return out, _run(out)


def test_outputs_exist(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick_run
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    for point in data["points"]:
        assert (out / point["label"] / "summary.json").exists()
        assert (out / point["label"] / "metrics.jsonl").stat().st_size > 0


def test_every_point_has_its_fields(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick_run
    points = data["points"]
    assert [p["label"] for p in points] == [s.label for s in plan_points("quick", 0)]
    assert {p["protocol"] for p in points} == {"ppdnmf", "csr_fhe_mf", "fedmf"}
    for p in points:
        assert p["accuracy_metric"] in ("rel_error", "test_rmse")
        assert math.isfinite(p["accuracy"]) and p["accuracy"] > 0
        assert math.isfinite(p["twin_accuracy"])
        assert p["wall_s"] > 0
        assert p["bytes_total"] > 0 and p["bytes_per_edge_max"] > 0
        assert p["bytes_per_party_max"] > 0
        assert p["seed"] == 0 and p["scenario"]["seed"] == 0
        assert p["versions"]["numpy"] and p["versions"]["cipherfact"]
        assert p["machine"]["cores"] >= 1 and p["machine"]["cpu"]
        assert p["sweep"] in SWEEPS
        if p["protocol"] == "ppdnmf":
            split = p["crypto_s"] + p["compute_s"] + p["transport_s"]
            assert 0 < split <= p["wall_s"]
            assert p["simulated_network_s"] > 0
            assert (p["network_latency_ms"], p["network_bandwidth_mbps"]) == NETWORK
        else:
            assert p["simulated_network_s"] is None
    assert data["command"].startswith("cipherfact bench protocols --quick --out ")


def test_encrypted_ppdnmf_equals_its_plain_twin(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick_run
    by_label = {p["label"]: p for p in data["points"]}
    for n in (4, 8):
        plain, enc = by_label[f"ppdnmf-plain-n{n}"], by_label[f"ppdnmf-paillier1024-n{n}"]
        assert enc["accuracy"] == plain["accuracy"]  # the exact (integer) twin
        # float run without fixed point: equal up to the 15-bit encoding's resolution
        assert enc["twin_accuracy"] == pytest.approx(enc["accuracy"], abs=2.0**-15)
        assert enc["bytes_total"] > plain["bytes_total"]
        assert enc["crypto_s"] > plain["crypto_s"]
        assert enc["insecure_test_keys"] and enc["key_bits"] == 1024
        assert enc["n_agents"] == n


def test_csv_and_table(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick_run
    with (out / "points.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["points"])
    assert set(CSV_FIELDS) <= set(rows[0])
    assert [float(r["accuracy"]) for r in rows] == [p["accuracy"] for p in data["points"]]
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.startswith(f"Command: `{data['command']}`")
    assert "insecure_test_keys=true" in table
    assert all(f"| {p['label']} |" in table for p in data["points"])


def test_same_seed_reproduces_accuracy(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = tiny_run
    second = _run(tmp_path)
    for a, b in zip(first["points"], second["points"], strict=True):
        assert a["label"] == b["label"]
        assert a["twin_accuracy"] == b["twin_accuracy"], a["label"]
        if a["accuracy_deterministic"]:
            assert a["accuracy"] == b["accuracy"], a["label"]
        else:  # CKKS: encryption noise from the OS, well below the twin gap bound
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-3), a["label"]


def test_other_seed_changes_accuracy(tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, first = tiny_run
    other = _run(tmp_path, "--seed", "1")
    assert all(p["seed"] == 1 for p in other["points"])
    assert first["points"][0]["accuracy"] != other["points"][0]["accuracy"]


def test_quick_point_list() -> None:
    points = plan_points("quick", 0)
    labels = [p.label for p in points]
    assert labels[:4] == [
        "ppdnmf-plain-n4",
        "ppdnmf-paillier1024-n4",
        "ppdnmf-plain-n8",
        "ppdnmf-paillier1024-n8",
    ]
    assert set(labels[4:]) == {
        "ppdnmf-plain-n8-ring",
        "ppdnmf-plain-n8-complete",
        "ppdnmf-plain-n8-60x400",
        "ppdnmf-plain-n8-rank10",
        "csr_fhe_mf-ckks",
        "fedmf-full-paillier-packed",
        "fedmf-part-paillier-packed",
        "fedmf-full-plain",
    }
    assert len(set(labels)) == len(labels)
    for p in points:
        if "paillier" in p.label:
            assert "crypto.insecure_test_keys=true" in p.overrides


def test_full_point_list_uses_real_keys() -> None:
    points = plan_points("full", 3)
    bits = {p.swept["key_bits"] for p in points if p.label.startswith("ppdnmf-paillier")}
    assert bits == {2048, 3072}
    agents = [p for p in points if p.sweep == "agents"]
    scaling = [p for p in agents if p.label.startswith("ppdnmf-plain")]
    assert {p.swept["n_agents"] for p in scaling} == {10, 20, 50, 100, 200}
    for p in scaling:  # every size builds: connected graph, enough columns
        job = prepare_job(load_scenario(p.scenario, list(p.overrides)))
        assert job.n_agents == p.swept["n_agents"] and job.graph.is_connected()
    assert all("seed=3" in p.overrides for p in points)
    assert not any("crypto.insecure_test_keys=true" in p.overrides for p in points)


def _ppdnmf_fact(point: PointSpec) -> tuple[str, Any]:
    """What a ppdnmf sweep point really runs: its graph's degrees, data shape or rank."""
    job = prepare_job(load_scenario(point.scenario, list(point.overrides)))
    if point.sweep == "topology":
        degrees = sorted({job.graph.degree(i) for i in range(job.n_agents)})
        return point.swept["topology"], degrees
    if point.sweep == "data_size":
        return "shape", list(job.X.shape)
    return "rank", job.config.rank


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_plans_hold_the_new_sweeps_with_valid_overrides(mode: str) -> None:
    points = plan_points(mode, 0)
    sweeps = {p.sweep for p in points}
    assert {"agents", "topology", "data_size", "rank", "protocol"} <= sweeps
    assert ({"packing", "ckks_params", "key_bits"} <= sweeps) == (mode == "full")
    for p in points:
        scenario = load_scenario(p.scenario, list(p.overrides))  # valid, not run
        assert scenario.seed == 0
        assert (p.network == NETWORK) == (p.scenario == "ppdnmf-synthetic"), p.label
    facts = dict(_ppdnmf_fact(p) for p in points if p.sweep in ("topology", "data_size"))
    assert facts["ring"] == [2] and facts["complete"] == [7]  # every agent's degree
    assert facts["shape"] == ([60, 400] if mode == "quick" else [120, 800])
    ranks = sorted(_ppdnmf_fact(p)[1] for p in points if p.sweep == "rank")
    assert ranks == ([10] if mode == "quick" else [3, 10])


def test_full_plan_sweeps_ckks_sets_and_fedmf_packing() -> None:
    points = plan_points("full", 0)
    csr = [p for p in points if p.sweep == "ckks_params"]
    assert {p.swept["ckks_params"] for p in csr} == set(CSR_PARAM_SETS)
    for p in csr:
        c = load_scenario(p.scenario, list(p.overrides)).crypto
        assert c.params == p.swept["ckks_params"]
        # the planner accepts each set at the job's depth (2) with the chosen mask
        planned = plan_csr_params(2, c.value_bound, c.mask_bits, c.params)
        assert planned.name == c.params
    packing = {p.swept["packing"]: p for p in points if p.sweep == "packing"}
    assert set(packing) == {True, False}
    for packed, p in packing.items():
        s = load_scenario(p.scenario, list(p.overrides))
        assert s.crypto.naive is (not packed) and s.data.n_users == 20
        assert s.crypto.key_bits == 2048 and not s.crypto.insecure_test_keys


def test_tiny_run_records_simulated_network_time(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = tiny_run
    with (out / "points.csv").open(encoding="utf-8") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    for p in data["points"]:
        if p["protocol"] == "ppdnmf":
            assert p["simulated_network_s"] > 0.05  # at least one 50 ms latency
            summary = json.loads((out / p["label"] / "summary.json").read_text("utf-8"))
            assert summary["network"]["bandwidth_mbps"] == NETWORK[1]
            assert float(rows[p["label"]]["simulated_network_s"]) == p["simulated_network_s"]
        else:
            assert rows[p["label"]]["simulated_network_s"] == ""
    assert "sim net s" in (out / "table.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sweep": "colour"}, "sweep must be one of"),
        ({"network": (50.0, 0.0)}, r"network must be \(latency_ms >= 0, bandwidth_mbps > 0\)"),
        ({"network": (-1.0, 10.0)}, "network must be"),
    ],
)
def test_point_spec_rejects_bad_sweep_or_network(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PointSpec("x", "ppdnmf-synthetic", (), **kwargs)


@pytest.mark.parametrize(
    ("mode", "seed", "match"),
    [("huge", 0, "mode must be one of"), ("quick", -1, "seed must be an int >= 0")],
)
def test_plan_rejects_bad_input(mode: str, seed: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_points(mode, seed)


@pytest.mark.parametrize("label", ["", "a/b", "a b"])
def test_point_label_is_a_folder_name(label: str) -> None:
    with pytest.raises(ValueError, match="label must be non-empty"):
        PointSpec(label, "ppdnmf-synthetic", ())


def test_point_row_rejects_failed_run() -> None:
    spec = PointSpec("x", "ppdnmf-synthetic", ())
    with pytest.raises(ValueError, match="did not complete: 'failed: boom'"):
        point_row(spec, {"status": "failed: boom"})


def test_point_row_rejects_non_finite_accuracy(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = tiny_run
    label = data["points"][0]["label"]
    summary = json.loads((out / label / "summary.json").read_text(encoding="utf-8"))
    summary["rel_error"] = float("nan")
    with pytest.raises(ValueError, match="non-finite accuracy nan"):
        point_row(PointSpec(label, "ppdnmf-synthetic", ()), summary)


def test_bad_seed_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "protocols", "--tiny", "--seed", "-2", "--out", str(tmp_path)]) == 2
    assert "seed must be an int >= 0, got -2" in capsys.readouterr().err
