"""scikit-learn's bundled digits as a nonnegative real-data matrix.

It ships with scikit-learn, so the real-data scenario needs no download.
Columns are images, so splitting columns over agents gives each agent its own
images (the column-partitioned setting of ppdnmf).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["load_digits_matrix"]

_MAX_PIXEL = 16.0  # the bundled 8x8 digits are 4-bit grey levels 0..16


@lru_cache(maxsize=1)
def _digits_readonly() -> np.ndarray:
    from sklearn.datasets import load_digits

    data = np.asarray(load_digits().data, dtype=np.float64)  # images x pixels
    matrix = np.ascontiguousarray(data.T / _MAX_PIXEL)
    matrix.setflags(write=False)
    return matrix


def load_digits_matrix() -> np.ndarray:
    """Return the digits as a 64 x 1797 float64 matrix in [0, 1] (pixels x images).

    A fresh writable copy each call, so callers cannot corrupt the cache.
    """
    return _digits_readonly().copy()
