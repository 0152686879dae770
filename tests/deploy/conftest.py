"""Shared fixtures for the deployment tests: job certificates, loopback transports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cipherfact.deploy.local import free_ports
from cipherfact.deploy.tls import TlsFiles, write_job_certs
from cipherfact.deploy.transport import GrpcTransport, RetryPolicy

JOB = "job-t"
STAGES = frozenset({"key", "offer", "reply", "abort"})
FAST_RETRY = RetryPolicy(rpc_s=2.0, startup_s=1.0, retries=2, backoff_s=0.05, backoff_max_s=0.1)

# The brief's small job: 4 agents, 512-bit test keys, a few seconds of protocol.
SMALL = [
    "outer_iters=2",
    "inner_iters=3",
    "data.rows=12",
    "data.cols=40",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> list[TlsFiles]:
    return write_job_certs(tmp_path_factory.mktemp("certs"), 3)


@pytest.fixture(scope="session")
def other_ca_certs(tmp_path_factory: pytest.TempPathFactory) -> list[TlsFiles]:
    return write_job_certs(tmp_path_factory.mktemp("other-ca"), 3)


TransportFactory = Callable[..., GrpcTransport]


@pytest.fixture
def make_transport(certs: list[TlsFiles]) -> Iterator[TransportFactory]:
    """Start transports for agents of a 3-agent triangle on free loopback ports."""
    ports = dict(enumerate(free_ports(3)))
    made: list[GrpcTransport] = []

    def make(agent_id: int, *, tls: bool = True, **kwargs: object) -> GrpcTransport:
        peers = {j: f"127.0.0.1:{p}" for j, p in ports.items() if j != agent_id}
        t = GrpcTransport(
            agent_id,
            JOB,
            f"127.0.0.1:{ports[agent_id]}",
            peers,
            certs[agent_id] if tls else None,
            stages=STAGES,
            max_round=10,
            retry=kwargs.pop("retry", FAST_RETRY),  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )
        t.start()
        made.append(t)
        return t

    make.ports = ports  # type: ignore[attr-defined]
    yield make
    for t in made:
        t.close(grace=0)


def same_factors(path: Path, Ws: list[np.ndarray], Hs: list[np.ndarray]) -> list[int]:
    """Agents whose W_i or H_i in ``factors.npz`` differ from the reference (bit for bit)."""
    with np.load(path, allow_pickle=False) as f:
        return [
            i
            for i in range(len(Ws))
            if not (np.array_equal(f[f"W_{i}"], Ws[i]) and np.array_equal(f[f"H_{i}"], Hs[i]))
        ]
