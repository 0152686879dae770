"""The in-memory transport, envelopes and traffic accounting."""

from __future__ import annotations

import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.agents.transport import InMemoryTransport, TransportError


def env(sender, receiver, payload=b"abc", round_=0, stage="offer"):
    return Envelope("job", round_, stage, sender, receiver, payload)


def test_delivery_is_fifo_per_receiver_and_counted():
    seen = []
    t = InMemoryTransport([0, 1, 2], observer=seen.append)
    t.send(env(0, 1, b"a"))
    t.send(env(2, 1, b"bb", round_=1, stage="reply"))
    t.send(env(1, 0, b"ccc"))
    assert t.pending() == 3
    assert [e.payload for e in t.recv(1)] == [b"a", b"bb"]
    assert t.recv(1) == []
    assert [e.payload for e in t.recv(0)] == [b"ccc"]
    assert t.pending() == 0
    assert len(seen) == 3
    s = t.stats
    assert s.bytes_total == 6 and s.messages_total == 3
    assert s.bytes_by_edge[(2, 1)] == 2 and s.bytes_by_round[1] == 2
    assert s.bytes_by_stage == {"offer": 4, "reply": 2}
    assert s.bytes_sent_by(0) == 1 and s.bytes_received_by(1) == 3
    assert s.to_dict()["bytes_by_edge"]["0->1"] == 1


def test_unknown_agents_are_refused():
    t = InMemoryTransport([0, 1])
    with pytest.raises(TransportError, match="unknown receiver 7"):
        t.send(env(0, 7))
    with pytest.raises(TransportError, match="unknown sender 9"):
        t.send(env(9, 1))
    with pytest.raises(TransportError, match="unknown agent 5"):
        t.recv(5)


def test_envelope_validation_and_safe_description():
    with pytest.raises(TypeError, match="payload must be bytes"):
        Envelope("job", 0, "offer", 0, 1, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sender and receiver are the same agent"):
        Envelope("job", 0, "offer", 3, 3, b"")
    text = env(0, 1, b"secret-bytes").describe()
    assert "secret" not in text and "0->1" in text and "12 B" in text


def test_stats_merge():
    a, b = InMemoryTransport([0, 1]), InMemoryTransport([0, 1])
    a.send(env(0, 1, b"xx"))
    b.send(env(1, 0, b"yyy"))
    a.stats.merge(b.stats)
    assert a.stats.bytes_total == 5 and a.stats.messages_total == 2
