"""Tests for the paper's synthetic NMF generator."""

import math

import numpy as np
import pytest

from cipherfact.data.synthetic import SyntheticNMF, measure_snr_db, synthetic_nmf


@pytest.mark.parametrize(("rows", "cols", "rank"), [(30, 200, 5), (4, 7, 1), (1, 1, 3)])
def test_shapes_and_nonnegativity(rows: int, cols: int, rank: int) -> None:
    data = synthetic_nmf(rows, cols, rank, rng=np.random.default_rng(0))
    assert data.X.shape == (rows, cols)
    assert data.W_true.shape == (rows, rank)
    assert data.H_true.shape == (rank, cols)
    assert data.X.dtype == np.float64
    assert np.all(data.X >= 0) and np.all(data.W_true >= 0) and np.all(data.H_true >= 0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 40.0])
def test_snr_before_clipping_is_requested_value(snr_db: float) -> None:
    # Recreate the unclipped X from the same stream to measure the pre-clipping SNR.
    data = synthetic_nmf(30, 200, 5, snr_db, rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    W = rng.exponential(1.0, size=(30, 5))
    H = rng.exponential(1.0, size=(5, 200))
    clean = W @ H
    noise = rng.standard_normal(size=clean.shape)
    noise *= np.linalg.norm(clean) / np.linalg.norm(noise) * 10 ** (-snr_db / 20)
    np.testing.assert_array_equal(W, data.W_true)
    measured = measure_snr_db(clean, clean + noise)
    assert abs(measured - snr_db) < 0.5
    np.testing.assert_allclose(measured, snr_db, atol=1e-9)  # exact by construction
    np.testing.assert_array_equal(data.X, np.maximum(clean + noise, 0.0))
    # clipping removes noise only, so the realised SNR can only go up
    assert data.snr_db_clipped is not None
    assert data.snr_db_clipped >= snr_db - 1e-9
    assert data.snr_db_clipped == pytest.approx(measure_snr_db(clean, data.X))


def test_paper_setup_clipping_changes_snr_little() -> None:
    data = synthetic_nmf(rng=np.random.default_rng(3))
    assert data.snr_db == 20.0
    assert data.snr_db_clipped is not None
    assert 20.0 <= data.snr_db_clipped < 20.5


def test_noiseless() -> None:
    data = synthetic_nmf(5, 6, 2, None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(data.X, data.W_true @ data.H_true)
    assert data.snr_db is None and data.snr_db_clipped is None
    assert measure_snr_db(data.X, data.X) == math.inf


def test_deterministic_for_seed_and_differs_across_seeds() -> None:
    a = synthetic_nmf(rng=np.random.default_rng(11))
    b = synthetic_nmf(rng=np.random.default_rng(11))
    c = synthetic_nmf(rng=np.random.default_rng(12))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.H_true, b.H_true)
    assert not np.array_equal(a.X, c.X)


def test_frozen() -> None:
    data = synthetic_nmf(2, 2, 1, rng=np.random.default_rng(0))
    assert isinstance(data, SyntheticNMF)
    with pytest.raises(AttributeError):
        data.X = np.zeros((2, 2))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rows": 0}, ValueError, "rows must be >= 1, got 0"),
        ({"cols": -3}, ValueError, "cols must be >= 1, got -3"),
        ({"rank": 2.5}, TypeError, "rank must be an int"),
        ({"rows": True}, TypeError, "rows must be an int"),
        ({"snr_db": float("nan")}, ValueError, "snr_db must be finite"),
        ({"snr_db": "20"}, TypeError, "snr_db must be a number"),
    ],
)
def test_validation(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        synthetic_nmf(**kwargs, rng=np.random.default_rng(0))


def test_rng_must_be_generator() -> None:
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        synthetic_nmf(rng=np.random.RandomState(0))  # type: ignore[arg-type]
