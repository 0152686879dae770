"""``Agent``: one protocol role bound to a transport.

The agent is the only place where a protocol meets the network: it feeds
received envelopes to its state machine in arrival order and sends whatever
comes back. Errors are re-raised with the agent, round and stage attached, so
a failed run says who stopped and where.
"""

from __future__ import annotations

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.agents.transport import Transport
from cipherfact.protocols.base import ProtocolError, StateMachine


class AgentError(RuntimeError):
    """An agent failed while handling a message; names the agent and the message."""

    def __init__(self, agent_id: AgentId, env: Envelope | None, cause: BaseException) -> None:
        where = f" while handling {env.describe()}" if env is not None else ""
        super().__init__(f"agent {agent_id} failed{where}: {cause}")
        self.agent_id = agent_id
        self.envelope = env


class Agent:
    """Runs one ``StateMachine`` over a ``Transport``."""

    def __init__(self, agent_id: AgentId, protocol: StateMachine, transport: Transport) -> None:
        self.agent_id = agent_id
        self.protocol = protocol
        self.transport = transport

    def start(self) -> int:
        """Send the protocol's opening envelopes; returns how many."""
        out = self.protocol.start()
        self.transport.send_all(out)
        return len(out)

    def deliver(self, env: Envelope) -> int:
        """Handle one envelope; returns how many envelopes were sent in answer."""
        try:
            out = self.protocol.step(env)
        except (ProtocolError, ValueError, TypeError) as exc:
            raise AgentError(self.agent_id, env, exc) from exc
        self.transport.send_all(out)
        return len(out)

    def poll(self, timeout: float | None = None) -> int:
        """Handle every envelope waiting for this agent; returns how many were handled."""
        envs = self.transport.recv(self.agent_id, timeout)
        for env in envs:
            self.deliver(env)
        return len(envs)

    def send(self, envs: list[Envelope]) -> None:
        self.transport.send_all(envs)
