"""The paper's real-data size (ppdnmf-cbcl-size) runs, reduced, with masks only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cipherfact.protocols.ppdnmf.job import prepare_job
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.scenario import load_scenario

REDUCED = ["crypto.scheme=none", "outer_iters=2", "inner_iters=3"]


def test_cbcl_size_shapes_and_a_reduced_run(tmp_path: Path) -> None:
    job = prepare_job(load_scenario("ppdnmf-cbcl-size", REDUCED))
    assert job.X.shape == (361, 2429) and job.config.rank == 49
    assert job.config.rank * job.X.shape[0] == 17_689  # values of W per message
    assert min(job.graph.degree(i) for i in range(job.n_agents)) >= 2
    summary = sim.simulate(
        load_scenario("ppdnmf-cbcl-size", REDUCED), tmp_path, options=sim.SimOptions(progress=False)
    )
    assert summary["status"] == "completed"
    assert summary["outer_iters_completed"] == 2
    # two outer iterations already move far below the starting point's error
    assert 0 < summary["rel_error"] < 0.5
    with np.load(tmp_path / "factors.npz") as f:
        assert f["W_0"].shape == (361, 49)
