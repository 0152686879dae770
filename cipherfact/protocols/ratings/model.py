"""``RatingsModel``: what a recommendation run leaves behind, usable on its own.

A csr_fhe_mf or FedMF run writes ``model.npz`` into its results folder: the
learned user factors U and item factors V, the original user and item ids of
each row (so predictions are asked for and answered in the data's own ids),
the rating offset the protocol subtracted before training (a prediction is
``offset + U[u] . V[i]``), and which items each user rated in training (so
``recommend`` can leave them out). Numbers and id arrays only: loaded with
``allow_pickle=False``.

In a deployment no single party holds this: csr_fhe_mf's U and V stay masked
between RS and the CSP. The simulation harness, which sees every party,
unmasks them for the results folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cipherfact.data.ratings import Ratings

MODEL_FILE = "model.npz"
_FORMAT = 1


class ModelError(ValueError):
    """A model file that cannot be read, or an id the model does not know."""


@dataclass(frozen=True)
class RatingsModel:
    """User factors ``U`` (n_users x F), item factors ``V`` (n_items x F), the ids of
    their rows, the rating offset, and the training pattern (CSR, users x items)."""

    U: np.ndarray
    V: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    offset: float
    rated: sp.csr_matrix

    @classmethod
    def from_training(
        cls, factors: tuple[np.ndarray, np.ndarray], train: Ratings, offset: float
    ) -> RatingsModel:
        U, V = (np.asarray(a, dtype=np.float64) for a in factors)
        rated = sp.csr_matrix(
            (np.ones(train.n_ratings, dtype=np.int8), (train.users, train.items)),
            shape=(train.n_users, train.n_items),
        )
        return cls(U, V, train.user_ids, train.item_ids, float(offset), rated)

    # -- files -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``model.npz`` (a folder gets ``<folder>/model.npz``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        np.savez(
            path,
            format=np.int64(_FORMAT),
            U=self.U,
            V=self.V,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            offset=np.float64(self.offset),
            rated_indptr=self.rated.indptr,
            rated_indices=self.rated.indices,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> RatingsModel:
        """Read a ``model.npz``, or the one in a results folder."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise ModelError(
                f"no model at {path}: a csr_fhe_mf or fedmf run writes model.npz into its --out "
                "folder (ppdnmf runs write factors.npz)"
            )
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["format"]) != _FORMAT:
                    raise ModelError(f"{path}: model format {int(f['format'])}, expected {_FORMAT}")
                U, V = f["U"], f["V"]
                user_ids, item_ids = f["user_ids"], f["item_ids"]
                rated = sp.csr_matrix(
                    (
                        np.ones(len(f["rated_indices"]), dtype=np.int8),
                        f["rated_indices"],
                        f["rated_indptr"],
                    ),
                    shape=(len(user_ids), len(item_ids)),
                )
                offset = float(f["offset"])
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"{path} is not a cipherfact model file: {exc}") from exc
        if U.shape != (len(user_ids), V.shape[1]) or V.shape[0] != len(item_ids):
            raise ModelError(f"{path}: factor shapes {U.shape}, {V.shape} do not match the ids")
        return cls(U, V, user_ids, item_ids, offset, rated)

    # -- use -----------------------------------------------------------------------------

    @staticmethod
    def _index(ids: np.ndarray, wanted: Any, what: str) -> np.ndarray:
        """Rows of ``wanted`` (ids as in the data; numbers or strings) in ``ids``."""
        wanted = np.atleast_1d(np.asarray(wanted))
        if ids.dtype.kind in "iu" and wanted.dtype.kind in "USO":
            try:
                wanted = wanted.astype(ids.dtype)
            except ValueError as exc:
                raise ModelError(f"{what} ids are integers here, got {wanted.tolist()}") from exc
        order = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids, wanted, sorter=order)
        pos = np.clip(pos, 0, len(ids) - 1)
        rows = order[pos]
        missing = ids[rows] != wanted
        if np.any(missing):
            unknown = wanted[missing][:5].tolist()
            raise ModelError(
                f"unknown {what} id(s) {unknown}: the model knows {len(ids)} {what}s "
                f"({ids[:3].tolist()}...), those with a training rating"
            )
        return np.asarray(rows)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for pairs (user id, item id), in the data's ids."""
        u = self._index(self.user_ids, users, "user")
        i = self._index(self.item_ids, items, "item")
        if len(u) != len(i) and 1 not in (len(u), len(i)):
            raise ModelError(f"{len(u)} users and {len(i)} items: give one of each per pair")
        n = max(len(u), len(i))
        u, i = np.broadcast_to(u, n), np.broadcast_to(i, n)
        return self.offset + np.einsum("sf,sf->s", self.U[u], self.V[i])

    def recommend(
        self, user: Any, k: int = 10, *, exclude_rated: bool = True
    ) -> list[tuple[Any, float]]:
        """The ``k`` items with the highest predicted rating for ``user`` (item id,
        score), leaving out the items the user rated in training by default."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ModelError(f"k must be a positive integer, got {k!r}")
        (u,) = self._index(self.user_ids, user, "user")
        scores = self.offset + self.V @ self.U[u]
        if exclude_rated:
            start, end = self.rated.indptr[u], self.rated.indptr[u + 1]
            scores[self.rated.indices[start:end]] = -np.inf
        k = min(int(k), int(np.isfinite(scores).sum()))
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.item_ids[j].item(), float(scores[j])) for j in top]
