"""The protocol registry: one line per protocol, the only place that lists them.

Each entry names, as ``"module:attribute"`` strings imported when first needed
(so listing protocols imports none of them), the protocol's scenario dataclass,
its ``simulate`` runner (every backend: it drives its roles on a grid, see
``simulations/grid.py``) and, where it can be deployed over gRPC, the class of
its deployed party. ``cipherfact simulate``, scenario loading, ``deploy`` and
the field reference find a protocol here and nowhere else, so a new protocol
is its own folder under ``cipherfact/protocols/`` plus one line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["PROTOCOLS", "ProtocolEntry", "UnknownProtocolError", "entry", "load"]


class UnknownProtocolError(ValueError):
    """A protocol name that is not registered, or a registered part that cannot load."""


@dataclass(frozen=True)
class ProtocolEntry:
    """Where a protocol's parts live (``"module:attribute"``).

    ``scenario``: the scenario dataclass (``protocol = "<name>"`` in a scenario
    file selects it). ``simulate``: ``runner(scenario, out_dir, options) ->
    summary`` for every backend. ``node``: the deployed party's class
    (``BaseNode`` subclass), None where the protocol cannot be deployed.
    """

    scenario: str
    simulate: str
    node: str | None = None
    #: the bundled scenario ``cipherfact simulate <protocol>`` starts from (one's own
    #: data: ``--data FILE``)
    defaults: str | None = None


PROTOCOLS: dict[str, ProtocolEntry] = {
    "ppdnmf": ProtocolEntry(
        scenario="cipherfact.simulations.scenario:PPDNMFScenario",
        simulate="cipherfact.protocols.ppdnmf.app:simulate_ppdnmf",
        node="cipherfact.deploy.node:Node",
        defaults="ppdnmf-synthetic",
    ),
    "csr_fhe_mf": ProtocolEntry(
        scenario="cipherfact.protocols.ratings.scenario:CsrFheMFScenario",
        simulate="cipherfact.protocols.ratings.app:simulate_recsys",
        node="cipherfact.deploy.csr_node:CsrNode",
        defaults="csr-fhe-mf-synthetic",
    ),
    "fedmf": ProtocolEntry(
        scenario="cipherfact.protocols.ratings.scenario:FedMFScenario",
        simulate="cipherfact.protocols.ratings.app:simulate_recsys",
        node="cipherfact.deploy.fedmf_node:FedMFNode",
        defaults="fedmf-synthetic",
    ),
}


def entry(protocol: str) -> ProtocolEntry:
    """The registry entry of ``protocol``; a one-line error naming the known ones."""
    found = PROTOCOLS.get(protocol)
    if found is None:
        raise UnknownProtocolError(f"unknown protocol {protocol!r} (known: {sorted(PROTOCOLS)})")
    return found


def load(protocol: str, part: str) -> Any:
    """Import part ``part`` ("scenario", "simulate", "node") of ``protocol``."""
    path = getattr(entry(protocol), part)
    if path is None:
        raise UnknownProtocolError(f"protocol {protocol!r} has no {part}")
    module, attr = path.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownProtocolError(f"protocol {protocol!r} is not available: {exc}") from exc


def protocol_named(name: str) -> str | None:
    """The protocol a scenario name like ``ppdnmf`` or ``csr-fhe-mf`` names, if any."""
    key = name.replace("-", "_")
    return key if key in PROTOCOLS else None


def deployable() -> list[str]:
    """Protocols with a deployed party."""
    return sorted(name for name, e in PROTOCOLS.items() if e.node is not None)
