"""Network emulation of turn-taking stages: each edge is a wave of its own."""

from __future__ import annotations

import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.simulations.network import NetworkClock, NetworkModel, report


def _env(sender: int, receiver: int, stage: str) -> Envelope:
    return Envelope("job", 0, stage, sender, receiver, b"x" * 1000)


def test_turn_stage_edges_add_up_and_others_overlap() -> None:
    # 8 Mb/s: 1000 B take 1 ms; 10 ms latency
    model = NetworkModel(latency_ms=10.0, bandwidth_mbps=8.0, turns=("items", "grads"))
    clock = NetworkClock(model)
    for user in (1, 2, 3):
        clock.record(_env(0, user, "items"))
        clock.record(_env(user, 0, "grads"))
        clock.record(_env(0, user, "key"))  # not a turn stage: one parallel wave
    waves, _ = clock.drain()
    assert waves[(0, "items@0-2")] == pytest.approx(0.011)
    rep = report(waves)
    assert rep.seconds_by_stage == {
        "grads": pytest.approx(3 * 0.011),
        "items": pytest.approx(3 * 0.011),
        "key": pytest.approx(0.011),
    }
    assert rep.seconds == pytest.approx(7 * 0.011)
    plain = NetworkClock(NetworkModel(latency_ms=10.0, bandwidth_mbps=8.0))
    for user in (1, 2, 3):
        plain.record(_env(0, user, "items"))
    assert report(plain.drain()[0]).seconds == pytest.approx(0.011)


@pytest.mark.parametrize("turns", [("",), ("a@b",), (3,)])
def test_bad_turn_stages_are_refused(turns: tuple) -> None:
    with pytest.raises(ValueError, match="turns must be stage names"):
        NetworkModel(latency_ms=1.0, turns=turns)
