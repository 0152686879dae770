"""``PrivateRatingsMF``: matrix factorization for recommendation as a scikit-learn regressor.

``fit(X, y)`` takes ratings as rows ``X = [[user_id, item_id], ...]`` and
``y = ratings`` (or an ``(n, 3)`` array / a pandas frame with user, item and
rating columns and ``y=None``) and trains them with a private protocol:
csr_fhe_mf (CKKS; users, a recommender server and a crypto service provider)
or FedMF (Paillier). ``predict`` answers in the same ids; ``recommend`` gives a
user's top items. Under the hood this is ``cipherfact simulate`` on the
protocol's bundled defaults with the ratings as the data file: the same run,
the same results folder (``output_dir``; a temporary one by default), the same
``model.npz`` (``RatingsModel``).

Who learns the model: the simulation sees every party, so the fitted factors
are the harness's; in a deployment neither RS nor the CSP holds them alone
(see docs/privacy-recsys.md).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from cipherfact.protocols.ratings.model import RatingsModel

_PROTOCOLS = ("csr_fhe_mf", "fedmf")


class PrivateRatingsMF(RegressorMixin, BaseEstimator):
    """Rating prediction trained by a privacy-preserving protocol.

    Parameters
    ----------
    protocol : {"csr_fhe_mf", "fedmf"}, default="csr_fhe_mf"
        csr_fhe_mf: CKKS over CSR ratings (RS and CSP, non-colluding); fedmf:
        the FedMF baseline (Paillier, users share a key).
    n_factors : int, default=4
        Rank of the user and item factors.
    epochs : int, default=20
        Training epochs.
    lr, reg : float or None, default=None
        Learning rate and L2 regularization; None: the protocol's bundled value.
    validation_fraction : float or None, default=None
        None: train on every rating. Otherwise hold out this fraction at random
        and report its RMSE (``validation_rmse_``).
    overrides : list of str, default=()
        Any other scenario field as ``"field=value"`` (as ``--set`` takes them,
        e.g. ``"crypto.hide_pattern=true"``; see docs/scenario-reference.md).
    output_dir : str or None, default=None
        The results folder to keep (summary.json, metrics.jsonl, plots,
        model.npz); None: a temporary folder, removed after ``fit``.
    verbose : int, default=0
        0: silent; 1: the run's progress bar on stderr.
    random_state : int, default=0
        The scenario seed (factor initialization, split, public draws; keys and
        masks come from the OS whatever it is).

    Attributes
    ----------
    model_ : RatingsModel
        The learned factors with the data's ids (``U``, ``V``, ``offset``).
    summary_ : dict
        The run's ``summary.json``.
    history_ : list of dict
        One ``metrics.jsonl`` line per epoch (train RMSE, the plaintext twin's,
        bytes, seconds).
    train_rmse_ : float
        RMSE on the training ratings after the last epoch.
    validation_rmse_ : float or None
        RMSE on the held-out ratings (None without ``validation_fraction``).
    """

    def __init__(
        self,
        protocol: str = "csr_fhe_mf",
        n_factors: int = 4,
        epochs: int = 20,
        lr: float | None = None,
        reg: float | None = None,
        validation_fraction: float | None = None,
        overrides: tuple[str, ...] | list[str] = (),
        output_dir: str | None = None,
        verbose: int = 0,
        random_state: int = 0,
    ) -> None:
        self.protocol = protocol
        self.n_factors = n_factors
        self.epochs = epochs
        self.lr = lr
        self.reg = reg
        self.validation_fraction = validation_fraction
        self.overrides = overrides
        self.output_dir = output_dir
        self.verbose = verbose
        self.random_state = random_state

    # -- input -----------------------------------------------------------------------------

    @staticmethod
    def _triples(X: Any, y: Any) -> np.ndarray:
        """(n, 3) float array of (user, item, rating) from the accepted input shapes."""
        if hasattr(X, "columns") and y is None:  # a pandas frame of user, item, rating
            X = X.to_numpy()
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D (rows of user, item[, rating]), got shape {arr.shape}")
        if y is not None:
            yv = np.asarray(y, dtype=np.float64).ravel()
            if arr.shape[1] != 2 or len(yv) != len(arr):
                raise ValueError(
                    f"with y, X must be (n, 2) user and item ids for n = len(y) = {len(yv)} "
                    f"ratings, got X of shape {arr.shape}"
                )
            arr = np.column_stack([arr, yv])
        elif arr.shape[1] != 3:
            raise ValueError(f"without y, X must be (n, 3): user, item, rating; got {arr.shape}")
        if len(arr) == 0 or not np.isfinite(arr).all():
            raise ValueError("the ratings must be a non-empty array of finite numbers")
        if not np.array_equal(arr[:, :2], np.round(arr[:, :2])):
            raise ValueError("user and item ids must be integers")
        return arr

    # -- fit / predict -----------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> PrivateRatingsMF:
        """Train on the ratings (see the class doc for the accepted shapes)."""
        from cipherfact.api import simulate

        if self.protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {self.protocol!r}")
        ratings = self._triples(X, y)
        overrides = [
            f"seed={int(self.random_state)}",
            f"n_factors={int(self.n_factors)}",
            f"epochs={int(self.epochs)}",
            *([f"lr={float(self.lr)}"] if self.lr is not None else []),
            *([f"reg={float(self.reg)}"] if self.reg is not None else []),
            *list(self.overrides),
        ]
        with tempfile.TemporaryDirectory(prefix="cipherfact-ratings-") as tmp:
            data = Path(tmp) / "ratings.csv"
            lines = [f"{int(u)},{int(i)},{r:.17g}" for u, i, r in ratings]
            data.write_text("user,item,rating\n" + "\n".join(lines) + "\n", encoding="utf-8")
            if self.validation_fraction is None:  # every rating trains; "test" = train
                overrides += [f"data.train={data}", f"data.test={data}"]
            else:
                overrides += [
                    f"data.path={data}",
                    f"data.test_fraction={float(self.validation_fraction)}",
                ]
            out = Path(self.output_dir) if self.output_dir else Path(tmp) / "run"
            summary = simulate(
                self.protocol.replace("_", "-"),
                out,
                overrides=overrides,
                progress=bool(self.verbose),
            )
            self.model_ = RatingsModel.load(out)
            self.history_ = [
                json.loads(line)
                for line in (out / "metrics.jsonl").read_text().splitlines()
                if line.strip()
            ]
        self.summary_ = summary
        self.train_rmse_ = float(summary["train_rmse"])
        self.validation_rmse_ = (
            None if self.validation_fraction is None else float(summary["test_rmse"])
        )
        self.n_features_in_ = 2
        return self

    def _check_fitted(self) -> RatingsModel:
        model = getattr(self, "model_", None)
        if model is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this PrivateRatingsMF is not fitted yet: call fit first")
        return model

    def predict(self, X: Any) -> np.ndarray:
        """Predicted ratings for rows ``[user_id, item_id]`` (ids as in the data)."""
        model = self._check_fitted()
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"X must be (n, 2): user and item ids, got shape {arr.shape}")
        return model.predict(arr[:, 0], arr[:, 1])

    def recommend(self, user: Any, k: int = 10, *, exclude_rated: bool = True) -> list[Any]:
        """The ``k`` best (item id, predicted rating) for ``user``, rated items left out."""
        return self._check_fitted().recommend(user, k, exclude_rated=exclude_rated)
