"""``DistributedNMF``: the ppdnmf protocol behind a scikit-learn estimator.

    from cipherfact import DistributedNMF
    model = DistributedNMF(n_components=5, n_agents=10, scheme="paillier")
    H = model.fit_transform(X)      # X: n_samples x n_features, rows split over agents
    model.components_               # shared basis (n_components x n_features)

The rows (samples) of X are split over the agents; each agent keeps its rows
and their coefficients private, and every exchange between graph neighbours
is masked (and, with ``scheme="paillier"``, encrypted under the receiver's
key). In the paper's notation the agents factorize ``X.T = W H`` with ``X.T``
split by columns: ``W_`` is ``components_.T`` and ``H_`` is the coefficients'
transpose.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cipherfact.simulations.scenario import (
    AdmmSpec,
    CryptoSpec,
    DataSpec,
    PPDNMFScenario,
    ScenarioError,
    SolverSpec,
    TopologySpec,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["DistributedNMF"]

#: Scenario field -> estimator parameter, for messages raised by the scenario checks
#: (which speak the scenario file's and ``--set``'s language).
_PARAM_NAMES = {
    "crypto.insecure_test_keys": "insecure_test_keys",
    "crypto.key_bits": "key_bits",
    "crypto.frac_bits": "frac_bits",
    "crypto.int_bits": "int_bits",
    "crypto.scheme": "scheme",
    "topology.degree": "degree",
    "topology.kind": "topology",
    "admm.penalty": "penalty",
    "solver.backend": "solver",
    "solver.device": "device",
    "outer_iters": "outer_iters",
    "inner_iters": "inner_iters",
    "n_agents": "n_agents",
    "exchange": "exchange",
    "seed": "seed",
    "rank": "n_components",
}
_PARAM_RE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(k) for k in _PARAM_NAMES) + r")(?![\w])(\s*=\s*)?"
)


def _python_spelling(message: str) -> str:
    """``crypto.key_bits = 512 ...; set crypto.insecure_test_keys = true`` ->
    ``key_bits=512 ...; set insecure_test_keys=True``."""

    def name(match: re.Match[str]) -> str:
        return _PARAM_NAMES[match.group(1)] + ("=" if match.group(2) else "")

    message = _PARAM_RE.sub(name, message)
    message = re.sub(r"=true\b", "=True", message)
    return re.sub(r"=false\b", "=False", message)


class DistributedNMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Privacy-preserving decentralized NMF (the ppdnmf protocol), scikit-learn style.

    Factorizes a nonnegative ``X`` (n_samples x n_features) as ``X ~ H.T @
    components_`` with both factors nonnegative, where the samples (rows) are
    split over ``n_agents`` agents on a graph with no server. Each agent keeps
    its rows and their coefficients private and only exchanges its copy of the
    shared basis with graph neighbours, masked by secure aggregation (and, with
    ``scheme="paillier"``, encrypted under the receiving agent's own key). The
    agents run ``outer_iters`` block-coordinate-descent iterations (a local
    HALS update of their coefficients, then ``inner_iters`` rounds of
    decentralized ADMM on the basis).

    ``fit`` runs the whole protocol in this process (in-memory transport) and
    then gathers the agents' results into the attributes below: that is the
    simulation measuring; in a deployment no party sees more than its own
    rows, its coefficients and the shared basis (``cipherfact deploy``).

    Parameters
    ----------
    n_components : int, default=5
        Rank r of the factorization (``rank`` in a scenario file); at most
        ``min(n_samples, n_features)``.
    n_agents : int, default=10
        Number of agents the rows of X are split over (an even split); every
        agent needs at least one row, so ``n_agents <= n_samples``. The secagg
        exchange needs ``n_agents >= 3``.
    topology : {"geometric", "erdos_renyi", "small_world", "ring", "complete"}, \
default="geometric"
        Communication graph between the agents (connected; with secagg every
        agent gets at least 2 neighbours).
    degree : float or None, default=3.0
        Average number of neighbours of the random graph kinds (geometric,
        erdos_renyi, small_world), at most ``n_agents - 1``; ignored by ring
        and complete.
    scheme : {"paillier", "none", "plain"}, default="paillier"
        ``"paillier"`` encrypts every exchanged share under its receiver's key;
        ``"none"`` (alias ``"plain"``) sends the secagg-masked shares without
        encryption. Both give bit-identical factors; ``"none"`` is much faster.
    exchange : {"secagg", "pairwise"}, default="secagg"
        How an agent gets its neighbours' basis copies: ``"secagg"`` reveals
        only their sum per round; ``"pairwise"`` (the paper's construction)
        reveals more per neighbour (README, privacy model).
    key_bits : int, default=2048
        Paillier modulus size (``scheme="paillier"`` only). Below 2048 needs
        ``insecure_test_keys=True``.
    insecure_test_keys : bool, default=False
        Allow keys below 2048 bits (tests and quick experiments only).
    outer_iters : int, default=100
        Block-coordinate-descent iterations (each one local coefficient update
        plus ``inner_iters`` ADMM rounds).
    inner_iters : int, default=30
        Decentralized ADMM rounds per outer iteration (one exchange each).
    penalty : float, default=10.0
        ADMM penalty (> 0); smaller suits data with small values (e.g. 1.0 for
        pixel intensities in [0, 1]).
    frac_bits : int, default=15
        Fraction bits of the fixed-point codec the exchanged values use (0-60).
    int_bits : int, default=6
        Integer bits of the codec (0-60): the basis entries must stay below
        ``2**int_bits`` in magnitude.
    solver : {"numpy", "torch"}, default="numpy"
        Backend of the local updates.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Device of the torch backend (``"cuda"`` needs a CUDA build of PyTorch
        and a GPU; numpy is CPU-only).
    seed : int, default=0
        Seeds the partition, the graph, the initial factors and the private
        weights (keys always come from the OS). Same seed, same factors.
    verbose : int, default=1
        0: silent. 1: progress bars on stderr (key generation, then outer
        iterations with the current relative error), shown once a phase has
        run for more than a second, so short fits stay quiet. 2: the bars from
        the start.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The shared basis: the mean of the agents' copies, which agree to
        within ``consensus_spread_``.
    W_ : ndarray of shape (n_features, n_components)
        ``components_.T``, the paper's W.
    H_ : ndarray of shape (n_components, n_samples)
        The coefficients of the training rows (the paper's H), gathered from
        the agents: agent i computed its block with its own basis copy
        ``agent_W_[i]``. ``transform(X)`` on the training data gives the
        coefficients against ``components_`` instead; the two differ by about
        ``consensus_spread_``.
    agent_W_ : list of ndarray of shape (n_features, n_components)
        Each agent's copy of the basis at the end.
    agent_H_ : list of ndarray of shape (n_components, n_samples_i)
        Each agent's private coefficients, for its rows ``agent_samples_[i]``.
    agent_samples_ : list of ndarray of int
        The row indices of X each agent held.
    graph_ : cipherfact.simulations.topology.Graph
        The communication graph (``graph_.edges``, ``graph_.neighbors(i)``).
    history_ : list of float
        Relative error ``sqrt(sum_i ||X_i - H_i.T W_i.T||^2) / ||X||`` after
        each outer iteration (each agent's block against its own basis copy).
    rel_error_ : float
        ``history_[-1]``.
    reconstruction_err_ : float
        ``||X - H_.T @ components_||_F`` on the training data (absolute, as
        scikit-learn's NMF reports it).
    consensus_spread_ : float
        ``max_i ||W_i - mean W||_F / ||mean W||_F`` at the end: 0 at exact
        consensus.
    bytes_total_ : int
        Bytes sent between agents over the whole run (setup included).
    messages_total_ : int
        Messages sent between agents over the whole run.
    n_iter_ : int
        Outer iterations run (``outer_iters``).
    n_features_in_ : int
        Number of features (columns) seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from cipherfact import DistributedNMF
    >>> X = np.random.default_rng(0).uniform(0, 1, (60, 8))
    >>> model = DistributedNMF(2, n_agents=4, scheme="none", outer_iters=5,
    ...                        inner_iters=5, verbose=0)
    >>> H = model.fit_transform(X)
    >>> H.shape, model.components_.shape
    ((60, 2), (2, 8))
    """

    def __init__(
        self,
        n_components: int = 5,
        *,
        n_agents: int = 10,
        topology: str = "geometric",
        degree: float | None = 3.0,
        scheme: str = "paillier",
        exchange: str = "secagg",
        key_bits: int = 2048,
        insecure_test_keys: bool = False,
        outer_iters: int = 100,
        inner_iters: int = 30,
        penalty: float = 10.0,
        frac_bits: int = 15,
        int_bits: int = 6,
        solver: str = "numpy",
        device: str = "cpu",
        seed: int = 0,
        verbose: int = 1,
    ) -> None:
        self.n_components = n_components
        self.n_agents = n_agents
        self.topology = topology
        self.degree = degree
        self.scheme = scheme
        self.exchange = exchange
        self.key_bits = key_bits
        self.insecure_test_keys = insecure_test_keys
        self.outer_iters = outer_iters
        self.inner_iters = inner_iters
        self.penalty = penalty
        self.frac_bits = frac_bits
        self.int_bits = int_bits
        self.solver = solver
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn plumbing

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"requires_positive_X": True, "preserves_dtype": [np.float64]}

    def _validate(self, X: Any, *, reset: bool, whom: str) -> np.ndarray:
        kwargs: dict[str, Any] = {"dtype": np.float64, "accept_sparse": False, "reset": reset}
        if _sk_validate_data is not None:
            X = _sk_validate_data(self, X, **kwargs)
        else:  # pragma: no cover - scikit-learn < 1.6
            X = self._validate_data(X, **kwargs)
        if np.any(X < 0):
            row, col = (int(i) for i in np.argwhere(X < 0)[0])
            raise ValueError(
                f"Negative values in data passed to {whom} (first {X[row, col]:g} at row {row}, "
                f"column {col}): NMF needs X >= 0"
            )
        return np.asarray(X)

    @property
    def _n_features_out(self) -> int:
        """Output columns of ``transform`` (``get_feature_names_out``: distributednmf0, ...)."""
        return int(self.components_.shape[0])

    # ------------------------------------------------------------------ fitting

    def _scenario(self, n_features: int, n_samples: int) -> PPDNMFScenario:
        takes_degree = self.topology in ("geometric", "erdos_renyi", "small_world")
        return PPDNMFScenario(
            name="estimator",
            seed=self.seed,
            n_agents=self.n_agents,
            rank=self.n_components,
            outer_iters=self.outer_iters,
            inner_iters=self.inner_iters,
            exchange=self.exchange,
            # secagg needs >= 2 neighbours per agent: the graph guarantees it
            topology=TopologySpec(
                kind=self.topology,
                degree=self.degree if takes_degree else None,
                min_degree=2 if self.exchange == "secagg" and self.n_agents > 2 else None,
            ),
            data=DataSpec(kind="file", rows=n_features, cols=n_samples, path="<array>"),
            crypto=CryptoSpec(
                scheme=self.scheme,
                key_bits=self.key_bits,
                insecure_test_keys=self.insecure_test_keys,
                frac_bits=self.frac_bits,
                int_bits=self.int_bits,
            ),
            admm=AdmmSpec(penalty=self.penalty),
            solver=SolverSpec(backend=self.solver, device=self.device),
        )

    def _check_data(self, X: np.ndarray) -> None:
        """Sizes and the value range, in the caller's orientation (rows = samples)."""
        from cipherfact.protocols.ppdnmf.job import MAX_DATA_VALUE, MIN_DATA_SCALE

        n_samples, n_features = X.shape
        top = np.unravel_index(int(np.argmax(X)), X.shape)
        largest = float(X[top])
        if largest == 0.0:
            raise ValueError(f"X is all zeros (shape {X.shape}): nothing to factorize")
        if largest > MAX_DATA_VALUE:
            raise ValueError(
                f"X has the value {largest:g} at row {top[0]}, column {top[1]}, above "
                f"{MAX_DATA_VALUE:g} (float64 products would overflow): divide X by a constant"
            )
        if largest < MIN_DATA_SCALE:
            raise ValueError(
                f"X is subnormal (largest value {largest:g}): multiply X by a constant"
            )
        if isinstance(self.n_agents, int) and n_samples < self.n_agents:
            raise ValueError(
                f"DistributedNMF: n_agents={self.n_agents} agents need at least one sample "
                f"(row of X) each, but X has {n_samples} sample{'s' * (n_samples != 1)} "
                f"(n_samples = {n_samples}); lower n_agents or pass more rows (rows are split "
                "over the agents; X is n_samples x n_features)"
            )
        most = min(n_samples, n_features)
        if isinstance(self.n_components, int) and not 1 <= self.n_components <= most:
            raise ValueError(
                f"n_components must be between 1 and min(n_samples, n_features) = {most}, got "
                f"{self.n_components} (X has n_samples = {n_samples}, n_features = {n_features})"
            )

    def fit(self, X: Any, y: Any = None) -> DistributedNMF:
        """Run the protocol on X and keep the shared basis and the coefficients.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Nonnegative, finite data; its rows are split over the agents.
        y : None
            Ignored (scikit-learn convention).

        Returns
        -------
        self : DistributedNMF
            The fitted estimator.
        """
        from cipherfact.protocols.ppdnmf.job import (
            consensus_spread,
            generate_keys,
            prepare_job,
            run_inmemory,
        )

        X = self._validate(X, reset=True, whom="DistributedNMF.fit")
        self._check_data(X)
        data = np.ascontiguousarray(X.T)  # the protocol's m x n, columns over agents
        try:
            job = prepare_job(self._scenario(*data.shape), X=data)
        except ScenarioError as exc:
            raise ScenarioError(_python_spelling(str(exc))) from None
        delay = 1.0 if self.verbose == 1 else 0.0
        quiet = not self.verbose
        history: list[float] = []
        bytes_total = messages_total = 0
        last = None
        with threadpool_limits(limits=1):  # the simulate command's (reproducible) setting
            keys = tqdm(total=job.n_agents, desc="DistributedNMF keys", unit="agent",
                        disable=quiet, delay=delay, file=sys.stderr, leave=False)  # fmt: skip
            with keys:
                schemes = generate_keys(job, progress=lambda _i: keys.update(1))
            bar = tqdm(total=job.config.outer_iters, desc="DistributedNMF", unit="outer",
                       disable=quiet, delay=delay, file=sys.stderr)  # fmt: skip
            with bar:
                for last in run_inmemory(job, schemes=schemes):
                    history.append(last.metrics.rel_error)
                    bytes_total += last.metrics.bytes
                    messages_total += last.metrics.messages
                    bar.update(1)
                    bar.set_postfix(rel_error=f"{last.metrics.rel_error:.4f}")
        if last is None:  # unreachable: outer_iters >= 1 is validated
            raise RuntimeError("no outer iteration ran")
        self.agent_W_ = last.Ws
        self.agent_H_ = last.Hs
        self.agent_samples_ = job.columns
        self.W_: np.ndarray = np.mean(self.agent_W_, axis=0)
        self.components_ = np.ascontiguousarray(self.W_.T)
        H = np.zeros((self.n_components, X.shape[0]))
        for rows, h in zip(job.columns, self.agent_H_, strict=True):
            H[:, rows] = h
        self.H_ = H
        self.graph_ = job.graph
        self.history_ = history
        self.rel_error_ = history[-1]
        self.reconstruction_err_ = float(np.linalg.norm(X - H.T @ self.components_))
        self.consensus_spread_ = consensus_spread(self.agent_W_)
        self.bytes_total_ = bytes_total
        self.messages_total_ = messages_total
        self.n_iter_ = len(history)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then return the coefficients of X against ``components_``.

        The same as ``fit(X).transform(X)``: each row's nonnegative least-squares
        coefficients against the final shared basis (``H_`` holds the agents' own,
        computed against their basis copies).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Nonnegative, finite data; its rows are split over the agents.
        y : None
            Ignored.
        **fit_params : dict
            None are accepted (scikit-learn signature).

        Returns
        -------
        H : ndarray of shape (n_samples, n_components)
        """
        if fit_params:
            raise TypeError(f"fit_transform takes no fit parameters, got {sorted(fit_params)}")
        return self.fit(X).transform(X)

    def transform(self, X: Any) -> np.ndarray:
        """Coefficients of new rows against the learned basis, computed locally.

        For each row x, ``h = argmin_{h >= 0} ||x - h @ components_||_2``
        (nonnegative least squares, ``scipy.optimize.nnls``). No protocol runs
        and nothing is exchanged: this is what an agent (or a new party) that
        holds the shared basis computes on its own rows, the same local step as
        the protocol's coefficient update, solved to optimality.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Nonnegative, finite rows with the features seen in ``fit``.

        Returns
        -------
        H : ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self, "components_")
        X = self._validate(X, reset=False, whom="DistributedNMF.transform")
        basis = self.components_.T  # n_features x r
        out = np.zeros((X.shape[0], self.components_.shape[0]))
        for i, row in enumerate(X):
            if np.any(row):
                out[i] = nnls(basis, row)[0]
        return out

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Rows reconstructed from coefficients: ``X @ components_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Coefficients, e.g. from ``transform``.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self, "components_")
        H = np.asarray(X, dtype=np.float64)
        if H.ndim != 2 or H.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"expected coefficients of shape (n_samples, {self.components_.shape[0]}), got "
                f"{H.shape}"
            )
        return np.asarray(H @ self.components_)
