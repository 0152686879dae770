"""The Ray backend for the recommendation protocols (csr_fhe_mf, fedmf).

Roles are built *inside* the actors by a picklable factory, each actor keeping
only the roles placed on it, so secret keys are generated where their holder
runs and never travel: the CSP's CKKS key in the CSP's actor; FedMF's Paillier
key pair, which all users share, in the one actor that hosts every user (a
shared secret key cannot be handed to several actors without pickling it).
The key holder's actor is created first and reports the job's *public*
parameters (the protocol config, the plaintext twin); the other actors build
their roles from those, so every actor holds the same config as in memory.

The actors and the driver are the protocol-independent ``RoleHost`` and
``RayGrid`` (``ray_grid.py``); this module holds only the factories and
the placement. Measurement hooks
(the CSP's masked factors with RS's masks; FedMF's Enc(V) as bytes, decrypted
by the users' actor) are called between epochs, like the in-memory harness.

Results: FedMF is exact fixed-point Paillier with sequential users, so a run
equals the in-memory run bit for bit. csr_fhe_mf decrypts CKKS values whose
noise depends on fresh encryption randomness, so two runs, in memory or not,
agree on RMSE to the CKKS noise only (measured ~1e-6), and ciphertext sizes
(compressed serialization) vary by a fraction of a percent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.ray_transport import HostId
from cipherfact.protocols.base import Profiler
from cipherfact.simulations.ray_engine import ray_session
from cipherfact.simulations.ray_grid import LocalRoles, PoolSpec, RayGrid, actor_cpus
from cipherfact.simulations.recsys_sim import (
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
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.scenario import ScenarioError

__all__ = [
    "CsrKeyHolder",
    "CsrPublicRoles",
    "FedMFKeyHolder",
    "FedMFServerRole",
    "csr_placement",
    "fedmf_placement",
    "simulate_recsys_ray",
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
    from cipherfact.protocols import csr_fhe_mf as csr

    _check_hosts(n_users, hosts)
    out = {csr.RS_ID: 0, csr.CSP_ID: 1 % hosts}
    out.update({csr.user_id(u): u % hosts for u in range(n_users)})
    return out


def fedmf_placement(n_users: int, hosts: int) -> dict[AgentId, HostId]:
    """Server on actor 0, every user on actor 1 (when there are two): the users share
    one secret key, which is generated in their actor and never pickled."""
    from cipherfact.protocols import fedmf

    _check_hosts(n_users, hosts)
    out = {fedmf.SERVER_ID: 0}
    out.update({fedmf.user_id(u): 1 % hosts for u in range(n_users)})
    return out


# --- factories (run inside the actors) ------------------------------------------------


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
        from cipherfact.protocols import csr_fhe_mf as csr

        split = load_split(self.scenario.data, self.scenario.seed)
        run = build_csr(self.scenario, split)
        csp, rs = run.roles[csr.CSP_ID], run.roles[csr.RS_ID]
        public = {
            "config": csp.config,
            # Users on other actors draw their own secret dummies, so run.twin (from
            # this actor's copies) may not match: the driver asks for the twin of the
            # structure the CSP received once the setup is done (hook "twin").
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
        return LocalRoles(_keep(run.roles, agents), run.profilers, hooks, public)


@dataclass(frozen=True)
class CsrPublicRoles:
    """RS and users from the public config only (they hold no secret key); built
    exactly as ``build_csr`` builds them."""

    scenario: Any
    config: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.crypto.ckks import load_public_ckks
        from cipherfact.protocols import csr_fhe_mf as csr

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
        return LocalRoles(_keep(roles, agents), profs, hooks, {})


@dataclass(frozen=True)
class FedMFKeyHolder:
    """Builds the job as in memory (the users' shared Paillier key is generated here,
    once); keeps the local roles and decrypts Enc(V) bytes for measurement."""

    scenario: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.protocols import fedmf

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
        return LocalRoles(_keep(run.roles, agents), run.profilers, hooks, public)


@dataclass(frozen=True)
class FedMFServerRole:
    """The server from the public config and the users' public key (sent in the key
    stage as in memory); the loader is built as ``build_fedmf`` builds it."""

    scenario: Any

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        from cipherfact.crypto import PaillierOptions, load_public_scheme
        from cipherfact.protocols import fedmf

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

        return LocalRoles({fedmf.SERVER_ID: server}, profs, {"encrypted_v": encrypted_v}, {})


# --- the runner -----------------------------------------------------------------------


def _engine_for(
    scenario: Any, n_users: int, hosts: int, num_cpus: float
) -> tuple[RayGrid, dict[str, Any], Callable[[], tuple[np.ndarray, np.ndarray]]]:
    """Actors for the scenario (key holder first), its public facts, and its factor
    measurement (combining hooks as the in-memory ``RecsysRun.factors`` does)."""
    if scenario.protocol == "csr_fhe_mf":
        from cipherfact.protocols import csr_fhe_mf as csr

        engine = RayGrid(csr_placement(n_users, hosts), PoolSpec(hosts, num_cpus))
        try:
            key_host = engine.placement[csr.CSP_ID]
            engine.add_host(key_host, CsrKeyHolder(scenario))
            public = engine.public(key_host)
            for k in engine.hosted:
                if k != key_host:
                    engine.add_host(k, CsrPublicRoles(scenario, public["config"]))
        except BaseException:
            engine.close()
            raise

        def csr_factors() -> tuple[np.ndarray, np.ndarray]:
            AU, AV = engine.hook(csr.CSP_ID, "masked_factors")
            MU, MV = engine.hook(csr.RS_ID, "factor_masks")
            return AU - MU, AV - MV

        return engine, public, csr_factors

    from cipherfact.protocols import fedmf

    engine = RayGrid(fedmf_placement(n_users, hosts), PoolSpec(hosts, num_cpus))
    try:
        key_host = engine.placement[fedmf.user_id(0)]
        engine.add_host(key_host, FedMFKeyHolder(scenario))
        public = engine.public(key_host)
        for k in engine.hosted:
            if k != key_host:
                engine.add_host(k, FedMFServerRole(scenario))
    except BaseException:
        engine.close()
        raise
    first = fedmf.user_id(0)

    def fedmf_factors() -> tuple[np.ndarray, np.ndarray]:
        blobs = engine.hook(fedmf.SERVER_ID, "encrypted_v")
        return engine.hook(first, "vectors"), engine.hook(first, "decrypt_v", blobs)

    return engine, public, fedmf_factors


def simulate_recsys_ray(scenario: Any, out_dir: Path, options: Any) -> dict[str, Any]:
    """``--backend ray`` for csr_fhe_mf and fedmf: same files and fields as in memory,
    plus ``ray`` (actors, placement, cross-actor messages).

    Starts (and stops) a local Ray unless ``options.ray_address`` names a cluster or
    Ray is already running. ``options.ray_actors`` (default: the cluster's CPUs, at
    least 2) sets the actor count; FedMF uses at most 2 (server, users).
    """
    if options.checkpoint_every or options.resume:
        raise ScenarioError(f"{scenario.protocol} has no checkpoints (ray backend); drop them")
    if options.network is not None and options.network.enabled:
        raise ScenarioError(f"{scenario.protocol} has no network emulation (ray backend)")
    with ray_session(options.ray_address):
        return _run(scenario, Path(out_dir), options)


def _run(scenario: Any, out_dir: Path, options: Any) -> dict[str, Any]:
    import ray

    split = load_split(scenario.data, scenario.seed)
    check_ratings(scenario, split)
    train, test = split.train, split.test
    started = time.perf_counter()
    hosts = options.ray_actors or max(2, int(ray.cluster_resources().get("CPU", 2)))
    hosts = min(hosts, train.n_users + 2)
    try:
        cpus = actor_cpus(
            hosts, float(ray.cluster_resources().get("CPU", 1.0)), options.ray_cpus_per_actor
        )
    except ValueError as exc:
        raise ScenarioError(str(exc)) from exc
    engine, public, factors = _engine_for(scenario, train.n_users, hosts, cpus)
    groups, twin, offset, epochs = (
        public["groups"],
        public["twin"],
        public["offset"],
        public["epochs"],
    )
    writer = RunWriter(out_dir)
    summary = summary_header(scenario, options.backend, split, public["info"])
    metrics: list[dict[str, Any]] = []
    bar = tqdm(
        total=epochs,
        desc=scenario.protocol,
        unit="epoch",
        disable=not options.progress,
        file=sys.stderr,
    )
    try:
        engine.start()
        setup_s = time.perf_counter() - started
        setup_bytes = engine.stats.bytes_total
        seconds = dict(engine.seconds)
        if twin is None:  # csr_fhe_mf: the twin of the structure the users sent
            twin = engine.hook(public["twin_from"], "twin")
        for epoch in range(epochs):
            t0, b0 = time.perf_counter(), engine.stats.bytes_total
            engine.run_outer(f"epoch {epoch}")
            wall = time.perf_counter() - t0
            record = {
                "epoch": epoch,
                **epoch_rmse(factors(), twin[epoch], train, test, offset),
                "bytes": engine.stats.bytes_total - b0,
                "wall_s": wall,
                **{f"{k}_s": v for k, v in engine.seconds.items()},
            }
            for k, v in engine.seconds.items():
                seconds[k] = seconds.get(k, 0.0) + v
            metrics.append(record)
            writer.append_metrics(record)
            bar.update(1)
    except BaseException as exc:
        summary.update(
            status=f"failed: {type(exc).__name__}: {exc}",
            epochs=len(metrics),
            wall_s=time.perf_counter() - started,
            ray=engine.info(),
        )
        writer.write_json("summary.json", summary)
        raise
    finally:
        bar.close()
        engine.close()
    summary["ray"] = engine.info()
    return finish_summary(
        summary,
        scenario,
        train,
        test,
        metrics,
        writer,
        wall_s=time.perf_counter() - started,
        setup_s=setup_s,
        setup_bytes=setup_bytes,
        stats=engine.stats,
        bytes_per_party=party_bytes(engine.stats, groups),
        seconds_per_party=seconds,
    )
