"""The field reference (docs/scenario-reference.md) and `cipherfact scenario list|show`.

The page is generated from the scenario dataclasses; these tests fail when a
field is added without a description, when a description outlives its field,
when the committed page is stale, and when a run writes a summary field the
glossary does not explain.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from cipherfact import cli
from cipherfact.registry import PROTOCOLS
from cipherfact.simulations.scenario import (
    bundled_scenarios,
    load_scenario,
    scenario_type,
)
from cipherfact.simulations.scenario_reference import (
    FIELD_DOCS,
    SUMMARY_DOCS,
    reference_markdown,
    scenario_fields,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenario-reference.md"


def _all_fields() -> list[tuple[str, str, type, dataclasses.Field]]:
    return [
        (protocol, dotted, owner, f)
        for protocol in PROTOCOLS
        for dotted, owner, f in scenario_fields(scenario_type(protocol))
    ]


def test_every_field_of_every_protocol_is_described() -> None:
    missing = [f"{p}: {d}" for p, d, owner, f in _all_fields()
               if f.name not in FIELD_DOCS.get(owner.__name__, {})]  # fmt: skip
    assert not missing, f"describe these in scenario_reference.FIELD_DOCS: {missing}"
    described = {(cls, name) for cls, fields in FIELD_DOCS.items() for name in fields}
    existing = {(owner.__name__, f.name) for _p, _d, owner, f in _all_fields()}
    stale = sorted(described - existing)
    assert not stale, f"descriptions of fields that no longer exist: {stale}"


def test_the_committed_page_is_the_generated_one() -> None:
    assert DOC.read_text() == reference_markdown(), (
        "docs/scenario-reference.md is stale: cipherfact scenario reference > "
        "docs/scenario-reference.md"
    )


def test_the_page_lists_every_field_with_its_default() -> None:
    page = DOC.read_text()
    for protocol in PROTOCOLS:
        section = page.split(f"## {protocol}\n", 1)[1].split("\n## ", 1)[0]
        for dotted, _owner, f in scenario_fields(scenario_type(protocol)):
            row = re.search(rf"^\| `{re.escape(dotted)}` \|(.*)$", section, flags=re.M)
            assert row, f"{protocol}: no row for {dotted}"
            if isinstance(f.default, int | float | str) and not isinstance(f.default, bool):
                literal = json.dumps(f.default) if isinstance(f.default, str) else f.default
                assert f"`{literal}`" in row.group(1), (dotted, row.group(1))
    for name in ("epochs", "n_factors", "lr", "reg", "mode", "crypto.naive", "exchange",
                 "topology.degree", "admm.penalty", "data.path", "crypto.mask_bits"):  # fmt: skip
        assert f"| `{name}` |" in page, name
    for key in ("rel_error_gap", "estimated_total_s", "mf_reference_test_rmse",
                "predicted_error"):  # fmt: skip
        assert f"| `{key}` |" in page.split("## summary.json", 1)[1], key


RUNS = {
    "ppdnmf": ["ppdnmf-synthetic", "n_agents=4", "rank=2", "data.rows=10", "data.cols=24",
               "outer_iters=2", "inner_iters=2", "crypto.scheme='none'"],
    "csr_fhe_mf": ["csr-fhe-mf-synthetic", "data.n_users=12", "data.n_items=20",
                   "data.density=0.3", "epochs=1"],
    "fedmf": ["fedmf-synthetic", "data.n_users=10", "data.n_items=20", "data.density=0.3",
              "epochs=1", "crypto.scheme='plain'"],
}  # fmt: skip


@pytest.mark.parametrize("protocol", list(RUNS))
def test_every_summary_field_of_a_run_is_explained(protocol: str, tmp_path: Path) -> None:
    name, *sets = RUNS[protocol]
    argv = ["simulate", name, "--quiet", "--out", str(tmp_path)]
    if protocol == "ppdnmf":  # network emulation adds its fields
        argv += ["--latency-ms", "5", "--bandwidth-mbps", "10"]
    assert cli.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    unexplained = sorted(set(summary) - set(SUMMARY_DOCS))
    assert not unexplained, f"add to scenario_reference.SUMMARY_DOCS: {unexplained}"
    for key in summary:
        protocols = SUMMARY_DOCS[key][0]
        assert protocols.startswith("all") or protocol in protocols, (key, protocols)


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize("name", bundled_scenarios())
def test_show_prints_every_field_and_reads_back_the_same(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scenario", "show", name]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "shown.toml"
    path.write_text(text)
    assert load_scenario(str(path)) == load_scenario(name)
    lines = set(text.splitlines())
    for dotted, _owner, _f in scenario_fields(type(load_scenario(name))):
        leaf = dotted.rsplit(".", 1)[-1]
        shown = f"[{leaf}]" in lines or f"# {leaf} is unset" in lines
        assert shown or any(line.startswith(f"{leaf} = ") for line in lines), dotted


def test_show_applies_overrides_and_marks_unused_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["scenario", "show", "ppdnmf-synthetic", "--set", "n_agents=6", "--set",
            "data.path='x.npy'", "--set", "topology.kind='ring'"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "\nn_agents = 6\n" in text and 'path = "x.npy"' in text and 'kind = "file"' in text
    assert "rows = 30  # unused: the data come from data.path" in text
    assert "# degree is unset" in text  # the file's degree does not follow kind = ring
    (tmp_path / "s.toml").write_text(text)
    assert load_scenario(str(tmp_path / "s.toml")).n_agents == 6


def test_show_refuses_a_bad_override_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scenario", "show", "ppdnmf-synthetic", "--set", "colour=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown scenario field 'colour'")


def test_list_names_each_bundled_scenario_with_its_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["scenario", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(bundled_scenarios())
    for line, name in zip(out, bundled_scenarios(), strict=True):
        assert line.split()[:2] == [name, load_scenario(name).protocol]
        assert len(line.split()) > 3  # a description follows


def test_reference_command_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scenario", "reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()
