"""Gathering a deployed job: the parties' folders into one ``summary.json``.

Only this step (``deploy local``, ``deploy gather``) sees every party's folder;
a real deployment never does. What every protocol's summary holds is built
here once: the job's status (which parties failed and why, or that the run
was interrupted), exit codes, a line per party, the transport, the scenario,
the machine and the package versions. The protocol's node class
(``BaseNode.gather``) adds only its own metrics: errors, RMSE, factors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.traffic import TrafficStats
from cipherfact.deploy.jobfile import DeployJob
from cipherfact.simulations.results import (
    RunWriter,
    machine_info,
    package_versions,
    read_metrics_tolerant,
)
from cipherfact.simulations.scenario import scenario_to_dict

__all__ = ["GatherRun", "gather_reports", "job_totals"]


@dataclass
class GatherRun:
    """What the gathering step is given: the job, each party's ``result.json``
    (``results[i]``, agent i's), the exit codes, the wall time, where to write, and
    ``interrupted`` (a signal's name) when ``deploy local`` was stopped."""

    deploy: DeployJob
    results: Sequence[dict[str, Any]]
    codes: Sequence[int]
    wall_s: float
    writer: RunWriter
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        """Every party completed and exited cleanly, and nothing interrupted the run."""
        done = all(r.get("status") == "completed" for r in self.results) and not any(self.codes)
        return done and self.interrupted is None

    def metrics(self, agent_id: AgentId) -> list[dict[str, Any]]:
        """Agent ``agent_id``'s ``metrics.jsonl`` lines (a line cut short left out)."""
        return read_metrics_tolerant(self.deploy.agent_out(agent_id) / "metrics.jsonl")

    def traffic(self) -> TrafficStats:
        """This run's traffic, every party's counters merged."""
        stats = TrafficStats()
        for r in self.results:
            stats.merge(TrafficStats.from_dict(r.get("traffic") or {}))
        return stats

    def summary(self, agent_keys: Iterable[str], **fields: Any) -> dict[str, Any]:
        """The fields every protocol's ``summary.json`` has, ``agent_keys`` of each
        party's ``result.json`` under ``agents``, then ``fields``."""
        deploy, results = self.deploy, self.results
        keys = tuple(agent_keys)
        failed = [
            f"agent {i}: {r.get('status')}"
            for i, r in enumerate(results)
            if r.get("status") != "completed"
        ]
        done = not failed and not any(self.codes)
        status = "completed" if done else "failed: " + "; ".join(failed)
        summary: dict[str, Any] = {
            "protocol": deploy.scenario.protocol,
            "scenario": scenario_to_dict(deploy.scenario),
            "backend": "grpc",
            "transport": "insecure" if deploy.insecure else "mTLS",
            "machine": machine_info(),
            "versions": package_versions(),
            "exit_codes": list(self.codes),
            "agents": {str(i): {k: r.get(k) for k in keys} for i, r in enumerate(results)},
            "wall_s": self.wall_s,
            "status": status,
        }
        if self.interrupted is not None:
            summary.update(
                agent_statuses=status, status="interrupted", interrupted_by=self.interrupted
            )
        return {**summary, **fields}


def gather_reports(run: GatherRun, drivers: Sequence[AgentId]) -> dict[str, Any]:
    """A protocol built by its simulation factory: the common summary, its traffic and
    the ``drivers``' metrics lines (what the role reports at each boundary)."""
    stats = run.traffic()
    lines = [line for i in drivers for line in run.metrics(i)]
    for line in lines:
        run.writer.append_metrics(line)
    return run.summary(
        ("status", "wall_s"),
        grpc_bytes_total=sum(int(r.get("grpc_bytes_sent", 0) or 0) for r in run.results),
        traffic=stats.to_dict(),
        outer_iters_completed=len(lines),
        final_report=lines[-1]["report"] if lines else None,
        bytes_total=stats.bytes_total,
        messages_total=stats.messages_total,
    )


def job_totals(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The job's traffic over all its parts (an interrupted part up to the checkpoint
    it was resumed from, plus the resumed part), from the parties' ``job_*`` counters."""

    def total(key: str) -> int:
        return sum(int(r.get(f"job_{key}", r.get(key, 0)) or 0) for r in results)

    walls = [float(r.get("job_wall_s", r.get("wall_s", 0.0)) or 0.0) for r in results]
    resumed = [int(r["resumed_from"]) for r in results if r.get("resumed_from") is not None]
    return {
        "bytes_total": total("bytes_sent"),
        "bytes_setup": total("setup_bytes_sent"),
        "messages_total": total("messages_sent"),
        "grpc_bytes_total": total("grpc_bytes_sent"),
        "wall_s_total": max(walls, default=0.0),
        "bytes_resume_setup": sum(int(r.get("resume_setup_bytes_sent", 0) or 0) for r in results),
        "bytes_this_run": sum(int(r.get("bytes_sent", 0) or 0) for r in results),
        "resumed_from": min(resumed) if resumed else None,
    }
