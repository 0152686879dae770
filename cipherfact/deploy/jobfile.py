"""``JOB.toml``: what every agent of a deployed job must agree on.

One file, copied to every machine: the scenario (a bundled name or a path,
plus ``--set``-style overrides, or an inline ``[scenario]`` table), every
agent's address, the graph (explicit edges, or built from the scenario's
topology and seed), the certificate paths and the timeouts. Relative paths
are relative to the job file. Unknown keys are errors, like in scenarios.
Deployable protocols: ppdnmf (agent ids 0..n_agents-1), csr_fhe_mf (agent
0 is the recommender server, 1 the CSP, 2 + u user u) and fedmf (0 is the
server, 1 + u user u; user 0 generates the users' shared key).

Example::

    [job]
    scenario = "ppdnmf-synthetic"
    set = ["n_agents=4", "outer_iters=20"]
    out = "results"            # agent i writes results/agent-i/
    checkpoint_every = 1       # 0: no checkpoints
    private_seeds = true       # false: seeds from the scenario (ppdnmf bit-identical to simulate)

    [tls]
    ca = "certs/ca.pem"
    cert = "certs/agent-{id}.pem"
    key = "certs/agent-{id}-key.pem"

    [timeouts]
    peer_s = 60                # silence that counts as a dead neighbour

    [[agents]]
    id = 0
    address = "10.0.0.1:50051"
    data_path = "/data/my_block.npy"   # optional: this agent's own X_i
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cipherfact import registry
from cipherfact.agents.envelope import AgentId
from cipherfact.deploy.tls import TlsFiles
from cipherfact.deploy.transport import RetryPolicy
from cipherfact.simulations.scenario import build_dataclass, load_scenario, scenario_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class JobFileError(ValueError):
    """JOB.toml is missing, malformed, or inconsistent."""


@dataclass(frozen=True)
class AgentSpec:
    """One agent's entry: where peers dial it, where it listens, its own data."""

    id: AgentId
    address: str
    listen: str
    data_path: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class DeployJob:
    """A parsed, validated JOB.toml."""

    path: Path
    scenario: Any
    agents: Mapping[AgentId, AgentSpec]
    out: Path
    tls_ca: Path | None
    tls_cert: str
    tls_key: str
    insecure: bool = False
    checkpoint_every: int = 0
    private_seeds: bool = True
    peer_timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    edges: tuple[tuple[int, int], ...] | None = None

    def agent(self, agent_id: AgentId) -> AgentSpec:
        spec = self.agents.get(agent_id)
        if spec is None:
            raise JobFileError(
                f"agent id {agent_id} is not in {self.path} (agents {sorted(self.agents)})"
            )
        return spec

    def tls_files(self, agent_id: AgentId) -> TlsFiles | None:
        """This agent's certificate paths, or None in insecure mode."""
        if self.insecure:
            return None
        spec = self.agent(agent_id)
        if self.tls_ca is None:
            raise JobFileError(f"{self.path}: [tls] ca is required unless job.insecure = true")
        cert = spec.cert or self._resolve(self.tls_cert.format(id=agent_id))
        key = spec.key or self._resolve(self.tls_key.format(id=agent_id))
        return TlsFiles(self.tls_ca, cert, key)

    @property
    def users_own_ratings(self) -> bool:
        """csr_fhe_mf: every user reads its own ratings file (``data_path``)."""
        return self.scenario.protocol == "csr_fhe_mf" and any(
            a.data_path is not None for a in self.agents.values()
        )

    def agent_out(self, agent_id: AgentId) -> Path:
        return self.out / f"agent-{agent_id}"

    def _resolve(self, value: str) -> Path:
        return resolve_path(self.path.parent, value)


def node_class(protocol: str) -> Any:
    """The deployed party's class of ``protocol`` (``BaseNode`` subclass, registry)."""
    try:
        return registry.load(protocol, "node")
    except registry.UnknownProtocolError as exc:
        raise JobFileError(f"protocol {protocol!r} cannot be deployed: {exc}") from exc


def insecure_refusal(protocol: str) -> str:
    """Why ``protocol`` refuses an insecure job (its key handover needs certificates)."""
    return (
        f"{protocol} hands the users' shared key over in boxes sealed to the job "
        "certificates, so it cannot run insecure (drop job.insecure / --insecure)"
    )


def party_count(scenario: Any) -> int:
    """How many agent processes a job has (ppdnmf's agents; csr_fhe_mf's RS, CSP and one
    process per user; FedMF's server and one per user), as its node class says."""
    return int(node_class(scenario.protocol).party_count(scenario))


def _check_own_ratings(scenario: Any, agents: Mapping[AgentId, AgentSpec], path: Path) -> int:
    """The job's party count; for csr_fhe_mf with users' own rating files, check them.

    Users either all bring their own ratings (``data_path``; the public sizes
    then come from the scenario: one user per agent from id 2, ``data.n_items``
    items, ``crypto.pad_to`` entries per user with ``hide_pattern``) or all
    take them from the scenario's data.
    """
    if scenario.protocol != "csr_fhe_mf":
        return party_count(scenario)
    own = sorted(a.id for a in agents.values() if a.data_path is not None)
    if not own:
        return party_count(scenario)
    if own[0] < 2:
        raise JobFileError(
            f"{path}: agents[{own[0]}].data_path: RS (0) and the CSP (1) hold no ratings; "
            "data_path is for users (ids 2..)"
        )
    users = sorted(a for a in agents if a >= 2)
    if own != users:
        missing = sorted(set(users) - set(own))
        raise JobFileError(
            f"{path}: users {missing} have no data_path; give every user its own ratings "
            "file, or none (then every user takes its ratings from the scenario's data)"
        )
    if scenario.crypto.hide_pattern and not scenario.crypto.pad_to:
        raise JobFileError(
            f"{path}: with users' own rating files and crypto.hide_pattern, set "
            "crypto.pad_to (the public number of entries every user shows)"
        )
    if scenario.crypto.hide_pattern and not scenario.item_norm > 0:
        # no party sees every item's real count, so the public divisor that keeps
        # padded results equal to unpadded ones must be given, as pad_to is
        raise JobFileError(
            f"{path}: with users' own rating files and crypto.hide_pattern, set "
            "item_norm > 0 (the public divisor of every item's step, e.g. the largest "
            "number of ratings an item has)"
        )
    return len(agents)


def resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise JobFileError(
            f"unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})"
        )


def _check_address(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise JobFileError(f"{where} must be a 'host:port' string, got {value!r}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise JobFileError(f"{where} must be 'host:port', got {value!r}")
    if not 1 <= int(port) <= 65535:
        raise JobFileError(f"{where}: port {port} is outside 1..65535 (in {value!r})")
    return value


TIMEOUT_FIELDS = ("peer_s", "rpc_s", "startup_s", "backoff_s", "backoff_max_s")


def _check_timeouts(timeouts: Mapping[str, Any]) -> None:
    """Finite positive seconds and a whole number of retries, each error naming its field."""
    for name in TIMEOUT_FIELDS:
        if name not in timeouts:
            continue
        value = timeouts[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobFileError(
                f"timeouts.{name} must be a positive number of seconds, got {value!r}"
            )
        if not math.isfinite(value) or value <= 0:
            raise JobFileError(
                f"timeouts.{name} must be a positive, finite number of seconds, got {value!r}"
            )
    retries = timeouts.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise JobFileError(f"timeouts.retries must be an integer >= 0, got {retries!r}")


def check_out_dir(out: Path, where: str = "job.out") -> None:
    """``out`` is a folder, or one that can be created (nothing is created here)."""
    if out.exists():
        if not out.is_dir():
            raise JobFileError(f"{where}: {str(out)!r} exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise JobFileError(f"{where}: directory {str(out)!r} is not writable")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise JobFileError(
            f"{where}: {str(out)!r} cannot be created: {str(parent)!r} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise JobFileError(
            f"{where}: {str(out)!r} cannot be created: {str(parent)!r} is not writable"
        )


def _typed(
    table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str
) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) and kind is not bool:
        raise JobFileError(f"{where}.{key} must be {kind}, got {value!r}")
    if not isinstance(value, kind):
        raise JobFileError(f"{where}.{key} has the wrong type: {value!r}")
    return value


def _scenario(tree: Mapping[str, Any], job: Mapping[str, Any], base: Path, label: str) -> Any:
    overrides = job.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise JobFileError(f"job.set must be a list of 'key=value' strings, got {overrides!r}")
    inline = tree.get("scenario")
    source = job.get("scenario")
    if (inline is None) == (source is None):
        raise JobFileError("give exactly one of job.scenario (name or path) and a [scenario] table")
    if source is not None:
        if not isinstance(source, str):
            raise JobFileError(f"job.scenario must be a string, got {source!r}")
        candidate = resolve_path(base, source)
        ref = str(candidate) if candidate.exists() or source.endswith(".toml") else source
        return load_scenario(ref, overrides)
    if not isinstance(inline, dict):
        raise JobFileError("[scenario] must be a table")
    from cipherfact.simulations.scenario import apply_overrides

    data = apply_overrides(dict(inline), overrides)
    data.setdefault("name", label)
    return build_dataclass(scenario_type(data.get("protocol", "ppdnmf")), data)


def load_job(path: str | Path) -> DeployJob:
    """Read and validate JOB.toml."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job file {str(path)!r} does not exist")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"job file {str(path)!r} is not valid TOML: {exc}") from exc
    base = path.resolve().parent
    _check_keys(tree, {"job", "scenario", "tls", "timeouts", "graph", "agents"}, str(path))
    job = tree.get("job", {})
    _check_keys(
        job,
        {"scenario", "set", "out", "checkpoint_every", "private_seeds", "insecure"},
        "[job]",
    )
    scenario = _scenario(tree, job, base, path.stem)
    if scenario.protocol not in registry.deployable():
        raise JobFileError(
            f"protocol {scenario.protocol!r} cannot be deployed yet (deployable: "
            f"{', '.join(registry.deployable())})"
        )

    raw_agents = tree.get("agents")
    if not isinstance(raw_agents, list) or not raw_agents:
        raise JobFileError(f"{path} needs one [[agents]] entry per agent")
    agents: dict[AgentId, AgentSpec] = {}
    for n, entry in enumerate(raw_agents):
        where = f"agents[{n}]"
        _check_keys(entry, {"id", "address", "listen", "data_path", "cert", "key"}, where)
        agent_id = entry.get("id")
        if not isinstance(agent_id, int) or isinstance(agent_id, bool) or agent_id < 0:
            raise JobFileError(f"{where}.id must be an integer >= 0, got {agent_id!r}")
        if agent_id in agents:
            raise JobFileError(f"duplicate agent id {agent_id} in {path}")
        address = _check_address(entry.get("address"), f"{where}.address")
        listen = _check_address(entry.get("listen", address), f"{where}.listen")
        opt = {
            k: resolve_path(base, entry[k]) for k in ("data_path", "cert", "key") if entry.get(k)
        }
        agents[agent_id] = AgentSpec(agent_id, address, listen, **opt)
    n_parties = _check_own_ratings(scenario, agents, path)
    if sorted(agents) != list(range(n_parties)):
        what = node_class(scenario.protocol).describe_parties(n_parties)
        raise JobFileError(
            f"{path} lists agents {sorted(agents)}; the scenario has {what}, so ids must be "
            f"0..{n_parties - 1}"
        )

    tls = tree.get("tls", {})
    _check_keys(tls, {"ca", "cert", "key"}, "[tls]")
    insecure = _typed(job, "insecure", bool, False, "job")
    if insecure and node_class(scenario.protocol).needs_certificates:
        raise JobFileError(f"{path}: {insecure_refusal(scenario.protocol)}")
    if not insecure and "ca" not in tls:
        raise JobFileError(f"{path}: [tls] ca is required unless job.insecure = true")

    timeouts = dict(tree.get("timeouts", {}))
    _check_keys(
        timeouts,
        {"peer_s", "rpc_s", "startup_s", "retries", "backoff_s", "backoff_max_s"},
        "[timeouts]",
    )
    _check_timeouts(timeouts)
    peer_s = timeouts.pop("peer_s", 60.0)
    try:
        retry = RetryPolicy(**timeouts)
    except (TypeError, ValueError) as exc:
        raise JobFileError(str(exc)) from exc

    graph = tree.get("graph", {})
    _check_keys(graph, {"edges"}, "[graph]")
    edges = None
    if "edges" in graph:
        raw = graph["edges"]
        if not isinstance(raw, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) for v in e) for e in raw
        ):
            raise JobFileError(f"graph.edges must be a list of [i, j] pairs, got {raw!r}")
        edges = tuple((int(a), int(b)) for a, b in raw)

    checkpoint_every = _typed(job, "checkpoint_every", int, 0, "job")
    if checkpoint_every < 0:
        raise JobFileError(f"job.checkpoint_every must be >= 0, got {checkpoint_every}")
    if scenario.protocol != "ppdnmf":
        own_data = scenario.protocol == "fedmf" and any(
            a.data_path is not None for a in agents.values()
        )
        refused = [
            (name, why)
            for name, used, why in (
                (
                    "job.checkpoint_every",
                    checkpoint_every > 0 and not node_class(scenario.protocol).supports_resume,
                    "its parties keep no checkpoints",
                ),
                ("[graph] edges", edges is not None, "its parties are fixed by the protocol"),
                ("agents' data_path", own_data, "fedmf users take their ratings from the scenario"),
            )
            if used
        ]
        if refused:
            raise JobFileError(
                f"{path}: {', '.join(n for n, _ in refused)} cannot be used with "
                f"{scenario.protocol} ({'; '.join(w for _, w in refused)})"
            )
    out = resolve_path(base, _typed(job, "out", str, "results", "job"))
    check_out_dir(out)
    return DeployJob(
        path=path,
        scenario=scenario,
        agents=agents,
        out=out,
        tls_ca=resolve_path(base, tls["ca"]) if "ca" in tls else None,
        tls_cert=_typed(tls, "cert", str, "agent-{id}.pem", "tls"),
        tls_key=_typed(tls, "key", str, "agent-{id}-key.pem", "tls"),
        insecure=insecure,
        checkpoint_every=checkpoint_every,
        private_seeds=_typed(job, "private_seeds", bool, True, "job"),
        peer_timeout_s=float(peer_s),
        retry=retry,
        edges=edges,
    )


def agent_out_hint(path: str | Path, agent_id: int) -> Path | None:
    """Where ``agent_id`` would write, read from a job file that did not load (its own
    ``result.json`` can then still say why); None when that cannot be told."""
    try:
        path = Path(path)
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
        job = tree.get("job", {})
        out = job.get("out", "results") if isinstance(job, dict) else None
        if not isinstance(out, str) or isinstance(agent_id, bool) or agent_id < 0:
            return None
        folder = resolve_path(path.resolve().parent, out)
        check_out_dir(folder)
    except (OSError, ValueError, TypeError, AttributeError, tomllib.TOMLDecodeError):
        return None
    return folder / f"agent-{agent_id}"


def render_job(
    *,
    scenario: str,
    overrides: Sequence[str],
    addresses: Sequence[str],
    out: str,
    certs: str | None,
    checkpoint_every: int = 0,
    private_seeds: bool = False,
    listens: Sequence[str] | None = None,
    timeouts: Mapping[str, float | int] | None = None,
) -> str:
    """A JOB.toml text (what ``deploy local`` writes and the docs show)."""
    import json

    def q(value: str) -> str:
        return json.dumps(value)  # a TOML basic string is a JSON string for our inputs

    lines = ["[job]", f"scenario = {q(scenario)}"]
    lines.append("set = [" + ", ".join(q(o) for o in overrides) + "]")
    lines += [
        f"out = {q(out)}",
        f"checkpoint_every = {checkpoint_every}",
        f"private_seeds = {'true' if private_seeds else 'false'}",
        f"insecure = {'true' if certs is None else 'false'}",
        "",
    ]
    if certs is not None:
        lines += [
            "[tls]",
            f"ca = {q(certs + '/ca.pem')}",
            f"cert = {q(certs + '/agent-{id}.pem')}",
            f"key = {q(certs + '/agent-{id}-key.pem')}",
            "",
        ]
    if timeouts:
        lines.append("[timeouts]")
        lines += [f"{k} = {v}" for k, v in timeouts.items()]
        lines.append("")
    for i, address in enumerate(addresses):
        lines += ["[[agents]]", f"id = {i}", f"address = {q(address)}"]
        if listens is not None:
            lines.append(f"listen = {q(listens[i])}")
        lines.append("")
    return "\n".join(lines)
