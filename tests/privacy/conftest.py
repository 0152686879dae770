"""Recorded transcripts of real ppdnmf runs, for attacks written from one party's view.

Each fixture runs a small job over the in-memory transport with every envelope
recorded. An attack may use only what its party holds: its own scheme (secret
key), its own W_i at the round, the envelopes addressed to it, and public
parameters. The ground truth (private weights, neighbours' W_j) is recorded
separately and used only to score an attack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.protocols.ppdnmf.job import (
    PPDNMFJob,
    build_roles,
    generate_keys,
    prepare_job,
)
from cipherfact.simulations.engine import InMemoryEngine
from cipherfact.simulations.scenario import load_scenario

SMALL_RUN = [
    "n_agents=5",
    "rank=3",
    "data.rows=10",
    "data.cols=40",
    "outer_iters=3",
    "inner_iters=8",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
    "topology.min_degree=2",
]


@dataclass
class Transcript:
    """One run: the job, each agent's scheme, every envelope, and W per (agent, round)."""

    job: PPDNMFJob
    schemes: dict[int, Any]
    envelopes: list[Envelope]
    roles: dict[int, Any] = field(default_factory=dict)  # each party's own state, after the run
    W_at: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # ground truth

    def received(self, agent: int, stage: str) -> list[Envelope]:
        return [e for e in self.envelopes if e.receiver == agent and e.stage == stage]


def record_run(job: PPDNMFJob) -> Transcript:
    """Run ``job`` in memory, recording envelopes and every agent's W before each round."""
    schemes = generate_keys(job)
    roles = build_roles(job, schemes)
    transcript = Transcript(job, schemes, [], roles)

    def observe(env: Envelope) -> None:
        transcript.envelopes.append(env)
        sender = roles[env.sender]
        if env.round >= 0 and (env.sender, env.round) not in transcript.W_at:
            # a message of round r leaves its sender while it holds W^r (shares,
            # offers); a reply may leave one round later, when W^r is W_prev
            W = sender.W if sender.round == env.round else sender._W_prev
            transcript.W_at[(env.sender, env.round)] = W.copy()

    engine = InMemoryEngine(roles, observer=observe)
    engine.start()
    for _ in range(job.config.outer_iters):
        engine.run_outer()
    return transcript


def make_job(*overrides: str) -> PPDNMFJob:
    return prepare_job(load_scenario("ppdnmf-synthetic", [*SMALL_RUN, *overrides]))


@pytest.fixture(scope="session")
def pairwise_transcript() -> Transcript:
    return record_run(make_job("exchange=pairwise"))


@pytest.fixture(scope="session")
def pairwise_broken_transcript() -> Transcript:
    """The paper's construction (no reply noise): the variant the gcd attack breaks."""
    job = make_job("exchange=pairwise")
    job.config = dataclasses.replace(job.config, reply_noise_bits=0)
    return record_run(job)


@pytest.fixture(scope="session")
def secagg_transcript() -> Transcript:
    return record_run(make_job("exchange=secagg"))


@pytest.fixture(scope="session")
def secagg_clear_transcript() -> Transcript:
    return record_run(make_job("exchange=secagg", "crypto.scheme=none"))
