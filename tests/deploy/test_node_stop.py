"""How a party classifies a peer's failure that comes while the party itself is
being stopped (``BaseNode.run``).

An operator's SIGTERM to ``deploy local`` reaches the agents one after the
other; a peer that stops first can break a send to it in any way, even with a
garbled answer (gRPC ``INTERNAL: Exception deserializing response``). A party
that has been told to stop by then must report the stop, not a failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cipherfact.agents.traffic import TrafficStats
from cipherfact.deploy.node_base import BaseNode, NodeError, NodeStoppedError
from cipherfact.deploy.transport import PeerError

GARBLED = "agent 1 (127.0.0.1:1): INTERNAL: Exception deserializing response!"


class _Transport:
    """What ``run`` uses of a transport once the loop has failed."""

    def __init__(self, on_recv: Callable[[], None]) -> None:
        self.stats = TrafficStats()
        self.grpc_bytes_sent = 0
        self._on_recv = on_recv

    def recv(self, agent_id: int, timeout: float) -> list[Any]:
        self._on_recv()  # the party looks for a peer's abort notice: none comes
        return []

    def close(self, grace: float) -> None:
        return None


class _PartyWhosePeerBreaks(BaseNode):
    """Agent 2: its send to agent 1 fails while the job is being stopped."""

    def __init__(self, out: Path, on_recv: Callable[[], None], *, stop_first: bool = False) -> None:
        deploy = SimpleNamespace(
            agent_out=lambda _i: out, scenario=SimpleNamespace(protocol="ppdnmf"), insecure=True
        )
        super().__init__(deploy, 2)  # type: ignore[arg-type]
        self._on_recv = on_recv
        self._stop_first = stop_first

    def prepare(self) -> None:
        self.job_id = ""  # no job id: no abort notices to send

    def peers(self) -> list[int]:
        return [1]

    def _open_transport(self) -> Any:
        return _Transport(self._on_recv)

    def _loop(self, agent: Any, transport: Any) -> None:
        if self._stop_first:  # the job's stop event, set by another thread mid-send
            self.stop_signal = "SIGTERM"
            self.stop.set()
        raise PeerError(GARBLED, 1, 7)


def _sigterm(node: BaseNode) -> None:
    """What the SIGTERM handler does while the node is not armed (in its except)."""
    node.request_stop("SIGTERM")


@pytest.mark.parametrize("when", ["before the failure", "while looking for a notice"])
def test_a_peer_failure_during_a_stop_is_reported_as_the_stop(tmp_path: Path, when: str) -> None:
    first = when == "before the failure"
    node = _PartyWhosePeerBreaks(
        tmp_path, on_recv=(lambda: None) if first else lambda: _sigterm(node), stop_first=first
    )
    with pytest.raises(NodeStoppedError, match="stopped by SIGTERM"):
        node.run()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"].startswith("stopped: ") and "stopped by SIGTERM" in result["status"]
    assert result["stop_signal"] == "SIGTERM"


def test_a_peer_failure_without_a_stop_is_still_a_failure(tmp_path: Path) -> None:
    node = _PartyWhosePeerBreaks(tmp_path, on_recv=lambda: None)
    with pytest.raises(NodeError) as caught:
        node.run()
    assert not isinstance(caught.value, NodeStoppedError)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == f"failed: {GARBLED}" and result["stop_signal"] is None
