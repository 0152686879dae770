"""The DistributedNMF estimator API."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact import DistributedNMF
from cipherfact.data.synthetic import synthetic_nmf
from cipherfact.solvers import nmf


def test_fit_matches_centralized_nmf_and_keeps_h_private_per_agent():
    X = synthetic_nmf(20, 80, 3, 30.0, rng=np.random.default_rng(1)).X
    model = DistributedNMF(3, n_agents=5, scheme="plain", outer_iters=40, inner_iters=15,
                           seed=2).fit(X)
    assert model.W_.shape == (20, 3) and model.H_.shape == (3, 80)
    assert len(model.agent_H_) == 5 and sum(h.shape[1] for h in model.agent_H_) == 80
    central = nmf(X, 3, max_iter=200, tol=0.0, seed=0)
    assert model.rel_error_ <= 1.01 * central.rel_error + 1e-3
    assert model.consensus_spread_ < 0.05
    assert model.bytes_total_ > 0
    recon = np.linalg.norm(X - model.W_ @ model.H_) / np.linalg.norm(X)
    assert recon < 1.05 * model.rel_error_ + 1e-3


def test_fit_refuses_bad_input():
    with pytest.raises(ValueError, match="Negative values"):
        DistributedNMF(2, n_agents=2, scheme="plain").fit(-np.ones((4, 6)))
    with pytest.raises(ValueError, match="rank must be between"):
        DistributedNMF(9, n_agents=2, scheme="plain").fit(np.ones((4, 6)))
