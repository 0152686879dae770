"""The protocol registry is the one list of protocols: every part it names loads, and
every layer that needs a protocol (scenarios, simulate, deploy) finds it there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cipherfact import registry
from cipherfact.deploy.jobfile import JobFileError
from cipherfact.deploy.node_base import BaseNode
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.scenario import ScenarioError, bundled_scenarios, scenario_type


@pytest.mark.parametrize("protocol", sorted(registry.PROTOCOLS))
def test_every_registered_part_loads(protocol: str) -> None:
    cls = registry.load(protocol, "scenario")
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_fields__["protocol"].default == protocol
    assert scenario_type(protocol) is cls
    assert callable(registry.load(protocol, "simulate"))
    if registry.entry(protocol).node is not None:
        assert issubclass(registry.load(protocol, "node"), BaseNode)


def test_every_bundled_scenario_names_a_registered_protocol() -> None:
    from cipherfact.simulations.scenario import load_scenario

    protocols = {load_scenario(name).protocol for name in bundled_scenarios()}
    assert protocols == set(registry.PROTOCOLS)


def test_unknown_protocol_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(registry.UnknownProtocolError, match=r"unknown protocol 'nope' \(known: \["):
        registry.entry("nope")
    with pytest.raises(ScenarioError, match="unknown protocol 'nope'"):
        scenario_type("nope")

    @dataclasses.dataclass
    class Fake:
        protocol: str = "nope"

    with pytest.raises(ScenarioError, match="unknown protocol 'nope'"):
        sim.simulate(Fake(), tmp_path)


def test_a_protocol_without_a_node_cannot_be_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"ppdnmf", "csr_fhe_mf", "fedmf"} <= set(registry.deployable())
    nodeless = registry.ProtocolEntry(scenario="x:Y", simulate="x:run")
    monkeypatch.setitem(registry.PROTOCOLS, "nodeless", nodeless)
    assert "nodeless" not in registry.deployable()
    with pytest.raises(registry.UnknownProtocolError, match="protocol 'nodeless' has no node"):
        registry.load("nodeless", "node")


def test_resume_only_where_the_node_keeps_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    from cipherfact.deploy.csr_node import CsrNode
    from cipherfact.deploy.nodes import make_node

    class Deploy:
        class scenario:  # noqa: N801 - a stand-in for the scenario object
            protocol = "csr_fhe_mf"

    # every bundled protocol resumes; a node that keeps no checkpoints is refused
    monkeypatch.setattr(CsrNode, "supports_resume", False)
    with pytest.raises(
        JobFileError,
        match=r"csr_fhe_mf parties keep no checkpoints, so they cannot resume .*"
        r"parties resume for fedmf, ppdnmf\)",
    ):
        make_node(Deploy(), 0, resume_from=3)  # type: ignore[arg-type]
