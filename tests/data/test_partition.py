"""Tests for column partitioning across agents."""

import numpy as np
import pytest

from cipherfact.data.partition import partition_columns


@pytest.mark.parametrize(("n_cols", "n_agents"), [(200, 10), (10, 3), (7, 7), (5, 1), (23, 4)])
def test_even_split_covers_all_columns_contiguously(n_cols: int, n_agents: int) -> None:
    blocks = partition_columns(n_cols, n_agents)
    assert len(blocks) == n_agents
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= 1
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n_cols))
    for b in blocks:
        assert b.dtype == np.int64
        assert np.all(np.diff(b) == 1)


def test_even_split_puts_extra_columns_first() -> None:
    assert [len(b) for b in partition_columns(10, 3)] == [4, 3, 3]


def test_given_sizes() -> None:
    blocks = partition_columns(10, 3, sizes=[2, 5, 3])
    assert [b.tolist() for b in blocks] == [[0, 1], [2, 3, 4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((10, 12), {}, ValueError, r"more agents \(12\) than columns \(10\)"),
        ((10, 0), {}, ValueError, "n_agents must be >= 1, got 0"),
        ((0, 1), {}, ValueError, "n_cols must be >= 1, got 0"),
        ((10, 3), {"sizes": [5, 5, 1]}, ValueError, r"sizes sum to 11 but n_cols is 10"),
        ((10, 3), {"sizes": [5, 5, 0]}, ValueError, r"sizes\[2\] must be >= 1"),
        ((10, 3), {"sizes": [6, 5, -1]}, ValueError, r"sizes\[2\] must be >= 1"),
        ((10, 3), {"sizes": [5, 5]}, ValueError, "sizes has 2 entries but n_agents is 3"),
        ((10.0, 3), {}, TypeError, "n_cols must be an int"),
        ((10, 3), {"sizes": [5, 4.0, 1]}, TypeError, r"sizes\[1\] must be an int"),
    ],
)
def test_validation(args: tuple, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        partition_columns(*args, **kwargs)
