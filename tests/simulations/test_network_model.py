"""Network emulation: exact costs on hand-checked examples, seeded draws, validation."""

from __future__ import annotations

import math

import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.simulations.network import (
    NetworkClock,
    NetworkModel,
    merge_retransmissions,
    merge_waves,
    report,
)


def _env(
    sender: int, receiver: int, nbytes: int, round_: int = 0, stage: str = "offer"
) -> Envelope:
    return Envelope("job", round_, stage, sender, receiver, b"x" * nbytes)


def test_latency_and_bandwidth_cost_of_one_wave() -> None:
    # 8 Mb/s = 1e6 B/s: 1000 B take 1 ms; latency 50 ms paid once per edge and wave
    clock = NetworkClock(NetworkModel(latency_ms=50.0, bandwidth_mbps=8.0))
    clock.record(_env(0, 1, 1000))
    clock.record(_env(0, 1, 1000))  # same edge, same wave: shares the link
    clock.record(_env(1, 0, 3000))
    waves, retrans = clock.drain()
    assert waves == {(0, "offer"): pytest.approx(0.053)}
    assert retrans == {}
    rep = report(waves, retrans)
    assert rep.seconds == pytest.approx(0.053)
    assert rep.waves == 1
    assert rep.seconds_by_stage == {"offer": pytest.approx(0.053)}
    assert clock.drain() == ({}, {})  # drained


def test_waves_add_up_and_unlimited_bandwidth_costs_latency_only() -> None:
    clock = NetworkClock(NetworkModel(latency_ms=10.0))
    clock.record(_env(0, 1, 10**6, round_=0, stage="offer"))
    clock.record(_env(1, 0, 10**6, round_=0, stage="reply"))
    clock.record(_env(0, 1, 10**6, round_=1, stage="offer"))
    rep = report(*clock.drain())
    assert rep.seconds == pytest.approx(0.030)
    assert rep.seconds_by_stage == {"offer": pytest.approx(0.02), "reply": pytest.approx(0.01)}


def test_loss_is_seeded_and_order_independent() -> None:
    model = NetworkModel(latency_ms=10.0, bandwidth_mbps=8.0, loss=0.5, seed=3)
    envs = [_env(s, r, 100, round_=k) for k in range(20) for s, r in ((0, 1), (1, 2), (2, 0))]
    a, b = NetworkClock(model), NetworkClock(model)
    for env in envs:
        a.record(env)
    for env in reversed(envs):
        b.record(env)
    assert a.drain() == b.drain()
    attempts = [model.attempts(e) for e in envs]
    assert min(attempts) == 1 and max(attempts) > 1
    assert attempts != [NetworkModel(loss=0.5, seed=4).attempts(e) for e in envs]
    # one lost copy costs its transfer plus a two-latency timeout
    env = next(e for e in envs if model.attempts(e) == 2)
    clock = NetworkClock(model)
    clock.record(env)
    waves, retrans = clock.drain()
    assert waves[(env.round, env.stage)] == pytest.approx(0.010 + 2 * 1e-4 + 2 * 0.010)
    assert retrans == {(env.round, env.stage): 1}


def test_jitter_is_per_undirected_edge_and_seeded() -> None:
    model = NetworkModel(latency_ms=100.0, bandwidth_mbps=10.0, jitter=0.5, seed=1)
    lat, bw = model.link(2, 5)
    assert model.link(5, 2) == (lat, bw)
    assert 0.05 <= lat <= 0.15 and lat != 0.1
    assert 0.5 * 1.25e6 <= bw <= 1.5 * 1.25e6
    assert model.link(2, 5) != NetworkModel(latency_ms=100.0, jitter=0.5, seed=2).link(2, 5)
    assert NetworkModel(latency_ms=100.0).link(2, 5) == (0.1, math.inf)


def test_merging_clocks_takes_the_slowest_edge() -> None:
    assert merge_waves([{(0, "offer"): 1.0}, {(0, "offer"): 2.0, (0, "reply"): 0.5}]) == {
        (0, "offer"): 2.0,
        (0, "reply"): 0.5,
    }
    assert merge_retransmissions([{(0, "a"): 1}, {(0, "a"): 2, (1, "a"): 1}]) == {
        (0, "a"): 3,
        (1, "a"): 1,
    }


def test_enabled() -> None:
    assert not NetworkModel().enabled
    assert NetworkModel(latency_ms=1.0).enabled
    assert NetworkModel(bandwidth_mbps=1.0).enabled
    assert NetworkModel(loss=0.1).enabled


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"latency_ms": -1.0}, ValueError, "latency_ms must be a finite number >= 0, got -1.0"),
        ({"latency_ms": math.inf}, ValueError, "latency_ms must be a finite number"),
        ({"latency_ms": "5"}, TypeError, "latency_ms must be a number, got '5'"),
        ({"bandwidth_mbps": 0.0}, ValueError, r"bandwidth_mbps must be > 0 \(or None\), got 0.0"),
        ({"loss": 1.0}, ValueError, r"loss must be in \[0, 1\), got 1.0"),
        ({"loss": -0.1}, ValueError, r"loss must be in \[0, 1\), got -0.1"),
        ({"jitter": 1.5}, ValueError, r"jitter must be in \[0, 1\), got 1.5"),
        ({"seed": -2}, ValueError, "network seed must be an integer >= 0, got -2"),
    ],
)
def test_validation(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        NetworkModel(**kwargs)
