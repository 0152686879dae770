"""csr_fhe_mf and FedMF on Ray: checkpoint/resume reproduces the uninterrupted run
(FedMF bit for bit, csr_fhe_mf to CKKS noise), and network emulation reports the
same simulated time as in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from cipherfact.protocols.ratings.model import RatingsModel  # noqa: E402
from cipherfact.simulations.network import NetworkModel  # noqa: E402
from cipherfact.simulations.ray_local import start_local_ray  # noqa: E402
from tests.simulations.test_recsys_resume import (  # noqa: E402
    CKKS_RMSE_TOL,
    CSR,
    FEDMF,
    _run,
    interrupt_and_resume,
)

pytestmark = pytest.mark.ray

RAY = {"backend": "ray", "ray_actors": 2, "ray_cpus_per_actor": 0.5}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_fedmf_ray_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _run("fedmf-synthetic", FEDMF, tmp_path / "full")  # in memory: the same numbers
    resumed = interrupt_and_resume("fedmf-synthetic", FEDMF, tmp_path / "cut", monkeypatch, **RAY)
    assert resumed["backend"] == "ray" and resumed["ray"]["cross_actor_messages"] > 0
    a, b = RatingsModel.load(tmp_path / "full"), RatingsModel.load(tmp_path / "cut")
    assert np.array_equal(a.U, b.U) and np.array_equal(a.V, b.V)
    assert resumed["test_rmse"] == full["test_rmse"]


def test_csr_ray_resume_matches_to_ckks_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = _run("csr-fhe-mf-synthetic", CSR, tmp_path / "full")
    resumed = interrupt_and_resume(
        "csr-fhe-mf-synthetic", CSR, tmp_path / "cut", monkeypatch, **RAY
    )
    assert resumed["backend"] == "ray"
    for key in ("train_rmse", "test_rmse"):
        assert resumed[key] == pytest.approx(full[key], abs=CKKS_RMSE_TOL), key


@pytest.mark.parametrize(
    ("name", "overrides"), [("fedmf-synthetic", FEDMF), ("csr-fhe-mf-synthetic", CSR)]
)
def test_ray_network_emulation_equals_inmemory(
    tmp_path: Path, name: str, overrides: list[str]
) -> None:
    net = NetworkModel(latency_ms=30.0, seed=2)  # latency only: sizes do not matter
    mem = _run(name, overrides, tmp_path / "mem", network=net)
    on_ray = _run(name, overrides, tmp_path / "ray", network=net, **RAY)
    assert on_ray["backend"] == "ray" and on_ray["network"] == mem["network"]
    assert on_ray["simulated_network_s"] == pytest.approx(mem["simulated_network_s"])
    lines = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    exchanges = 2 * on_ray["n_users"] if name == "fedmf-synthetic" else 2
    assert [m["simulated_network_s"] for m in lines] == pytest.approx([exchanges * 0.03] * 3)
    assert on_ray["estimated_total_s"] > on_ray["simulated_network_s"]
