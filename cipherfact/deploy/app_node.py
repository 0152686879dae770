"""A deployed party built by the protocol's own role factory, and its gathering step.

ppdnmf, csr_fhe_mf and fedmf have nodes of their own (per-party keys,
checkpoints, their result files). A new protocol whose simulation factory
(``simulations.grid.RoleFactory``) can build one agent's role alone from the
scenario deploys with a small ``AppNode`` subclass that says who talks to
whom, the job id, the last round and which agents begin each outer iteration
(the *drivers*: the others only answer messages, since deployed parties
share no barrier). Everything else, gRPC with mTLS, silence and abort
handling, ``result.json``, is ``BaseNode``'s; a driver writes one
``metrics.jsonl`` line per outer iteration with what its role reports at the
boundary (the factory's ``report``), and ``gather_app`` turns the parties'
folders into ``summary.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.agent import Agent
from cipherfact.agents.envelope import AgentId
from cipherfact.agents.traffic import TrafficStats
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.deploy.node_base import BaseNode
from cipherfact.simulations.results import RunWriter, read_metrics_tolerant

__all__ = ["AppNode", "gather_app"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


class AppNode(BaseNode):
    """One party of a registered protocol, built by its simulation's role factory."""

    #: agents that begin every outer iteration (``begin_outer``) when at a boundary
    drivers: frozenset[AgentId] = frozenset({0})

    @classmethod
    @abstractmethod
    def factory(cls, scenario: Any) -> Any:
        """The protocol's role factory (``agents -> LocalRoles``) for ``scenario``."""

    @classmethod
    @abstractmethod
    def neighbours(cls, scenario: Any, agent_id: AgentId) -> list[AgentId]:
        """The parties ``agent_id`` exchanges envelopes with."""

    @classmethod
    @abstractmethod
    def last_round(cls, scenario: Any) -> int:
        """The highest round an envelope of the job carries."""

    @classmethod
    def job_id_of(cls, scenario: Any) -> str:
        """The job id the roles put into their envelopes."""
        return str(scenario.name)

    def prepare(self) -> None:
        scenario = self.deploy.scenario
        self.local = self.factory(scenario)([self.agent_id])
        self.role = self.local.roles[self.agent_id]
        self.job_id = self.job_id_of(scenario)
        self.metrics_path.write_text("", encoding="utf-8")
        self._boundaries = 0

    def peers(self) -> list[AgentId]:
        return list(self.neighbours(self.deploy.scenario, self.agent_id))

    def max_round(self) -> int:
        return int(self.last_round(self.deploy.scenario))

    def current_round(self) -> int:
        return int(getattr(self.role, "round", -1))

    def should_begin(self) -> bool:
        role = self.role
        return self.agent_id in self.drivers and bool(role.at_boundary) and not role.done

    def begin(self, agent: Agent) -> None:
        if self._boundaries:  # the previous outer iteration has ended here
            self._report()
        self._boundaries += 1
        super().begin(agent)

    def finish(self) -> None:
        if self.agent_id in self.drivers and self._boundaries:
            self._report()

    def _report(self) -> None:
        report = self.local.report(self.role) if self.local.report is not None else None
        payload, messages, grpc_bytes = self.traffic_since_last()
        self.append_metrics(
            {
                "outer": self._boundaries - 1,
                "report": _jsonable(report),
                "bytes_sent": payload,
                "messages_sent": messages,
                "grpc_bytes_sent": grpc_bytes,
            }
        )


def gather_app(
    deploy: DeployJob,
    results: Sequence[dict[str, Any]],
    codes: Sequence[int],
    wall_s: float,
    out: Path,
    *,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """``summary.json`` (statuses, traffic) and the drivers' ``metrics.jsonl`` lines."""
    from cipherfact.deploy.jobfile import node_class
    from cipherfact.simulations.results import machine_info, package_versions

    scenario = deploy.scenario
    stats = TrafficStats()
    for r in results:
        stats.merge(TrafficStats.from_dict(r.get("traffic") or {}))
    failed = [
        f"agent {i}: {r.get('status')}"
        for i, r in enumerate(results)
        if r.get("status") != "completed"
    ]
    status = "completed" if not failed and not any(codes) else "failed: " + "; ".join(failed)
    summary: dict[str, Any] = {
        "protocol": scenario.protocol,
        "backend": "grpc",
        "transport": "insecure" if deploy.insecure else "mTLS",
        "scenario": dataclasses.asdict(scenario),
        "status": status if interrupted is None else "interrupted",
        "exit_codes": list(codes),
        "agents": {
            str(i): {k: r.get(k) for k in ("status", "wall_s")} for i, r in enumerate(results)
        },
        "wall_s": wall_s,
        "grpc_bytes_total": sum(int(r.get("grpc_bytes_sent", 0) or 0) for r in results),
        "traffic": stats.to_dict(),
        "machine": machine_info(),
        "versions": package_versions(),
    }
    if interrupted is not None:
        summary.update(agent_statuses=status, interrupted_by=interrupted)
    writer = RunWriter(out)
    lines: list[dict[str, Any]] = []
    for i in sorted(node_class(scenario.protocol).drivers):
        lines += read_metrics_tolerant(deploy.agent_out(i) / "metrics.jsonl")
    for line in lines:
        writer.append_metrics(line)
    summary.update(
        outer_iters_completed=len(lines),
        final_report=lines[-1]["report"] if lines else None,
        bytes_total=stats.bytes_total,
        messages_total=stats.messages_total,
    )
    writer.write_json("summary.json", summary)
    return summary
