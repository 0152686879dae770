"""A toy protocol, start to finish: what a new protocol writes (see docs/adding-a-protocol.md).

Agents 1..n-1 each hold a private vector; every outer iteration agent 0
asks for it ("go") and they send it (scaled by the iteration number) to agent
0, which adds them up. No crypto: the point is the seam. Everything below is
protocol code; progress, metrics, ``summary.json``, network emulation,
checkpoints, failure handling, the backends and gRPC deployment come from
``cipherfact.simulations.runner``, the grids and ``cipherfact.deploy``.
Register it with one line::

    PROTOCOLS["toy_sum"] = ProtocolEntry(
        scenario="toy_sum:ToySumScenario",
        simulate="toy_sum:simulate_toy_sum",
        node="toy_sum:ToySumNode",
    )
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.deploy.node_base import BaseNode
from cipherfact.protocols.base import ProtocolError, StateMachine
from cipherfact.simulations.grid import Grid, LocalGrid, LocalRoles, single_host
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.runner import RunApp, run

STAGE, STAGE_GO = "value", "go"


# --- 1. the scenario: the protocol's public parameters --------------------------------


@dataclass(frozen=True)
class ToySumScenario:
    protocol: str = "toy_sum"
    name: str = "toy-sum"
    seed: int = 0
    n_agents: int = 4
    size: int = 3
    outer_iters: int = 5


# --- 2. the roles: pure state machines over envelopes ---------------------------------


class Holder(StateMachine):
    """Agent i >= 1: answers agent 0's "go" of outer iteration t with (t + 1) * value."""

    def __init__(self, agent_id: AgentId, value: np.ndarray, rounds: int) -> None:
        self.agent_id, self.value, self.rounds, self.round = agent_id, value, rounds, -1

    def start(self) -> list[Envelope]:
        return []

    def step(self, env: Envelope) -> list[Envelope]:
        if env.stage != STAGE_GO or env.sender != 0 or env.round != self.round + 1:
            raise ProtocolError(f"agent {self.agent_id}: unexpected {env.describe()}")
        self.round = env.round
        payload = ((self.round + 1) * self.value).astype("<i8").tobytes()
        return [Envelope("toy", self.round, STAGE, self.agent_id, 0, payload)]

    @property
    def done(self) -> bool:
        return self.round + 1 >= self.rounds


class Summer(StateMachine):
    """Agent 0: adds up one vector from every holder per outer iteration."""

    def __init__(self, n_agents: int, size: int, rounds: int) -> None:
        self.n, self.size, self.rounds = n_agents, size, rounds
        self.round = 0
        self.sums: list[np.ndarray] = []
        self._got: dict[AgentId, np.ndarray] = {}
        self._asked = False

    def start(self) -> list[Envelope]:
        return []

    def step(self, env: Envelope) -> list[Envelope]:
        if env.stage != STAGE or env.round != self.round or env.sender in self._got:
            raise ProtocolError(f"agent 0: unexpected {env.describe()}")
        self._got[env.sender] = np.frombuffer(env.payload, dtype="<i8")
        if len(self._got) == self.n - 1:
            self.sums.append(np.sum([self._got[i] for i in sorted(self._got)], axis=0))
            self._got, self.round, self._asked = {}, self.round + 1, False
        return []

    @property
    def done(self) -> bool:
        return len(self.sums) >= self.rounds

    @property
    def at_boundary(self) -> bool:
        return not self._got and not self._asked

    def begin_outer(self) -> list[Envelope]:
        self._asked = True  # until every holder has answered
        return [Envelope("toy", self.round, STAGE_GO, 0, i, b"") for i in range(1, self.n)]

    def save(self) -> bytes:  # checkpoint: numbers only
        buf = io.BytesIO()
        np.savez(
            buf, round=self.round, sums=np.array(self.sums, dtype="<i8").reshape(-1, self.size)
        )
        return buf.getvalue()

    def load(self, data: bytes) -> None:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            self.round, self.sums = int(f["round"]), list(f["sums"])


# --- 3. the factory: builds the roles placed on one host ------------------------------


@dataclass(frozen=True)
class ToySumRoles:
    scenario: ToySumScenario

    def __call__(self, agents: list[AgentId]) -> LocalRoles:
        sc = self.scenario
        values = np.random.default_rng(sc.seed).integers(0, 100, (sc.n_agents, sc.size))
        roles: dict[AgentId, Any] = {
            i: Summer(sc.n_agents, sc.size, sc.outer_iters)
            if i == 0
            else Holder(i, values[i], sc.outer_iters)
            for i in agents
        }
        # roles must be restorable before start: a holder's round comes from the summer's
        return LocalRoles(
            roles,
            report=lambda r: r.sums[-1] if isinstance(r, Summer) and r.sums else None,
            save_state=lambda r: r.save() if isinstance(r, Summer) else np.int64(r.round).tobytes(),
            load_state=lambda r, b: (
                r.load(b)
                if isinstance(r, Summer)
                else setattr(r, "round", int(np.frombuffer(b, dtype=np.int64)[0]))
            ),
        )


# --- 4. the app: what the runner asks of the protocol ---------------------------------


class ToySumApp(RunApp):
    unit = "outer"
    count_key = "outer_iters_completed"

    def __init__(self, scenario: ToySumScenario) -> None:
        if scenario.n_agents < 2:
            raise ValueError(f"n_agents must be >= 2, got {scenario.n_agents}")
        self.scenario = scenario
        self.last: np.ndarray | None = None

    @property
    def total(self) -> int:
        return self.scenario.outer_iters

    def describe(self) -> str:
        return "toy_sum"

    def header(self, backend: str) -> dict[str, Any]:
        return {"protocol": "toy_sum", "scenario": asdict(self.scenario), "backend": backend}

    def checkpoint_meta(self) -> dict[str, Any]:
        sc = self.scenario  # job_id and n_agents name the checkpoint; the rest must match
        return {"job_id": "toy", "n_agents": sc.n_agents, "scenario": asdict(sc)}

    def build_grid(self, options: Any) -> Grid:
        grid = LocalGrid(single_host(range(self.scenario.n_agents)), options.network)
        grid.add_host(0, ToySumRoles(self.scenario))
        return grid

    def record(self, t: int, reports: dict[int, Any], grid: Grid, wall_s: float,
               before: tuple[int, int]) -> dict[str, Any]:  # fmt: skip
        self.last = reports[0]
        return {"outer": t, "sum": reports[0].tolist(), "wall_s": wall_s,
                "bytes": grid.stats.bytes_total - before[0]}  # fmt: skip

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {"sum": str(record["sum"])}

    def save_model(self, writer: RunWriter) -> dict[str, Any]:
        if self.last is not None:
            np.save(writer.out_dir / "sum.npy", self.last)
        return {}

    def finish(self, records: list[dict[str, Any]], grid: Grid, writer: RunWriter,
               run: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        return {"final_sum": records[-1]["sum"], "bytes_total": grid.stats.bytes_total}


# --- 5. the runner function: the registry's ``simulate`` ------------------------------


def simulate_toy_sum(scenario: ToySumScenario, out_dir: Path, options: Any) -> dict[str, Any]:
    return run(ToySumApp(scenario), "toy_sum", Path(out_dir), options)


# --- 6. deployment over gRPC: who talks to whom, and who begins each iteration --------


class ToySumNode(BaseNode):
    """One toy_sum agent as a process (``cipherfact agent serve``); agent 0 drives."""

    stages = frozenset({STAGE, STAGE_GO})
    drivers = frozenset({0})

    @classmethod
    def factory(cls, scenario: ToySumScenario) -> ToySumRoles:
        return ToySumRoles(scenario)

    @classmethod
    def neighbours(cls, scenario: ToySumScenario, agent_id: AgentId) -> list[AgentId]:
        return list(range(1, scenario.n_agents)) if agent_id == 0 else [0]

    @classmethod
    def last_round(cls, scenario: ToySumScenario) -> int:
        return scenario.outer_iters - 1

    @classmethod
    def job_id_of(cls, scenario: ToySumScenario) -> str:
        return "toy"
