"""The ml-latest-small-shaped generator: exact counts, tails, grid, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cipherfact.data.synthetic_ratings import ML_LATEST_SMALL, movielens_like_ratings


@pytest.fixture(scope="module")
def ml() -> object:
    return movielens_like_ratings(np.random.default_rng(0))


def test_shape_of_ml_latest_small(ml) -> None:
    assert (ml.n_users, ml.n_items, ml.n_ratings) == (610, 9724, 100836)
    assert abs(ml.density - 0.017) < 1e-4
    per_user = np.bincount(ml.users, minlength=ml.n_users)
    assert per_user.min() == ML_LATEST_SMALL["min_per_user"]
    assert per_user.max() <= ML_LATEST_SMALL["max_per_user"]
    assert 50 <= np.median(per_user) <= 120  # ml-latest-small: about 70
    # power-law items: the most popular 5% of items hold far more than 5% of ratings
    per_item = np.sort(np.bincount(ml.items, minlength=ml.n_items))[::-1]
    assert per_item[: ml.n_items // 20].sum() > 0.3 * ml.n_ratings
    keys = ml.users * ml.n_items + ml.items
    assert np.unique(keys).size == keys.size  # distinct (user, item) pairs
    assert set(np.unique(ml.values)) <= set(np.arange(1, 11) * 0.5)


def test_deterministic_in_the_generator_and_cheap() -> None:
    a = movielens_like_ratings(np.random.default_rng(3), n_users=50, n_items=400, n_ratings=2000)
    b = movielens_like_ratings(np.random.default_rng(3), n_users=50, n_items=400, n_ratings=2000)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.values, b.values)
    tracemalloc.start()
    movielens_like_ratings(np.random.default_rng(1), n_users=200, n_items=20000, n_ratings=10000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6  # O(ratings + items), never users x items (4M cells here)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_ratings=10), r"n_ratings=10 must lie in"),
        (dict(min_per_user=0), "min_per_user must be a positive int"),
        (dict(n_items=10), r"min_per_user=20 exceeds"),
        (dict(step=0.0), r"step must be in"),
        (dict(noise=-1.0), "noise must be"),
    ],
)
def test_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        movielens_like_ratings(np.random.default_rng(0), **kwargs)
