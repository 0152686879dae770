"""ppdnmf with a host's decryptions batched across its agents and randomness computed
ahead: the same factors and bytes as one agent, one decryption at a time."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto.batch import DecryptBatch
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf import SecAggAgent
from cipherfact.protocols.ppdnmf.agent import HostDecryptBatch
from cipherfact.protocols.ppdnmf.app import PPDNMFRoles, round_robin
from cipherfact.protocols.ppdnmf.job import PPDNMFJob, build_roles, generate_keys, prepare_job
from cipherfact.simulations.grid import LocalGrid
from cipherfact.simulations.scenario import load_scenario

SMALL = [
    "n_agents=5",
    "rank=3",
    "data.rows=12",
    "data.cols=40",
    "outer_iters=2",
    "inner_iters=3",
    "crypto.key_bits=1024",  # p**2 of 1024 bits: the multi-buffer library's smallest size
    "crypto.insecure_test_keys=true",
    "topology.min_degree=2",
]


def _job(exchange: str, *extra: str) -> PPDNMFJob:
    return prepare_job(load_scenario("ppdnmf-synthetic", [*SMALL, f"exchange={exchange}", *extra]))


def _grid_run(job: PPDNMFJob, hosts: int, **roles: bool) -> tuple[dict, int]:
    grid = LocalGrid(round_robin(job.n_agents, hosts), None)
    try:
        for k in range(hosts):
            grid.add_host(k, PPDNMFRoles(job, **roles))
        grid.start()
        for t in range(job.config.outer_iters):
            agents, _ = grid.run_outer(f"outer iteration {t}")
        return agents, grid.stats.bytes_total
    finally:
        grid.close()


@pytest.mark.parametrize("exchange", ["secagg", "pairwise"])
def test_batched_and_prefetched_runs_equal_the_plain_path(
    exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(exchange)
    reference, ref_bytes = _grid_run(job, 1, batch_decrypt=False, prefetch=False)
    sizes: list[int] = []
    flush = DecryptBatch.flush

    def counting_flush(self: DecryptBatch) -> list:
        if len(self):
            sizes.append(len(self))
        return flush(self)

    monkeypatch.setattr(DecryptBatch, "flush", counting_flush)
    for hosts, prefetch in ((1, True), (2, False)):
        sizes.clear()
        agents, total = _grid_run(job, hosts, batch_decrypt=True, prefetch=prefetch)
        assert total == ref_bytes
        for i in range(job.n_agents):
            assert agents[i].W.tobytes() == reference[i].W.tobytes()
            assert agents[i].H.tobytes() == reference[i].H.tobytes()
        # every agent-round decrypted once, and hosts did batch several agents at a time
        rounds = job.config.outer_iters * job.config.inner_iters
        assert sum(sizes) == job.n_agents * rounds
        assert max(sizes) > 1
    # the plain twin of the same job: the same numbers again
    plain, _ = _grid_run(_job(exchange, "crypto.scheme=none"), 1)
    for i in range(job.n_agents):
        assert plain[i].W.tobytes() == reference[i].W.tobytes()


@pytest.mark.parametrize("exchange", ["secagg", "pairwise"])
@pytest.mark.parametrize("seed", [0, 1])
def test_deferred_decryptions_under_any_delivery_order(exchange: str, seed: int) -> None:
    """Self-advancing agents sharing one batch, messages in a random FIFO-per-link order
    and flushes at random moments: the factors of one-at-a-time decryption."""
    job = _job(exchange, "crypto.key_bits=512")
    reference = build_roles(job, generate_keys(job), auto_advance=True)
    roles = build_roles(job, generate_keys(job), auto_advance=True)
    batch: HostDecryptBatch = DecryptBatch()
    for role in roles.values():
        role.use_decrypt_batch(batch)
    rng = np.random.default_rng(seed)
    for group in (reference, roles):
        links: dict[tuple[int, int], list[Envelope]] = {}

        def post(envs: list[Envelope], links: dict = links) -> None:
            for e in envs:
                links.setdefault((e.sender, e.receiver), []).append(e)

        for role in group.values():
            post(role.start())
        while any(links.values()) or len(batch):
            busy = [k for k, q in links.items() if q]
            if group is roles and len(batch) and (not busy or rng.random() < 0.2):
                for _, envs in batch.flush():
                    post(envs)
                continue
            key = busy[0] if group is reference else busy[rng.integers(len(busy))]
            e = links[key].pop(0)
            post(group[e.receiver].step(e))
        assert all(r.done for r in group.values())
    for i in range(job.n_agents):
        assert np.array_equal(reference[i].W, roles[i].W)
        assert np.array_equal(reference[i].H, roles[i].H)


def test_a_duplicate_share_is_refused_while_the_sum_awaits_its_batch() -> None:
    job = _job("secagg", "crypto.key_bits=512")
    roles = build_roles(job, generate_keys(job))
    batch: HostDecryptBatch = DecryptBatch()
    for role in roles.values():
        role.use_decrypt_batch(batch)
    pending = [e for r in roles.values() for e in r.start()]
    while pending:
        e = pending.pop(0)
        pending += roles[e.receiver].step(e)
    hub = roles[0]
    assert isinstance(hub, SecAggAgent)
    out = [e for r in roles.values() for e in r.begin_outer()]
    to_hub = [e for e in out if e.receiver == 0]
    for e in to_hub:
        assert hub.step(e) == []  # the last share queues the decryption instead of advancing
    assert len(batch) == 1 and hub.round == 0
    with pytest.raises(ProtocolError, match="duplicate share for round 0"):
        hub.step(to_hub[0])
    resumed = batch.flush()
    assert [agent for agent, _ in resumed] == [0] and hub.round == 1


@pytest.mark.parametrize(("mode", "expect"), [("on", True), ("off", False)])
def test_crypto_prefetch_switches_the_worker_on_and_off(
    monkeypatch: pytest.MonkeyPatch, mode: str, expect: bool
) -> None:
    """``crypto.prefetch`` decides whether the in-memory host gets a prefetch worker
    ("auto" follows the cores this process may use); a bad value is one line."""
    from types import SimpleNamespace

    from cipherfact.protocols.ppdnmf import app as ppdnmf_run
    from cipherfact.simulations.network import NetworkModel
    from cipherfact.simulations.scenario import ScenarioError

    seen: list[bool] = []

    class Spy(PPDNMFRoles):
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.append(bool(kwargs.get("prefetch")))
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ppdnmf_run, "PPDNMFRoles", Spy)
    monkeypatch.setattr(ppdnmf_run, "_spare_core", lambda: not expect)  # auto would differ
    scenario = load_scenario(
        "ppdnmf-synthetic",
        ["n_agents=4", "data.cols=20", "crypto.scheme=none", f"crypto.prefetch={mode}"],
    )
    app = ppdnmf_run.PPDNMFApp(prepare_job(scenario))
    app.build_grid(SimpleNamespace(backend="inmemory", network=NetworkModel(), progress=False))
    assert seen == [expect]
    with pytest.raises(ScenarioError, match=r"crypto.prefetch must be one of"):
        load_scenario("ppdnmf-synthetic", ["crypto.prefetch=sometimes"])


def _ray_options(**overrides: object) -> object:
    """``simulate``'s options for ``build_grid`` on Ray (no network emulation)."""
    from types import SimpleNamespace

    from cipherfact.simulations.network import NetworkModel

    fields: dict[str, object] = {
        "backend": "ray",
        "network": NetworkModel(),
        "progress": False,
        "ray_actors": None,
        "ray_cpus_per_actor": None,
        "ray_gpus_per_actor": None,
    }
    return SimpleNamespace(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("mode", "expect"), [("auto", (True, True)), ("on", (True, False)), ("off", (False, False))]
)
def test_ray_actors_get_a_low_priority_prefetch_worker(
    monkeypatch: pytest.MonkeyPatch, mode: str, expect: tuple[bool, bool]
) -> None:
    """On Ray each one-CPU actor's roles get a prefetch worker at nice 19 (mostly
    idle time) unless ``crypto.prefetch = "off"``; "auto" only where the worker's
    table budget holds every key of the actor."""
    from types import SimpleNamespace

    from cipherfact.protocols.ppdnmf import app as ppdnmf_run

    seen: list[tuple[bool, int, bool]] = []

    class FakeRayGrid:
        def __init__(self, placement: dict, pool: object, network: object) -> None:
            self.hosted = LocalGrid(placement, None).hosted  # the grids' own grouping
            self.pool = pool

        def add_host(self, k: int, roles: PPDNMFRoles) -> None:
            seen.append((roles.prefetch, roles.prefetch_nice, roles.prefetch_if_all_fit))

    fake_ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    monkeypatch.setitem(__import__("sys").modules, "ray", fake_ray)
    monkeypatch.setattr(ppdnmf_run, "RayGrid", FakeRayGrid)
    scenario = load_scenario(
        "ppdnmf-synthetic",
        ["n_agents=4", "data.cols=20", "crypto.scheme=none", f"crypto.prefetch={mode}"],
    )
    app = ppdnmf_run.PPDNMFApp(prepare_job(scenario))
    options = _ray_options(ray_cpus_per_actor=None)
    app.build_grid(options)
    assert seen == [(expect[0], ppdnmf_run.RAY_PREFETCH_NICE, expect[1])] * 2
    assert ppdnmf_run.RAY_PREFETCH_NICE == 19


@pytest.mark.parametrize(
    ("overrides", "cpus_per_actor", "expect"),
    [
        ([], None, [(2.0, 0)]),  # one actor reserving both CPUs, worker at par
        ([], 1.0, [(1.0, 19)] * 2),  # asked for one-CPU actors: nice 19
        (["crypto.scheme=none"], None, [(1.0, 19)] * 2),  # nothing beside the actor's thread
        (["crypto.prefetch=off"], None, [(1.0, 19)] * 2),  # no worker
        (["n_agents=40", "topology.degree=8"], None, [(1.0, 19)] * 2),  # keys overflow the budget
    ],
)
def test_paillier_actors_reserve_the_cpus_their_worker_uses(
    monkeypatch: pytest.MonkeyPatch,
    overrides: list[str],
    cpus_per_actor: float | None,
    expect: list[tuple[float, int]],
) -> None:
    """With Paillier a host with a factor worker keeps two cores busy (its thread and
    the worker), so by default an actor reserves ``PAILLIER_HOST_CPUS`` and runs
    the worker at its own priority; one-CPU actors (asked for, or hosts that get
    no worker) keep it at nice 19."""
    from types import SimpleNamespace

    from cipherfact.protocols.ppdnmf import app as ppdnmf_run
    from cipherfact.simulations.ray_grid import PoolSpec

    seen: list[tuple[float, int]] = []

    class FakeRayGrid:
        def __init__(self, placement: dict, pool: PoolSpec, network: object) -> None:
            self.hosted = LocalGrid(placement, None).hosted  # the grids' own grouping
            self.pool = pool
            self.cpus = pool.num_cpus

        def add_host(self, k: int, roles: PPDNMFRoles) -> None:
            seen.append((self.cpus, roles.prefetch_nice))

    fake_ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    monkeypatch.setitem(__import__("sys").modules, "ray", fake_ray)
    monkeypatch.setattr(ppdnmf_run, "RayGrid", FakeRayGrid)
    scenario = load_scenario("ppdnmf-synthetic", ["n_agents=4", "data.cols=80", *overrides])
    options = _ray_options(ray_cpus_per_actor=cpus_per_actor)
    ppdnmf_run.PPDNMFApp(prepare_job(scenario)).build_grid(options)
    assert seen == expect


def test_a_host_whose_keys_overflow_the_worker_budget_gets_no_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prefetch_if_all_fit``: the host's tables (own keys' CRT pairs, neighbours'
    public keys) are counted; past ``PREFETCH_TABLE_BUDGET`` no worker is made."""
    from cipherfact.crypto.djn import table_bytes
    from cipherfact.protocols.ppdnmf import app as ppdnmf_run

    scenario = load_scenario(
        "ppdnmf-synthetic",
        [
            "n_agents=4",
            "data.cols=20",
            "crypto.key_bits=512",
            "crypto.insecure_test_keys=true",
            "crypto.djn_public=true",
        ],
    )
    job = prepare_job(scenario)
    agents = [0, 1]
    peers = {j for i in agents for j in job.graph.neighbors(i)}
    need = 2 * 2 * table_bytes(512, 448, 7) + len(peers) * table_bytes(1024, 448, 7)
    assert ppdnmf_run.host_table_bytes(job, agents) == need
    for budget, worker in ((need, True), (need - 1, False)):
        monkeypatch.setattr(ppdnmf_run, "PREFETCH_TABLE_BUDGET", budget)
        local = PPDNMFRoles(job, prefetch=True, prefetch_if_all_fit=True)(agents)
        try:
            assert all((r._prefetcher is not None) == worker for r in local.roles.values())
        finally:
            if local.close is not None:
                local.close()
