"""Column partitioning of a data matrix across agents.

ppdnmf splits X by columns: agent i holds X[:, block_i]. Contiguous blocks
keep the mapping from agents back to the original columns trivial.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["partition_columns"]


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    return int(value)


def partition_columns(
    n_cols: int, n_agents: int, sizes: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Split column indices 0..n_cols-1 into ``n_agents`` contiguous blocks.

    Without ``sizes`` the split is even: block sizes differ by at most one, the
    first ``n_cols % n_agents`` blocks taking the extra column. With ``sizes``
    block i has ``sizes[i]`` columns. Every agent gets at least one column,
    since an agent with no data has no H_i to learn.
    """
    n_cols = _as_int("n_cols", n_cols)
    n_agents = _as_int("n_agents", n_agents)
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}")
    if n_cols < 1:
        raise ValueError(f"n_cols must be >= 1, got {n_cols}")
    if n_agents > n_cols:
        raise ValueError(f"more agents ({n_agents}) than columns ({n_cols})")

    if sizes is None:
        base, extra = divmod(n_cols, n_agents)
        block_sizes = [base + 1 if i < extra else base for i in range(n_agents)]
    else:
        block_sizes = [_as_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        if len(block_sizes) != n_agents:
            raise ValueError(f"sizes has {len(block_sizes)} entries but n_agents is {n_agents}")
        for i, s in enumerate(block_sizes):
            if s < 1:
                raise ValueError(f"sizes[{i}] must be >= 1 (every agent needs a column), got {s}")
        if sum(block_sizes) != n_cols:
            raise ValueError(
                f"sizes sum to {sum(block_sizes)} but n_cols is {n_cols}: {block_sizes}"
            )

    bounds = np.cumsum([0, *block_sizes])
    return [np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(n_agents)]
