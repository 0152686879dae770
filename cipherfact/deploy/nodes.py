"""Pick the node class of a deployed job's protocol."""

from __future__ import annotations

import threading

from cipherfact.agents.envelope import AgentId
from cipherfact.deploy.jobfile import DeployJob, JobFileError
from cipherfact.deploy.node_base import BaseNode


def make_node(
    deploy: DeployJob,
    agent_id: AgentId,
    *,
    resume_from: int | None = None,
    stop: threading.Event | None = None,
) -> BaseNode:
    """The party ``agent_id`` of ``deploy``: a ppdnmf agent or a csr_fhe_mf party."""
    protocol = deploy.scenario.protocol
    if protocol == "ppdnmf":
        from cipherfact.deploy.node import Node

        return Node(deploy, agent_id, resume_from=resume_from, stop=stop)
    if protocol == "csr_fhe_mf":
        if resume_from is not None:
            raise JobFileError("csr_fhe_mf parties keep no checkpoints: --resume is ppdnmf-only")
        from cipherfact.deploy.csr_node import CsrNode

        return CsrNode(deploy, agent_id, stop=stop)
    raise JobFileError(f"protocol {protocol!r} cannot be deployed")
