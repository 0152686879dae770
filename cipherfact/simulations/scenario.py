"""Scenario files: bundled names or TOML paths, ``--set`` overrides, strict fields.

A scenario is a tree of frozen dataclasses built once in the entry point and
passed down. Unknown fields are errors (a typo must never silently fall back
to a default), and every value is type-checked against its field.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cipherfact.crypto.keys import MAX_KEY_BITS, MIN_TEST_KEY_BITS
from cipherfact.crypto.options import FAST_PATHS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ScenarioError(ValueError):
    """A scenario name, file, field or value is invalid."""


#: ``crypto.prefetch`` values (see ``CryptoSpec``).
PREFETCH_MODES = ("auto", "on", "off")
#: Most worker processes of one shared decryption pool.
MAX_PROCESSES = 1024


# Limits every scenario is checked against before any data is made or key generated.
#: Largest magnitude of a float that scales the arithmetic (penalty, learning rate,
#: data values): its square times any size a run reaches stays far below float64's
#: largest number (1.8e308), so no product overflows into inf/nan halfway through.
FLOAT_LIMIT = 1e100
#: Most ADMM rounds (outer_iters * inner_iters) of a ppdnmf run, and most epochs of
#: a recommendation run: beyond these a run would not end in any useful time.
MAX_ROUNDS = 10**7
MAX_EPOCHS = 10**5
#: Most cells of a generated matrix (data.rows * data.cols, n_users * n_items):
#: 2**27 float64 cells are 1 GiB per copy, and generating makes several copies.
MAX_CELLS = 2**27
#: Most ppdnmf agents (a geometric graph computes all n**2 pairwise distances).
MAX_AGENTS = 4096
#: Most latent factors (rank, n_factors).
MAX_FACTORS = 1024
#: The average degree used by the random graph kinds when none of degree, p,
#: radius or k is given.
DEFAULT_DEGREE = 3.0


def check_number(
    name: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = FLOAT_LIMIT,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` must be a finite float within the bounds; ``ScenarioError`` names ``name``."""
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise ScenarioError(f"{name} must be a finite number in {lo}, {hi}, got {value!r}")


def check_paillier_codec(scheme: str, key_bits: int, frac_bits: int, int_bits: int) -> None:
    """Key size (Paillier only) and the fixed-point codec's own range (FixedPointCodec)."""
    if scheme == "paillier":
        check_int("crypto.key_bits", key_bits, MIN_TEST_KEY_BITS, MAX_KEY_BITS)
    check_int("crypto.frac_bits", frac_bits, 0, 60)
    check_int("crypto.int_bits", int_bits, 0, 60)
    if int_bits + frac_bits < 1:
        raise ScenarioError("crypto.int_bits + crypto.frac_bits must be >= 1, got 0")


def check_int(name: str, value: int, low: int, high: int, why: str = "") -> None:
    """``low <= value <= high``, else a ``ScenarioError`` naming ``name`` (and ``why``)."""
    if not low <= value <= high:
        raise ScenarioError(
            f"{name} must be between {low} and {high}, got {value}" + (f" ({why})" if why else "")
        )


#: Graph parameters each topology kind takes (``make_graph``); the random kinds
#: take ``degree`` or their own alternative to it, never both.
TOPOLOGY_PARAMS: dict[str, tuple[str, ...]] = {
    "ring": (),
    "complete": (),
    "erdos_renyi": ("degree", "p"),
    "geometric": ("degree", "radius"),
    "small_world": ("degree", "k", "rewire"),
}
_DEGREE_ALTERNATIVE = {"erdos_renyi": "p", "geometric": "radius", "small_world": "k"}


@dataclass(frozen=True)
class TopologySpec:
    kind: str = "geometric"
    # None: DEFAULT_DEGREE for the random kinds unless p/radius/k is given; ring and
    # complete take no degree, so a degree set for them is an error.
    degree: float | None = None
    p: float | None = None
    radius: float | None = None
    k: int | None = None
    rewire: float | None = None
    min_degree: int | None = None  # every agent gets at least this many neighbours

    def __post_init__(self) -> None:
        if self.kind not in TOPOLOGY_PARAMS:
            raise ScenarioError(
                f"topology.kind must be one of {list(TOPOLOGY_PARAMS)}, got {self.kind!r}"
            )
        check_number("topology.degree", self.degree, low=0.0, low_open=True)
        check_number("topology.p", self.p, low=0.0, high=1.0, low_open=True)
        check_number("topology.radius", self.radius, low=0.0, high=math.sqrt(2.0), low_open=True)
        check_number("topology.rewire", self.rewire, low=0.0, high=1.0)

    def graph_params(self) -> dict[str, Any]:
        """Keyword arguments of ``make_graph``, with the default degree filled in
        only for the kinds that take one (and only when no alternative is given)."""
        params = {
            name: getattr(self, name)
            for name in ("degree", "p", "radius", "k", "rewire", "min_degree")
        }
        alternative = _DEGREE_ALTERNATIVE.get(self.kind)
        if params["degree"] is None and alternative and params[alternative] is None:
            params["degree"] = DEFAULT_DEGREE
        return params


@dataclass(frozen=True)
class DataSpec:
    kind: str = "synthetic"  # synthetic | digits | file
    rows: int = 30
    cols: int = 200
    snr_db: float | None = 20.0
    path: str = ""
    max_cols: int | None = None  # use only the first max_cols columns (digits, file)
    agent_cols: list[int] | None = None  # columns per agent (default: an even split)

    def __post_init__(self) -> None:
        if self.kind == "synthetic":
            check_int("data.rows", self.rows, 1, MAX_CELLS)
            check_int("data.cols", self.cols, 1, MAX_CELLS)
            if self.rows * self.cols > MAX_CELLS:
                raise ScenarioError(
                    f"data.rows * data.cols must be <= {MAX_CELLS} (2**27 float64 cells, 1 GiB "
                    f"per copy of X), got {self.rows} * {self.cols} = {self.rows * self.cols}"
                )
            # -300 dB: noise 1e15 times the signal; +300 dB: far below float64's resolution
            check_number("data.snr_db", self.snr_db, low=-300.0, high=300.0)
        if self.max_cols is not None and self.max_cols < 1:
            raise ScenarioError(f"data.max_cols must be >= 1, got {self.max_cols}")


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
    # bulk modular exponentiation: "auto" uses Intel's multi-buffer library
    # (pip install cipherfact[fast], AVX-512 IFMA CPUs) where it wins, else gmpy2;
    # "gmpy2" or "ifma" force one. The numbers are the same either way.
    fast_path: str = "auto"
    # in-memory runs: a worker process computes encryption randomness ahead of
    # use. "auto": when this process may use a second core; "on"/"off" force it
    # (on a heavily loaded machine it costs more than it saves). Same numbers.
    prefetch: str = "auto"

    def __post_init__(self) -> None:
        check_paillier_codec(self.scheme, self.key_bits, self.frac_bits, self.int_bits)
        check_int("crypto.processes", self.processes, 1, MAX_PROCESSES)
        if self.fast_path not in FAST_PATHS:
            raise ScenarioError(
                f"crypto.fast_path must be one of {list(FAST_PATHS)}, got {self.fast_path!r}"
            )
        if self.prefetch not in PREFETCH_MODES:
            raise ScenarioError(
                f"crypto.prefetch must be one of {list(PREFETCH_MODES)}, got {self.prefetch!r}"
            )


@dataclass(frozen=True)
class AdmmSpec:
    penalty: float = 10.0
    weight_bits: int = 6  # pairwise: private weights in [2^(b-1), 2^b)
    reply_noise_bits: int = 8  # pairwise: reply noise amplitude 2^(weight_bits + this)

    def __post_init__(self) -> None:
        check_number("admm.penalty", self.penalty, low=0.0, low_open=True)
        check_int("admm.weight_bits", self.weight_bits, 1, 16)


@dataclass(frozen=True)
class SolverSpec:
    backend: str = "numpy"
    device: str = "cpu"
    rule: str = "hals"
    h_sweeps: int = 1

    def __post_init__(self) -> None:
        from cipherfact.solvers._kernel_solver import RULES
        from cipherfact.solvers.factory import BACKENDS, DEVICES

        for name, value, known in (
            ("solver.backend", self.backend, BACKENDS),
            ("solver.device", self.device, DEVICES),
            ("solver.rule", self.rule, RULES),
        ):
            if value not in known:
                raise ScenarioError(f"{name} must be one of {list(known)}, got {value!r}")
        check_int("solver.h_sweeps", self.h_sweeps, 1, 1000)


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
        check_seed(self.seed)
        check_int("n_agents", self.n_agents, 2, MAX_AGENTS)
        check_int("rank", self.rank, 1, MAX_FACTORS)
        rounds = self.outer_iters * self.inner_iters
        if rounds > MAX_ROUNDS:
            raise ScenarioError(
                f"outer_iters * inner_iters must be <= {MAX_ROUNDS} ADMM rounds, got "
                f"{self.outer_iters} * {self.inner_iters} = {rounds}"
            )
        if self.data.kind == "synthetic" and self.rank > min(self.data.rows, self.data.cols):
            raise ScenarioError(
                f"rank must be between 1 and min(data.rows, data.cols) = "
                f"{min(self.data.rows, self.data.cols)}, got {self.rank}"
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
            raise ScenarioError(f"exchange must be 'secagg' or 'pairwise', got {self.exchange!r}")
        if not 1 <= self.admm.reply_noise_bits <= 24:
            raise ScenarioError(
                f"admm.reply_noise_bits must be in [1, 24], got {self.admm.reply_noise_bits} "
                "(0 would let a neighbour read the private weight off a reply)"
            )
        if self.exchange == "pairwise" and self.crypto.frac_bits + self.admm.reply_noise_bits > 60:
            raise ScenarioError(
                f"crypto.frac_bits + admm.reply_noise_bits must be <= 60 for the pairwise "
                f"exchange (its codec's fraction), got {self.crypto.frac_bits} + "
                f"{self.admm.reply_noise_bits}"
            )


def check_topology_fits_agents(scenario: PPDNMFScenario) -> None:
    """The graph the scenario asks for can exist on ``n_agents`` agents.

    Checked in ``prepare_job`` after the data (so a bad data file is named
    first), before the graph is drawn: the message names the scenario field
    and says what to change, where ``make_graph`` could only name its argument.
    """
    n, topo = scenario.n_agents, scenario.topology
    most = n - 1
    if scenario.exchange == "secagg" and n < 3:
        raise ScenarioError(
            f"n_agents = {n} is too few for exchange = 'secagg': every agent needs at least 2 "
            "neighbours, so at least 3 agents; set n_agents >= 3 (or exchange = 'pairwise', "
            "which reveals more: see the README's privacy model)"
        )
    if topo.min_degree is not None and topo.min_degree > most:
        raise ScenarioError(
            f"topology.min_degree = {topo.min_degree} is more than {n} agents allow (an agent "
            f"has at most n_agents - 1 = {most} neighbour(s)); set topology.min_degree <= {most} "
            "or raise n_agents"
        )
    degree = topo.graph_params()["degree"]
    if "degree" in TOPOLOGY_PARAMS[topo.kind] and degree is not None and degree > most:
        default = " (the default)" if topo.degree is None else ""
        raise ScenarioError(
            f"topology.degree = {float(degree)}{default} is more than {n} agents allow (the "
            f"average number of neighbours is at most n_agents - 1 = {most}); set "
            f"topology.degree <= {most}, raise n_agents, or use topology.kind = 'complete'"
        )


def check_seed(seed: int) -> None:
    """Seeds feed ``numpy.random.SeedSequence``, which takes non-negative integers."""
    if not 0 <= seed < 2**63:
        raise ScenarioError(f"seed must be between 0 and 2**63 - 1, got {seed}")


def scenario_type(protocol: str) -> type:
    """The scenario dataclass of ``protocol`` (from the protocol registry)."""
    from cipherfact import registry

    try:
        cls: type = registry.load(protocol, "scenario")
    except registry.UnknownProtocolError as exc:
        raise ScenarioError(str(exc)) from exc
    return cls


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("cipherfact.simulations") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_source(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {name_or_path!r} does not exist")
        try:
            text, label = path.read_text(encoding="utf-8"), path.stem
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"scenario file {name_or_path!r} cannot be read: {exc}") from exc
    else:
        from cipherfact import registry

        protocol = registry.protocol_named(name_or_path)
        default = registry.entry(protocol).defaults if protocol is not None else None
        folder = resources.files("cipherfact.simulations") / "scenarios"
        candidate = folder / f"{default or name_or_path}.toml"
        if not candidate.is_file():
            raise ScenarioError(
                f"unknown scenario {name_or_path!r}: not a file, and not one of the bundled "
                f"scenarios {bundled_scenarios()}"
            )
        text, label = candidate.read_text(encoding="utf-8"), default or name_or_path
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {name_or_path!r} is not valid TOML: {exc}") from exc
    if _sets_nothing(tree):
        # Every field has a default (the full ppdnmf paper setup, minutes of Paillier
        # work): a file that sets nothing is a mistake, never a request for that run.
        raise ScenarioError(
            f"scenario file {name_or_path!r} is empty: it sets no field (start from a bundled "
            "scenario such as 'ppdnmf-synthetic' and change what you need)"
        )
    return label, tree


def _sets_nothing(tree: Mapping[str, Any]) -> bool:
    """True when the parsed file holds no value, only (nested) empty tables or nothing."""
    return all(isinstance(v, Mapping) and _sets_nothing(v) for v in tree.values())


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


def _drop_stale_topology_params(tree: dict[str, Any], overrides: Sequence[str]) -> None:
    """Graph parameters the file set for its own kind do not outlive a ``--set`` of another.

    When ``--set`` changes ``topology.kind`` or gives one of its parameters, a
    parameter that came from the file (not from ``--set``) is dropped if the new
    kind does not take it (ring/complete take none) or if ``--set`` gave its
    alternative (p, radius or k instead of degree, or degree instead of those).
    A parameter given by ``--set`` itself is always kept, so a wrong one is an error.
    """
    topo = tree.get("topology")
    if not isinstance(topo, dict):
        return
    given = {
        tuple(keys[1:])
        for keys, _ in (parse_override(o) for o in overrides)
        if keys[0] == "topology" and len(keys) == 2
    }
    names = {name for names in TOPOLOGY_PARAMS.values() for name in names}
    explicit = {name for (name,) in given if name in names}
    if ("kind",) not in given and not explicit:
        return
    kind = topo.get("kind", TopologySpec.kind)
    takes = TOPOLOGY_PARAMS.get(kind) if isinstance(kind, str) else None
    if takes is None:
        return  # an unknown kind: TopologySpec names it
    alternative = _DEGREE_ALTERNATIVE.get(kind)
    exclusive = {"degree", alternative} if alternative else set()
    for name in sorted(names - explicit):
        if name not in topo:
            continue
        if name not in takes or (name in exclusive and explicit & exclusive):
            del topo[name]


def load_scenario(name_or_path: str, overrides: Sequence[str] = ()) -> Any:
    """Load a bundled scenario by name or a TOML file, then apply ``--set`` overrides."""
    label, tree = _read_source(name_or_path)
    tree = apply_overrides(tree, overrides)
    _drop_stale_topology_params(tree, overrides)
    protocol = tree.get("protocol", "ppdnmf")
    if not isinstance(protocol, str):
        raise ScenarioError(
            f"scenario field 'protocol' must be str, got {protocol!r} ({type(protocol).__name__})"
        )
    data = tree.get("data") if tree.get("protocol", "ppdnmf") == "ppdnmf" else None
    if isinstance(data, dict) and data.get("path") and "kind" not in data:
        data["kind"] = "file"
    elif (
        isinstance(data, dict)
        and data.get("path")
        and any(o.split("=", 1)[0].strip() == "data.path" for o in overrides)
    ):
        data["kind"] = "file"  # --set data.path=... implies a file, whatever the scenario said
    _refuse_ignored_data_fields(protocol, tree, overrides)
    tree.setdefault("name", label)
    return build_dataclass(scenario_type(tree.get("protocol", "ppdnmf")), tree)


#: Data fields that only the synthetic generator reads, per protocol.
GENERATOR_FIELDS: dict[str, tuple[str, ...]] = {
    "ppdnmf": ("rows", "cols", "snr_db"),
    "csr_fhe_mf": ("n_users", "n_items", "rank", "density", "noise", "scale_low", "scale_high"),
    "fedmf": ("n_users", "n_items", "rank", "density", "noise", "scale_low", "scale_high"),
}


def _refuse_ignored_data_fields(
    protocol: str, tree: Mapping[str, Any], overrides: Sequence[str]
) -> None:
    """A ``--set`` of a generator field while the data come from a file (or digits) would
    be silently ignored: refuse it. Values the file itself carries for its bundled
    generator are not the user's request and stay (they are unused)."""
    data = tree.get("data")
    if not isinstance(data, Mapping) or protocol not in GENERATOR_FIELDS:
        return
    if protocol == "ppdnmf":
        kind = data.get("kind", DataSpec.kind)
        source = {"file": f"data.path = {data.get('path', '')!r}", "digits": "data.kind = 'digits'"}
        used = source.get(kind) if isinstance(kind, str) else None
    else:
        used = next((f"data.{k} = {data[k]!r}" for k in ("train", "path") if data.get(k)), None)
    if used is None:
        return
    given = {
        keys[1]
        for keys, _ in (parse_override(o) for o in overrides)
        if len(keys) == 2 and keys[0] == "data"
    }
    ignored = [name for name in GENERATOR_FIELDS[protocol] if name in given]
    if ignored:
        fields = ", ".join(f"data.{name}" for name in ignored)
        shape = (
            "use data.max_cols to keep fewer columns"
            if protocol == "ppdnmf"
            else "the file fixes the users and items"
        )
        raise ScenarioError(
            f"{fields} only applies to synthetic data, but the data come from {used}: "
            f"drop the --set ({shape})"
        )


def unused_generator_fields(scenario: Any) -> dict[str, str]:
    """Synthetic-generator fields a file (or digits) makes irrelevant, and why."""
    data = getattr(scenario, "data", None)
    if data is None:  # a protocol without a data section
        return {}
    if scenario.protocol == "ppdnmf":
        why = {"file": "the data come from data.path", "digits": "data.kind = 'digits'"}
        reason = why.get(data.kind)
    else:
        reason = {"file": "the data come from data.path", "explicit": "data.train/test"}.get(
            data.source
        )
    if reason is None:
        return {}
    return {name: reason for name in GENERATOR_FIELDS.get(scenario.protocol, ())}


def scenario_to_dict(scenario: Any) -> dict[str, Any]:
    """JSON-ready copy of a scenario, recorded in every run's summary; generator
    fields the data source makes irrelevant are left out (a summary of a run on
    one's own file must not show the synthetic sizes next to the real ones)."""
    out = dataclasses.asdict(scenario)
    for name in unused_generator_fields(scenario):
        out["data"].pop(name, None)
    return out


def run_label(scenario: Any) -> str:
    """What a run's plots are titled: the scenario's name, or the user's data file
    with the scenario it ran under (``X.npy via ppdnmf-synthetic``)."""
    data = scenario.data
    own = data.path or getattr(data, "train", "")
    if own and (scenario.protocol != "ppdnmf" or data.kind == "file"):
        return f"{Path(own).name} via {scenario.name}"
    return str(scenario.name)
