"""Tests for the bundled digits matrix."""

import numpy as np

from cipherfact.data.digits import load_digits_matrix


def test_shape_range_and_orientation() -> None:
    from sklearn.datasets import load_digits

    X = load_digits_matrix()
    assert X.shape == (64, 1797)
    assert X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    # columns are images: column 0 is the first image's pixels scaled by 1/16
    np.testing.assert_allclose(X[:, 0], load_digits().data[0] / 16.0)


def test_returns_independent_copies() -> None:
    a = load_digits_matrix()
    a[:] = -1.0
    b = load_digits_matrix()
    assert b.min() == 0.0
    assert b.flags.writeable
