"""Data sources for the protocols: generators, loaders and partitioning.

Re-exported here so callers can write ``from cipherfact.data import ...``;
each submodule has one job (see their docstrings).
"""

from cipherfact.data.digits import load_digits_matrix
from cipherfact.data.matrix_io import load_matrix
from cipherfact.data.partition import partition_columns
from cipherfact.data.ratings import (
    Ratings,
    RatingsSplit,
    load_ratings,
    load_train_test,
    split_last_k,
    split_random,
    synthetic_ratings,
)
from cipherfact.data.synthetic import SyntheticNMF, measure_snr_db, synthetic_nmf

__all__ = [
    "Ratings",
    "RatingsSplit",
    "SyntheticNMF",
    "load_digits_matrix",
    "load_matrix",
    "load_ratings",
    "load_train_test",
    "measure_snr_db",
    "partition_columns",
    "split_last_k",
    "split_random",
    "synthetic_nmf",
    "synthetic_ratings",
]
