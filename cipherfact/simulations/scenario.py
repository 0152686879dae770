"""Scenario files: bundled names or TOML paths, ``--set`` overrides, strict fields.

A scenario is a tree of frozen dataclasses built once in the entry point and
passed down. Unknown fields are errors (a typo must never silently fall back
to a default), and every value is type-checked against its field.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ScenarioError(ValueError):
    """A scenario name, file, field or value is invalid."""


@dataclass(frozen=True)
class TopologySpec:
    kind: str = "geometric"
    degree: float | None = 3.0
    p: float | None = None
    radius: float | None = None
    k: int | None = None
    rewire: float | None = None
    min_degree: int | None = None  # every agent gets at least this many neighbours


@dataclass(frozen=True)
class DataSpec:
    kind: str = "synthetic"  # synthetic | digits | file
    rows: int = 30
    cols: int = 200
    snr_db: float | None = 20.0
    path: str = ""
    max_cols: int | None = None  # use only the first max_cols columns (digits, file)
    agent_cols: list[int] | None = None  # columns per agent (default: an even split)


@dataclass(frozen=True)
class CryptoSpec:
    # paillier: every exchanged message encrypted under its receiver's key.
    # none (alias plain): no encryption; secagg's masks still hide each term,
    # pairwise then runs as the unencrypted twin (no privacy; tests, benchmarks).
    scheme: str = "paillier"
    key_bits: int = 2048
    insecure_test_keys: bool = False
    frac_bits: int = 15
    int_bits: int = 6
    processes: int = 1
    # Short-exponent (DJN) randomness also for re-randomizing replies under a
    # neighbour's key: ~30x faster, rests on the DJN assumption (README).
    djn_public: bool = True


@dataclass(frozen=True)
class AdmmSpec:
    penalty: float = 10.0
    weight_bits: int = 6  # pairwise: private weights in [2^(b-1), 2^b)
    reply_noise_bits: int = 8  # pairwise: reply noise amplitude 2^(weight_bits + this)


@dataclass(frozen=True)
class SolverSpec:
    backend: str = "numpy"
    device: str = "cpu"
    rule: str = "hals"
    h_sweeps: int = 1


@dataclass(frozen=True)
class PPDNMFScenario:
    """Everything a ppdnmf simulation needs; the bundled files fill it in."""

    protocol: str = "ppdnmf"
    name: str = "custom"
    seed: int = 0
    n_agents: int = 10
    rank: int = 5
    outer_iters: int = 100
    inner_iters: int = 30
    exchange: str = "secagg"  # secagg (sum-only) | pairwise (paper-style, leaks more)
    topology: TopologySpec = field(default_factory=TopologySpec)
    data: DataSpec = field(default_factory=DataSpec)
    crypto: CryptoSpec = field(default_factory=CryptoSpec)
    admm: AdmmSpec = field(default_factory=AdmmSpec)
    solver: SolverSpec = field(default_factory=SolverSpec)

    def __post_init__(self) -> None:
        checks = {
            "n_agents": self.n_agents >= 2,
            "rank": self.rank >= 1,
            "outer_iters": self.outer_iters >= 1,
            "inner_iters": self.inner_iters >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ScenarioError(
                    f"{name} must be >= {2 if name == 'n_agents' else 1}, got {getattr(self, name)}"
                )
        if self.data.kind not in ("synthetic", "digits", "file"):
            raise ScenarioError(
                f"data.kind must be 'synthetic', 'digits' or 'file', got {self.data.kind!r}"
            )
        if self.data.kind == "file" and not self.data.path:
            raise ScenarioError("data.kind = 'file' needs data.path (a .npy or .csv matrix)")
        if self.crypto.scheme not in ("paillier", "none", "plain"):
            raise ScenarioError(
                f"crypto.scheme must be 'paillier' or 'none' (alias 'plain') for ppdnmf, got "
                f"{self.crypto.scheme!r}"
            )
        if self.exchange not in ("secagg", "pairwise"):
            raise ScenarioError(
                f"exchange must be 'secagg' or 'pairwise', got {self.exchange!r}"
            )
        if not 1 <= self.admm.reply_noise_bits <= 24:
            raise ScenarioError(
                f"admm.reply_noise_bits must be in [1, 24], got {self.admm.reply_noise_bits} "
                "(0 would let a neighbour read the private weight off a reply)"
            )


# protocol -> scenario dataclass, or "module:Class" imported when first needed
SCENARIO_TYPES: dict[str, type | str] = {
    "ppdnmf": PPDNMFScenario,
    "csr_fhe_mf": "cipherfact.simulations.recsys_scenario:CsrFheMFScenario",
    "fedmf": "cipherfact.simulations.recsys_scenario:FedMFScenario",
}


def scenario_type(protocol: str) -> type:
    entry = SCENARIO_TYPES.get(protocol)
    if entry is None:
        raise ScenarioError(f"unknown protocol {protocol!r} (known: {sorted(SCENARIO_TYPES)})")
    if isinstance(entry, str):
        module, attr = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ScenarioError(f"protocol {protocol!r} is not available: {exc}") from exc
    return entry


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("cipherfact.simulations") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_source(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {name_or_path!r} does not exist")
        text, label = path.read_text(encoding="utf-8"), path.stem
    else:
        folder = resources.files("cipherfact.simulations") / "scenarios"
        candidate = folder / f"{name_or_path}.toml"
        if not candidate.is_file():
            raise ScenarioError(
                f"unknown scenario {name_or_path!r}: not a file, and not one of the bundled "
                f"scenarios {bundled_scenarios()}"
            )
        text, label = candidate.read_text(encoding="utf-8"), name_or_path
    try:
        return label, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {name_or_path!r} is not valid TOML: {exc}") from exc


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as TOML, else as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set expects key=value, got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [part.strip() for part in key.strip().split(".")], value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = tree
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ScenarioError(f"--set {item!r}: {k!r} is a value, not a table")
            node = child
        node[keys[-1]] = value
    return tree


def _check_value(path: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(path, value, option)
            except ScenarioError as exc:
                errors.append(str(exc))
        raise ScenarioError(errors[0])
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if typing.get_origin(annotation) is list and isinstance(value, list):
        (item,) = typing.get_args(annotation)
        return [_check_value(f"{path}[{k}]", v, item) for k, v in enumerate(value)]
    expected = getattr(annotation, "__name__", str(annotation))
    raise ScenarioError(
        f"scenario field {path!r} must be {expected}, got {value!r} ({type(value).__name__})"
    )


def build_dataclass(cls: type, tree: Mapping[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from a nested mapping, refusing unknown fields and wrong types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - known)
    if unknown:
        where = f"{prefix}{unknown[0]}"
        section = f" of {prefix[:-1]}" if prefix else ""
        raise ScenarioError(
            f"unknown scenario field {where!r} (known fields{section}: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in tree.items():
        hint = hints[name]
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ScenarioError(f"scenario field {path!r} must be a table, got {value!r}")
            kwargs[name] = build_dataclass(hint, value, f"{path}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _check_value(path, value, hint)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(
            f"invalid scenario{' ' + prefix[:-1] if prefix else ''}: {exc}"
        ) from exc


def load_scenario(name_or_path: str, overrides: Sequence[str] = ()) -> Any:
    """Load a bundled scenario by name or a TOML file, then apply ``--set`` overrides."""
    label, tree = _read_source(name_or_path)
    tree = apply_overrides(tree, overrides)
    data = tree.get("data") if tree.get("protocol", "ppdnmf") == "ppdnmf" else None
    if isinstance(data, dict) and data.get("path") and "kind" not in data:
        data["kind"] = "file"
    elif (
        isinstance(data, dict)
        and data.get("path")
        and any(o.split("=", 1)[0].strip() == "data.path" for o in overrides)
    ):
        data["kind"] = "file"  # --set data.path=... implies a file, whatever the scenario said
    tree.setdefault("name", label)
    return build_dataclass(scenario_type(tree.get("protocol", "ppdnmf")), tree)


def scenario_to_dict(scenario: Any) -> dict[str, Any]:
    """JSON-ready copy of a scenario, recorded in every run's summary."""
    return dataclasses.asdict(scenario)
