"""The recommendation protocols (csr_fhe_mf, fedmf) on a grid: in this process or on Ray.

The hosts and routing are the protocol-independent grids (``grid.py``:
``LocalGrid`` in this process, ``RayGrid`` on Ray actors); this module holds
what is the recommendation protocols': the factories, the placement and the
epoch loop. Roles are built *on their host* by a picklable factory, each host
keeping only the roles placed on it, so secret keys are generated where their
holder runs and never travel: the CSP's CKKS key on the CSP's host; FedMF's
Paillier key pair, which all users share, on the one host that holds every
user (a shared secret key cannot be handed to several actors without pickling
it). The key holder's host is created first and reports the job's *public*
parameters (the protocol config, the plaintext twin); the other hosts build
their roles from those, so every host holds the same config. Measurement
hooks (the CSP's masked factors with RS's masks; FedMF's Enc(V) as bytes,
decrypted by the users' host) are called between epochs.

Checkpoints: every role exports its own state at an epoch boundary
(``checkpoint_state``, numbers only, never a key) and the runner writes them
in the one checkpoint format (``checkpoint.py``); a resumed run makes fresh
keys, redoes the setup and each protocol rebuilds its encrypted state from
those numbers (the protocol modules say how; docs/checkpoints.md lists what
each file holds).

Results: FedMF is exact fixed-point Paillier with sequential users, so a run
equals the in-memory run bit for bit. csr_fhe_mf decrypts CKKS values whose
noise depends on fresh encryption randomness, so two runs, in memory or not,
agree on RMSE to the CKKS noise only (measured ~1e-6), and ciphertext sizes
(compressed serialization) vary by a fraction of a percent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.ray_transport import HostId
from cipherfact.protocols.base import Profiler
from cipherfact.protocols.ratings.job import (
    build_csr,
    build_fedmf,
    check_ratings,
    csr_twin,
    csr_user,
    epoch_rmse,
    fedmf_config,
    finish_summary,
    load_split,
    party_bytes,
    summary_header,
)
from cipherfact.protocols.ratings.model import MODEL_FILE, RatingsModel
from cipherfact.simulations.checkpoint import (
    app_meta,
    data_digest,
    load_role,
    public_config,
    save_role,
)
from cipherfact.simulations.grid import Grid, LocalGrid, LocalRoles
from cipherfact.simulations.ray_grid import PoolSpec, RayGrid, actor_cpus
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.runner import RunApp, run
from cipherfact.simulations.scenario import ScenarioError

__all__ = [
    "CsrKeyHolder",
    "CsrPublicRoles",
    "FedMFKeyHolder",
    "FedMFServerRole",
    "csr_placement",
    "fedmf_placement",
    "simulate_recsys",
]


# --- placement ------------------------------------------------------------------------


def _check_hosts(n_users: int, hosts: int) -> None:
    if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
        raise ValueError(f"n_users must be a positive int, got {n_users!r}")
    if isinstance(hosts, bool) or not isinstance(hosts, int) or hosts < 1:
        raise ValueError(f"hosts must be a positive int, got {hosts!r}")


def csr_placement(n_users: int, hosts: int) -> dict[AgentId, HostId]:
    """RS on actor 0, CSP on actor 1 (when there are two), users round-robin over all
    actors: RS and CSP are the parties that must not share a process."""
    from cipherfact.protocols.csr_fhe_mf import roles as csr

    _check_hosts(n_users, hosts)
    out = {csr.RS_ID: 0, csr.CSP_ID: 1 % hosts}
    out.update({csr.user_id(u): u % hosts for u in range(n_users)})
    return out


def fedmf_placement(n_users: int, hosts: int) -> dict[AgentId, HostId]:
    """Server on actor 0, every user on actor 1 (when there are two): the users share
    one secret key, which is generated in their actor and never pickled."""
    from cipherfact.protocols.fedmf import roles as fedmf

    _check_hosts(n_users, hosts)
    out = {fedmf.SERVER_ID: 0}
    out.update({fedmf.user_id(u): 1 % hosts for u in range(n_users)})
    return out


# --- factories (run inside the actors) ------------------------------------------------


def _roles(
    roles: dict[AgentId, Any],
    profilers: dict[str, Profiler],
    hooks: dict[str, Callable[..., Any]],
    public: dict[str, Any],
) -> LocalRoles:
    """``LocalRoles`` of a recsys host: every role checkpoints as ``save_role``."""
    return LocalRoles(roles, profilers, hooks, public, save_state=save_role, load_state=load_role)


def _keep(roles: Mapping[AgentId, Any], agents: list[AgentId]) -> dict[AgentId, Any]:
    missing = sorted(set(agents) - set(roles))
    if missing:
        raise ValueError(f"the factory cannot build agents {missing}")
    return {i: roles[i] for i in agents}


@dataclass(frozen=True)
class CsrKeyHolder:
    """Builds the job as in memory (the CSP's CKKS key is generated here, once) and
    keeps the local roles; publishes the config, twin and parameter facts."""

    scenario: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.protocols.csr_fhe_mf import roles as csr

        split = load_split(self.scenario.data, self.scenario.seed)
        run = build_csr(self.scenario, split)
        csp, rs = run.roles[csr.CSP_ID], run.roles[csr.RS_ID]
        public = {
            "config": csp.config,
            # Users on other hosts draw their own secret dummies: the runner asks for
            # the twin of the structure the CSP received once the setup is done
            # (hook "twin"), so build_csr computes none.
            "twin": None,
            "twin_from": csr.CSP_ID,
            "groups": run.groups,
            "offset": run.offset,
            "epochs": run.epochs,
            "info": run.info,
        }
        hooks: dict[str, Callable[..., Any]] = {
            "masked_factors": csp.masked_factors,
            "twin": lambda: csr_twin(split.train, csp.config, csp.layout)[0],
        }
        if csr.RS_ID in agents:
            hooks["factor_masks"] = rs.factor_masks
        return _roles(_keep(run.roles, agents), run.profilers, hooks, public)


@dataclass(frozen=True)
class CsrPublicRoles:
    """RS and users from the public config only (they hold no secret key); built
    exactly as ``build_csr`` builds them."""

    scenario: Any
    config: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.crypto.ckks import load_public_ckks
        from cipherfact.protocols.csr_fhe_mf import roles as csr

        train = load_split(self.scenario.data, self.scenario.seed).train
        cfg = self.config
        profs = {"rs": Profiler(), "csp": Profiler(), "users": Profiler()}
        roles: dict[AgentId, Any] = {}
        hooks: dict[str, Callable[..., Any]] = {}
        for i in agents:
            if i == csr.RS_ID:
                rs = csr.RecommenderServer(cfg, load_public_ckks, profs["rs"])
                roles[i], hooks["factor_masks"] = rs, rs.factor_masks
            elif i >= csr.user_id(0):
                roles[i] = csr_user(self.scenario, train, cfg, i - csr.user_id(0), profs["users"])
        return _roles(_keep(roles, agents), profs, hooks, {})


@dataclass(frozen=True)
class FedMFKeyHolder:
    """Builds the job as in memory (the users' shared Paillier key is generated here,
    once); keeps the local roles and decrypts Enc(V) bytes for measurement."""

    scenario: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.protocols.fedmf import roles as fedmf

        run = build_fedmf(self.scenario, load_split(self.scenario.data, self.scenario.seed))
        server = run.roles[fedmf.SERVER_ID]
        users = [run.roles[fedmf.user_id(u)] for u in range(server.config.n_users)]
        key = users[0].scheme
        F, n_items = server.config.n_factors, server.config.n_items

        def vectors() -> np.ndarray:
            return np.stack([usr.vector for usr in users])

        def decrypt_v(blobs: list[bytes]) -> np.ndarray:
            V = np.concatenate([key.decrypt(key.from_bytes(b)) for b in blobs])
            return V.reshape(-1, F)[:n_items]

        hooks: dict[str, Callable[..., Any]] = {"vectors": vectors, "decrypt_v": decrypt_v}
        if fedmf.SERVER_ID in agents:
            hooks["encrypted_v"] = lambda: [server.scheme.to_bytes(c) for c in server.encrypted_v]
        public = {
            "config": server.config,
            "twin": run.twin,
            "groups": run.groups,
            "offset": run.offset,
            "epochs": run.epochs,
            "info": run.info,
        }
        return _roles(_keep(run.roles, agents), run.profilers, hooks, public)


@dataclass(frozen=True)
class FedMFServerRole:
    """The server from the public config and the users' public key (sent in the key
    stage as in memory); the loader is built as ``build_fedmf`` builds it."""

    scenario: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.crypto import PaillierOptions, load_public_scheme
        from cipherfact.protocols.fedmf import roles as fedmf

        if agents != [fedmf.SERVER_ID]:
            raise ValueError(f"the FedMF server actor hosts agent 0 only, got {agents}")
        train = load_split(self.scenario.data, self.scenario.seed).train
        c = self.scenario.crypto
        cfg = fedmf_config(self.scenario, train)
        codec = fedmf.fedmf_codec(cfg)
        options = PaillierOptions(packing=not c.naive)
        extra = {"insecure_test_keys": c.insecure_test_keys} if c.scheme == "paillier" else {}

        def load_public(data: bytes) -> Any:
            return load_public_scheme(  # check_peer_key: the shared key meets the job's size
                c.scheme, data, codec=codec, options=options, min_key_bits=c.key_bits, **extra
            )

        profs = {"server": Profiler(), "users": Profiler()}
        server = fedmf.FedMFServer(cfg, load_public, profs["server"])

        def encrypted_v() -> list[bytes]:
            return [server.scheme.to_bytes(ct) for ct in server.encrypted_v]  # type: ignore[union-attr]

        return _roles({fedmf.SERVER_ID: server}, profs, {"encrypted_v": encrypted_v}, {})


# --- the runner -----------------------------------------------------------------------


def _grid_for(
    scenario: Any, n_users: int, options: Any
) -> tuple[Grid, dict[str, Any], Callable[[], tuple[np.ndarray, np.ndarray]]]:
    """Hosts for the scenario (key holder first), its public facts, and its factor
    measurement (the CSP's masked factors minus RS's masks; FedMF's users'
    vectors and Enc(V) decrypted by the users' host).

    In memory every party is on one host, built by the key holder's factory (the
    same roles a Ray run builds, in one delivery order). On Ray the actor count is
    ``options.ray_actors`` (default: the cluster's CPUs, at least 2; FedMF uses at
    most 2: server, users).
    """
    from cipherfact.protocols.csr_fhe_mf import roles as csr
    from cipherfact.protocols.fedmf import roles as fedmf

    is_csr = scenario.protocol == "csr_fhe_mf"
    if options.backend == "ray":
        import ray

        resources = ray.cluster_resources()
        hosts = options.ray_actors or max(2, int(resources.get("CPU", 2)))
        hosts = min(hosts, n_users + 2)
        try:
            cpus = actor_cpus(hosts, float(resources.get("CPU", 1.0)), options.ray_cpus_per_actor)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from exc
        placement = (csr_placement if is_csr else fedmf_placement)(n_users, hosts)
        grid: Grid = RayGrid(placement, PoolSpec(hosts, cpus), options.network)
    else:
        placement = (csr_placement if is_csr else fedmf_placement)(n_users, 1)
        grid = LocalGrid(placement, options.network)
    key_agent = csr.CSP_ID if is_csr else fedmf.user_id(0)
    try:
        key_host = grid.placement[key_agent]
        grid.add_host(key_host, CsrKeyHolder(scenario) if is_csr else FedMFKeyHolder(scenario))
        public = grid.public(key_host)
        for k in grid.hosted:
            if k != key_host:
                grid.add_host(
                    k,
                    CsrPublicRoles(scenario, public["config"])
                    if is_csr
                    else FedMFServerRole(scenario),
                )
    except BaseException:
        grid.close()
        raise

    def csr_factors() -> tuple[np.ndarray, np.ndarray]:
        AU, AV = grid.hook(csr.CSP_ID, "masked_factors")
        MU, MV = grid.hook(csr.RS_ID, "factor_masks")
        return AU - MU, AV - MV

    first = fedmf.user_id(0)

    def fedmf_factors() -> tuple[np.ndarray, np.ndarray]:
        blobs = grid.hook(fedmf.SERVER_ID, "encrypted_v")
        return grid.hook(first, "vectors"), grid.hook(first, "decrypt_v", blobs)

    return grid, public, csr_factors if is_csr else fedmf_factors


class RecsysApp(RunApp):
    """csr_fhe_mf and FedMF for the runner: RMSE per epoch against the plaintext
    twin, ``model.npz``, the party bytes and the ALS reference at the end."""

    unit = "epoch"
    phase = "epoch"
    count_key = "epochs"

    def __init__(self, scenario: Any) -> None:
        from cipherfact.protocols.fedmf import roles as fedmf

        self.scenario = scenario
        # FedMF's users take turns: the server waits for each user's gradients
        self.turn_stages = fedmf.TURN_STAGES if scenario.protocol == "fedmf" else ()
        self.split = load_split(scenario.data, scenario.seed)
        check_ratings(scenario, self.split)  # every input check, before any key
        self.public: dict[str, Any] = {}
        self.twin: Any = None
        self.factors: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def total(self) -> int:
        return int(self.public.get("epochs", self.scenario.epochs))

    def describe(self) -> str:
        return str(self.scenario.protocol)

    def checkpoint_meta(self) -> dict[str, Any]:
        """Job id, every party (RS, CSP or the server, and the users), the ratings'
        digest and the scenario after overrides."""
        train, test = self.split.train, self.split.test
        servers = 2 if self.scenario.protocol == "csr_fhe_mf" else 1
        digest = data_digest(
            train.users, train.items, train.values, test.users, test.items, test.values
        )
        return app_meta(
            self.scenario.name, train.n_users + servers, digest, public_config(self.scenario)
        )

    def header(self, backend: str) -> dict[str, Any]:
        return summary_header(self.scenario, backend, self.split, self.public.get("info", {}))

    def build_grid(self, options: Any) -> Grid:
        grid, self.public, self.factors = _grid_for(
            self.scenario, self.split.train.n_users, options
        )
        self.twin = self.public["twin"]
        return grid

    def after_setup(self, grid: Grid) -> None:
        if self.twin is None:  # csr_fhe_mf: the twin of the structure the users sent
            self.twin = grid.hook(self.public["twin_from"], "twin")

    def record(
        self, t: int, reports: dict[int, Any], grid: Grid, wall_s: float, before: tuple[int, int]
    ) -> dict[str, Any]:
        assert self.factors is not None  # build_grid ran
        self.last = self.factors()
        split = self.split
        return {
            "epoch": t,
            **epoch_rmse(self.last, self.twin[t], split.train, split.test, self.public["offset"]),
            "bytes": grid.stats.bytes_total - before[0],
            "wall_s": wall_s,
            **{f"{k}_s": v for k, v in grid.seconds.items()},
        }

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {"test_rmse": f"{record['test_rmse']:.4f}", "MB": f"{record['bytes'] / 1e6:.1f}"}

    def save_model(self, writer: RunWriter) -> dict[str, Any]:
        if self.last is None:
            return {}
        model = RatingsModel.from_training(self.last, self.split.train, self.public["offset"])
        return {"model": model.save(writer.out_dir / MODEL_FILE).name}

    def finish(
        self, records: list[dict[str, Any]], grid: Grid, writer: RunWriter, run: dict[str, Any]
    ) -> dict[str, Any]:
        return finish_summary(
            {},
            self.scenario,
            self.split.train,
            self.split.test,
            records,
            writer,
            wall_s=run["wall_s"],
            setup_s=run["setup_s"],
            setup_bytes=run["setup_bytes"],
            stats=grid.stats,
            bytes_per_party=party_bytes(grid.stats, self.public["groups"]),
            seconds_per_party=run["seconds"],
        )


def simulate_recsys(scenario: Any, out_dir: Path, options: Any) -> dict[str, Any]:
    """``cipherfact simulate`` for csr_fhe_mf and fedmf, every backend (the registry's
    runner): the same files and fields, plus ``ray`` on Ray, ``network`` /
    ``simulated_network_s`` with network emulation, checkpoints and ``--resume``."""
    return run(RecsysApp(scenario), scenario.protocol, Path(out_dir), options)
