"""PrivateRatingsMF: ratings in, a private protocol trains, predictions out in the
data's own ids; scikit-learn's parameter conventions; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from cipherfact import PrivateRatingsMF


def _ratings(n_users: int = 12, n_items: int = 20, seed: int = 4) -> np.ndarray:
    """(user, item, rating) with ids 500.. and 7000.., about 40% dense."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    rows = [(500 + u, 7000 + i, float(np.clip(np.round(3 + U[u] @ V[i]), 1, 5)))
            for u in range(n_users) for i in range(n_items) if rng.random() < 0.4]  # fmt: skip
    return np.array(rows)


@pytest.fixture(scope="module")
def fitted() -> tuple[PrivateRatingsMF, np.ndarray]:
    data = _ratings()
    model = PrivateRatingsMF(n_factors=2, epochs=3).fit(data[:, :2], data[:, 2])
    return model, data


def test_fit_predict_in_the_data_ids(fitted: tuple[PrivateRatingsMF, np.ndarray]) -> None:
    model, data = fitted
    pred = model.predict(data[:, :2].astype(int))
    assert pred.shape == (len(data),) and np.all(np.isfinite(pred))
    rmse = float(np.sqrt(np.mean((pred - data[:, 2]) ** 2)))
    assert rmse == pytest.approx(model.train_rmse_, rel=1e-9)  # the run's own number
    assert model.summary_["protocol"] == "csr_fhe_mf" and len(model.history_) == 3
    assert set(model.model_.user_ids.tolist()) == set(data[:, 0].astype(int).tolist())
    assert model.validation_rmse_ is None
    top = model.recommend(500, k=3)
    rated = set(data[data[:, 0] == 500][:, 1].astype(int).tolist())
    assert len(top) == 3 and not rated & {item for item, _ in top}


def test_sklearn_conventions_and_errors(fitted: tuple[PrivateRatingsMF, np.ndarray]) -> None:
    model, data = fitted
    params = model.get_params()
    assert params["n_factors"] == 2 and params["protocol"] == "csr_fhe_mf"
    fresh = clone(model).set_params(epochs=1)
    assert fresh.epochs == 1 and not hasattr(fresh, "model_")
    with pytest.raises(NotFittedError):
        fresh.predict([[500, 7000]])
    with pytest.raises(ValueError, match=r"with y, X must be \(n, 2\)"):
        fresh.fit(data, data[:, 2])
    with pytest.raises(ValueError, match="user and item ids must be integers"):
        fresh.fit(np.array([[1.5, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="protocol must be one of"):
        clone(model).set_params(protocol="nmf").fit(data)
    with pytest.raises(ValueError, match=r"unknown user id"):
        model.predict([[1, 7000]])


def test_fedmf_with_a_validation_split() -> None:
    data = _ratings(seed=5)
    model = PrivateRatingsMF(
        protocol="fedmf",
        n_factors=2,
        epochs=2,
        validation_fraction=0.2,
        overrides=["crypto.key_bits=512", "crypto.insecure_test_keys=true"],
    ).fit(data)
    assert model.summary_["protocol"] == "fedmf"
    assert model.validation_rmse_ is not None and np.isfinite(model.validation_rmse_)
    assert model.summary_["train_ratings"] < len(data)
