"""Pick the node class of a deployed job's protocol (from the protocol registry)."""

from __future__ import annotations

import threading

from cipherfact import registry
from cipherfact.agents.envelope import AgentId
from cipherfact.deploy import jobfile
from cipherfact.deploy.jobfile import DeployJob, JobFileError
from cipherfact.deploy.node_base import BaseNode


def make_node(
    deploy: DeployJob,
    agent_id: AgentId,
    *,
    resume_from: int | None = None,
    stop: threading.Event | None = None,
) -> BaseNode:
    """The party ``agent_id`` of ``deploy``, of the class its protocol registers."""
    protocol = deploy.scenario.protocol
    node_class: type[BaseNode] = jobfile.node_class(protocol)
    if resume_from is None:
        return node_class(deploy, agent_id, stop=stop)
    if not node_class.supports_resume:
        resumable = [p for p in registry.deployable() if registry.load(p, "node").supports_resume]
        raise JobFileError(
            f"{protocol} parties keep no checkpoints, so they cannot resume (drop --resume / "
            f"--resume-from and start afresh; deployed parties resume for "
            f"{', '.join(resumable) or 'no protocol'})"
        )
    return node_class(deploy, agent_id, resume_from=resume_from, stop=stop)
