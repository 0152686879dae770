"""The pieces of the Ray engine that need no Ray: host transport, hosts, pool sizing.

Two ``RoleHost`` objects (ppdnmf's factory) on a ``LocalGrid`` (the Ray grid's
routing, in this process) give the in-memory factors bit for bit: the engine's
semantics, without actors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.agents.ray_transport import HostTransport
from cipherfact.agents.transport import TransportError
from cipherfact.protocols.ppdnmf import load_state_npz
from cipherfact.protocols.ppdnmf.app import PPDNMFRoles, round_robin
from cipherfact.protocols.ppdnmf.job import prepare_job, run_inmemory
from cipherfact.simulations.grid import LocalGrid, RoleHost
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.ray_grid import pool_spec
from cipherfact.simulations.scenario import load_scenario

PLACEMENT = {0: 0, 1: 1, 2: 0, 3: 1}


def _env(s: int, r: int, stage: str = "offer") -> Envelope:
    return Envelope("job", 0, stage, s, r, b"abc")


def test_host_transport_keeps_local_messages_and_batches_remote_ones() -> None:
    seen: list[Envelope] = []
    t = HostTransport(0, PLACEMENT, observer=seen.append)
    assert t.agents == [0, 2]
    t.send(_env(0, 2))
    t.send(_env(0, 1))
    t.send(_env(2, 3))
    t.send(_env(2, 1, "reply"))
    assert t.pending() == 1
    assert [e.receiver for e in t.recv(2)] == [2]
    out = t.take_outbox()
    assert list(out) == [1]
    assert [(e.sender, e.receiver, e.stage) for e in out[1]] == [
        (0, 1, "offer"),
        (2, 3, "offer"),
        (2, 1, "reply"),
    ]
    assert t.take_outbox() == {}
    assert (t.local_messages, t.remote_messages) == (1, 3)
    assert t.stats.messages_total == 4 and len(seen) == 4
    assert t.deliver([_env(1, 0), _env(3, 2)]) == 2
    assert t.pending() == 2


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda t: t.send(_env(1, 0)), "host 0 cannot send for agent 1"),
        (lambda t: t.send(_env(0, 9)), "unknown receiver 9"),
        (lambda t: t.recv(1), "agent 1 is not hosted by host 0"),
        (lambda t: t.deliver([_env(0, 1)]), "host 0 got an envelope for agent 1"),
    ],
)
def test_host_transport_rejects_misrouting(
    action: Callable[[HostTransport], object], message: str
) -> None:
    with pytest.raises(TransportError, match=message):
        action(HostTransport(0, PLACEMENT))


def test_host_without_agents_is_refused() -> None:
    with pytest.raises(ValueError, match="host 2 has no agents"):
        HostTransport(2, PLACEMENT)


@pytest.mark.parametrize(
    ("kwargs", "resources", "expected"),
    [
        ({}, {"CPU": 2.0}, (2, 1.0, 0.0)),
        ({}, {"CPU": 16.0}, (6, 1.0, 0.0)),  # never more actors than agents
        ({"cpus_per_actor": 0.5}, {"CPU": 2.0}, (4, 0.5, 0.0)),
        ({"actors": 4}, {"CPU": 2.0}, (4, 0.5, 0.0)),  # more actors than CPUs: a share
        ({"actors": 3}, {"CPU": 4.0}, (3, 1.0, 0.0)),
        ({"wants_gpu": True}, {"CPU": 4.0, "GPU": 1.0}, (4, 1.0, 0.25)),
        ({"wants_gpu": True}, {"CPU": 2.0}, (2, 1.0, 0.0)),
        ({"gpus_per_actor": 0.5}, {"CPU": 2.0}, (2, 1.0, 0.5)),
        # hosts that keep two cores busy reserve two, and share what a cluster has
        ({"host_cpus": 2.0}, {"CPU": 2.0}, (1, 2.0, 0.0)),
        ({"host_cpus": 2.0}, {"CPU": 8.0}, (4, 2.0, 0.0)),
        ({"host_cpus": 2.0}, {"CPU": 1.0}, (1, 1.0, 0.0)),
        ({"host_cpus": 2.0, "actors": 4}, {"CPU": 2.0}, (4, 0.5, 0.0)),
        ({"host_cpus": 2.0, "cpus_per_actor": 1.0}, {"CPU": 2.0}, (2, 1.0, 0.0)),
    ],
)
def test_pool_spec(kwargs: dict, resources: dict, expected: tuple) -> None:
    spec = pool_spec(6, resources, **kwargs)
    assert (spec.actors, spec.num_cpus, spec.num_gpus) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpus_per_actor": 0.0}, "cpus_per_actor must be > 0, got 0.0"),
        ({"actors": 0}, "actors must be >= 1, got 0"),
        ({"host_cpus": 0.0}, "host_cpus must be > 0, got 0.0"),
        ({"gpus_per_actor": -1.0}, "gpus_per_actor must be >= 0, got -1.0"),
        (
            {"actors": 3, "cpus_per_actor": 1.0},
            r"3 actors x 1 CPUs = 3 CPUs, but the Ray "
            r"cluster has 2: Ray could never start them all",
        ),
    ],
)
def test_pool_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pool_spec(6, {"CPU": 2.0}, **kwargs)


def test_round_robin() -> None:
    assert round_robin(5, 2) == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0}


def test_hosts_in_process_match_inmemory() -> None:
    scenario = load_scenario(
        "ppdnmf-synthetic",
        [
            "n_agents=5",
            "outer_iters=2",
            "inner_iters=3",
            "data.rows=10",
            "data.cols=30",
            "crypto.scheme=plain",
        ],
    )
    job = prepare_job(scenario)
    reference = list(run_inmemory(job))[-1]
    placement = round_robin(job.n_agents, 2)
    net = NetworkModel(latency_ms=5.0)
    grid = LocalGrid(placement, net)
    for k in range(2):
        grid.add_host(k, PPDNMFRoles(job))
    setup = grid.start()
    assert setup.seconds > 0  # the clocks charged the key exchange
    for t in range(job.config.outer_iters):
        agents, network = grid.run_outer(f"outer iteration {t}")
        assert network.seconds > 0
    for i in range(job.n_agents):
        assert np.array_equal(agents[i].W, reference.Ws[i])
        assert np.array_equal(agents[i].H, reference.Hs[i])
        assert agents[i].ready
    assert grid.stats.bytes_total == reference.stats.bytes_total
    assert dict(grid.stats.bytes_by_edge) == dict(reference.stats.bytes_by_edge)
    assert grid.remote_messages > 0 and grid.local_messages > 0
    states = grid.checkpoint()
    assert sorted(states) == list(range(job.n_agents))
    assert int(load_state_npz(states[0])["outer"]) == 2
    grid.close()


def test_host_failure_names_host_agents_and_round() -> None:
    scenario = load_scenario(
        "ppdnmf-synthetic",
        [
            "n_agents=4",
            "outer_iters=1",
            "inner_iters=2",
            "data.rows=8",
            "data.cols=20",
            "crypto.scheme=plain",
        ],
    )
    job = prepare_job(scenario)
    host = RoleHost(0, PPDNMFRoles(job), round_robin(4, 2))
    with pytest.raises(RuntimeError, match=r"host 0 \(agents \[0, 2\]\) failed during begin_outer"):
        host.begin_outer()  # public keys missing: the key stage never ran


def test_balanced_placement_spreads_the_work_not_the_count() -> None:
    from cipherfact.protocols.ppdnmf.app import AGENT_ROUND_COST, balanced_placement

    degrees = [4, 2, 3, 4, 5, 3, 3, 2, 1, 3]  # ppdnmf-synthetic's geometric graph
    placement = balanced_placement(degrees, 2)
    assert sorted(placement) == list(range(10)) and set(placement.values()) == {0, 1}
    load = [
        sum(AGENT_ROUND_COST + d for i, d in enumerate(degrees) if placement[i] == k)
        for k in (0, 1)
    ]
    assert load == [35, 35]  # round-robin gives 36 / 34
    assert balanced_placement(degrees, 2) == placement  # deterministic
    assert set(balanced_placement([1, 1, 1], 5).values()) == {0, 1, 2}
    with pytest.raises(ValueError, match="hosts must be >= 1"):
        balanced_placement(degrees, 0)
