"""Build and run a ppdnmf simulation from a scenario.

Everything that can be wrong with the input (data, rank, graph, partition,
crypto parameters) is checked in ``prepare_job`` before a key is generated,
so a bad scenario fails in milliseconds with a message naming the culprit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.agents.envelope import Envelope
from cipherfact.agents.traffic import TrafficStats
from cipherfact.crypto import FixedPointCodec, PaillierOptions, generate_scheme, load_public_scheme
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.keys import MIN_SECURE_KEY_BITS
from cipherfact.crypto.parallel import SharedDecryptPool
from cipherfact.data.digits import load_digits_matrix
from cipherfact.data.matrix_io import load_matrix
from cipherfact.data.partition import partition_columns
from cipherfact.data.synthetic import synthetic_nmf
from cipherfact.protocols.ppdnmf import (
    PPDNMFAgent,
    PPDNMFConfig,
    SecAggAgent,
    initial_h,
    make_agent,
)
from cipherfact.protocols.references import (
    ReferenceResult,
    centralized_nmf,
    decentralized_nmf_plain,
    relative_error,
)
from cipherfact.simulations.engine import InMemoryEngine
from cipherfact.simulations.scenario import (
    PPDNMFScenario,
    ScenarioError,
    check_topology_fits_agents,
)
from cipherfact.simulations.topology import Graph, make_graph
from cipherfact.solvers import make_solver
from cipherfact.solvers.base import LocalSolver
from cipherfact.solvers.factory import BackendUnavailableError


@dataclass
class PPDNMFJob:
    """A validated, ready-to-run ppdnmf job (data, graph, seeds, parameters)."""

    scenario: PPDNMFScenario
    X: np.ndarray
    columns: list[np.ndarray]
    graph: Graph
    config: PPDNMFConfig
    codec: FixedPointCodec
    weight_seeds: list[int]
    h_seeds: list[int]

    @property
    def blocks(self) -> list[np.ndarray]:
        return [self.X[:, c] for c in self.columns]

    @property
    def n_agents(self) -> int:
        return self.graph.n_agents

    def initial_h(self) -> list[np.ndarray]:
        return [
            initial_h(self.config, self.h_seeds[i], i, len(c)) for i, c in enumerate(self.columns)
        ]

    def make_solver(self) -> LocalSolver:
        s = self.scenario.solver
        return make_solver(s.backend, s.device, rule=s.rule)


def load_data(scenario: PPDNMFScenario, rng: np.random.Generator) -> np.ndarray:
    spec = scenario.data
    if spec.kind == "synthetic":
        X = synthetic_nmf(spec.rows, spec.cols, scenario.rank, spec.snr_db, rng=rng).X
    elif spec.kind == "digits":
        X = load_digits_matrix()
    else:
        X = load_matrix(spec.path)
    if spec.max_cols is not None:
        if spec.max_cols < 1:
            raise ScenarioError(f"data.max_cols must be >= 1, got {spec.max_cols}")
        X = X[:, : spec.max_cols]
    return np.ascontiguousarray(X, dtype=np.float64)


#: Largest |value| of a data matrix. The codec never carries X: it carries W, and
#: H (never encrypted) absorbs X's scale, so W's range does not grow with X
#: (measured on the synthetic setup, X's maximum from 1e-300 to 1e154, both rules:
#: max |W| 1 to 30, within crypto.int_bits = 6's 64). The bound on X is float64's:
#: the solvers square X-sized numbers and sum them over the matrix (H H^T, ||X||),
#: which overflows to inf near 1e154; 1e100 leaves room for any matrix size.
MAX_DATA_VALUE = 1e100
#: Smallest largest-|value|: below float64's smallest normal number the data are
#: subnormal and have already lost most of their digits.
MIN_DATA_SCALE = float(np.finfo(np.float64).tiny)


def check_matrix(X: np.ndarray, rank: int, n_agents: int) -> None:
    """The checks that must pass before any key is generated."""
    if X.ndim != 2 or X.size == 0:
        raise ValueError(f"data matrix must be 2-D and non-empty, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(
            f"data contains NaN or infinite values (first at row {bad[0]}, column {bad[1]})"
        )
    if np.any(X < 0):
        bad = np.argwhere(X < 0)[0]
        raise ValueError(
            f"Negative values in data (first {X[bad[0], bad[1]]:g} at row {bad[0]}, "
            f"column {bad[1]}); NMF needs X >= 0"
        )
    top = np.unravel_index(int(np.argmax(X)), X.shape)
    largest = float(X[top])
    if largest > MAX_DATA_VALUE:
        raise ValueError(
            f"data value {largest:g} at row {top[0]}, column {top[1]} exceeds the limit "
            f"{MAX_DATA_VALUE:g} (float64 products of the data would overflow): divide the "
            "data by a constant (the relative error does not change)"
        )
    if largest == 0.0:
        raise ValueError(
            f"data is all zeros (shape {X.shape}): nothing to factorize, and the relative "
            "error is undefined"
        )
    if largest < MIN_DATA_SCALE:
        raise ValueError(
            f"data values are subnormal (largest {largest:g} < {MIN_DATA_SCALE:g}, float64's "
            "smallest normal number): multiply the data by a constant"
        )
    if not 1 <= rank <= min(X.shape):
        raise ValueError(f"rank must be between 1 and min(rows, cols) = {min(X.shape)}, got {rank}")
    if n_agents > X.shape[1]:
        raise ValueError(f"more agents ({n_agents}) than columns ({X.shape[1]}) to split")


def _seeds(
    seed: int, n_agents: int
) -> tuple[np.random.Generator, np.random.Generator, list[int], list[int], int]:
    root = np.random.SeedSequence(seed)
    data_ss, graph_ss, agent_ss, init_ss = root.spawn(4)
    agent_words = agent_ss.generate_state(2 * n_agents, dtype=np.uint64)
    weight_seeds = [int(w) for w in agent_words[:n_agents]]
    h_seeds = [int(w) for w in agent_words[n_agents:]]
    init_seed = int(init_ss.generate_state(1, dtype=np.uint64)[0])
    return (
        np.random.default_rng(data_ss),
        np.random.default_rng(graph_ss),
        weight_seeds,
        h_seeds,
        init_seed,
    )


def codec_for(scenario: PPDNMFScenario, max_degree: int) -> FixedPointCodec:
    """Slot layout sized for the scenario's exchange.

    secagg: a hub sums one fresh term per neighbour, no scalars. pairwise: 3
    terms per neighbour (offer, W_j, noise) and two weights per term, with
    ``admm.reply_noise_bits`` more fraction bits so that the replies' noise
    stays at the scenario's precision (accuracy unchanged).
    """
    if scenario.exchange == "secagg":
        max_terms = 1 << max(1, int(np.ceil(np.log2(max_degree))))
        return FixedPointCodec(
            frac_bits=scenario.crypto.frac_bits,
            int_bits=scenario.crypto.int_bits,
            scalar_bits=1,  # scale 1 (no scalar products) must fit: < 2**1
            max_terms=max_terms,
        )
    max_terms = 1 << max(1, int(np.ceil(np.log2(3 * max_degree))))
    return FixedPointCodec(
        frac_bits=scenario.crypto.frac_bits + scenario.admm.reply_noise_bits,
        int_bits=scenario.crypto.int_bits,
        scalar_bits=2 * scenario.admm.weight_bits,
        max_terms=max_terms,
    )


def check_graph(scenario: PPDNMFScenario, graph: Graph) -> None:
    """The exchange's needs of the graph, checked before any key exists."""
    if scenario.exchange == "secagg":
        short = graph.low_degree_agents(SecAggAgent.min_neighbors)
        if short:
            raise ScenarioError(
                f"the secagg exchange needs every agent to have at least 2 neighbours; "
                f"agent(s) {short} have fewer (set topology.min_degree = 2, or use "
                "exchange = 'pairwise')"
            )


def prepare_job(scenario: PPDNMFScenario, X: np.ndarray | None = None) -> PPDNMFJob:
    """Validate everything and fix every seed; generates no keys."""
    data_rng, graph_rng, weight_seeds, h_seeds, init_seed = _seeds(scenario.seed, scenario.n_agents)
    if X is None:
        X = load_data(scenario, data_rng)
    check_matrix(X, scenario.rank, scenario.n_agents)
    try:
        columns = partition_columns(X.shape[1], scenario.n_agents, scenario.data.agent_cols)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"data.agent_cols: {exc}") from exc
    topo = scenario.topology
    check_topology_fits_agents(scenario)
    try:
        graph = make_graph(topo.kind, scenario.n_agents, rng=graph_rng, **topo.graph_params())
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"topology: {exc}") from exc
    try:  # a missing backend or device fails here, not after the keys
        make_solver(scenario.solver.backend, scenario.solver.device, rule=scenario.solver.rule)
    except (BackendUnavailableError, TypeError, ValueError) as exc:
        raise ScenarioError(f"solver: {exc}") from exc
    check_graph(scenario, graph)
    config = PPDNMFConfig(
        job_id=f"ppdnmf-{scenario.name}-{scenario.seed}",
        rank=scenario.rank,
        outer_iters=scenario.outer_iters,
        inner_iters=scenario.inner_iters,
        penalty=scenario.admm.penalty,
        weight_bits=scenario.admm.weight_bits,
        h_sweeps=scenario.solver.h_sweeps,
        init_seed=init_seed,
        exchange=scenario.exchange,
        reply_noise_bits=scenario.admm.reply_noise_bits,
    )
    codec = codec_for(scenario, graph.max_degree)
    if (
        scenario.crypto.scheme == "paillier"
        and scenario.crypto.key_bits < MIN_SECURE_KEY_BITS
        and not (scenario.crypto.insecure_test_keys)
    ):
        raise ScenarioError(
            f"crypto.key_bits = {scenario.crypto.key_bits} is below {MIN_SECURE_KEY_BITS}; set "
            "crypto.insecure_test_keys = true to allow it for tests"
        )
    return PPDNMFJob(scenario, X, columns, graph, config, codec, weight_seeds, h_seeds)


def generate_key(job: PPDNMFJob) -> Scheme:
    """One agent's key pair (fresh OS randomness; never derived from the seed)."""
    crypto = job.scenario.crypto
    if crypto.scheme == "paillier":
        return generate_scheme(
            "paillier",
            codec=job.codec,
            key_bits=crypto.key_bits,
            insecure_test_keys=crypto.insecure_test_keys,
            options=paillier_options(job),
        )
    return generate_scheme("plain", codec=job.codec)


def generate_keys(
    job: PPDNMFJob, progress: Callable[[int], None] | None = None
) -> dict[int, Scheme]:
    """One key pair per agent."""
    schemes: dict[int, Scheme] = {}
    for i in range(job.n_agents):
        schemes[i] = generate_key(job)
        if progress is not None:
            progress(i)
    return schemes


def paillier_options(job: PPDNMFJob) -> PaillierOptions:
    """Options for every Paillier key of the job, own or a neighbour's.

    No per-key worker processes: a simulation hosts many keys per process, so
    ``crypto.processes`` sizes one shared decryption pool instead (see
    ``run_inmemory``), and the Ray and gRPC backends already run a process
    per core or per agent.
    """
    # 7-bit windows: 64 multiplications per randomness instead of 75 at 6 bits, for
    # 4.2 MB tables instead of 2.4 MB (public tables are shared per process). Not
    # widened (``djn_wide_tables``): with a prefetch worker (which widens its own)
    # the host computes few factors, and 9-bit host tables made a 10-outer
    # pairwise run 1.06x slower and 134 MB larger (BENCHMARKS.md, issue 13).
    return PaillierOptions(
        processes=1,
        djn_public=job.scenario.crypto.djn_public,
        djn_window_bits=7,
        fast_path=job.scenario.crypto.fast_path,
    )


def peer_loader(job: PPDNMFJob) -> Callable[[bytes], Scheme]:
    """Turns a neighbour's public-key bytes into a public-only scheme (validated).

    A key below the job's ``crypto.key_bits`` is refused (``check_peer_key``)
    unless this receiver's own job allows test keys.
    """
    crypto = job.scenario.crypto
    name, codec = ("paillier" if crypto.scheme == "paillier" else "plain"), job.codec
    options = paillier_options(job) if name == "paillier" else None
    bits, test_keys = crypto.key_bits, crypto.insecure_test_keys

    def load(data: bytes) -> Scheme:
        return load_public_scheme(
            name,
            data,
            codec=codec,
            options=options,
            min_key_bits=bits,
            insecure_test_keys=test_keys,
        )

    return load


def build_role(
    job: PPDNMFJob,
    agent_id: int,
    scheme: Scheme,
    *,
    X: np.ndarray | None = None,
    neighbors: tuple[int, ...] | None = None,
    weight_seed: int | None = None,
    h_seed: int | None = None,
    auto_advance: bool = False,
) -> PPDNMFAgent:
    """Agent ``agent_id``'s state machine; a deployment passes its own block and seeds."""
    return make_agent(
        agent_id,
        job.X[:, job.columns[agent_id]] if X is None else X,
        job.graph.neighbors(agent_id) if neighbors is None else neighbors,
        job.config,
        scheme,
        peer_loader(job),
        job.make_solver(),
        weight_seed=job.weight_seeds[agent_id] if weight_seed is None else weight_seed,
        h_seed=job.h_seeds[agent_id] if h_seed is None else h_seed,
        auto_advance=auto_advance,
    )


def build_roles(
    job: PPDNMFJob, schemes: dict[int, Scheme], *, auto_advance: bool = False
) -> dict[int, PPDNMFAgent]:
    return {
        i: build_role(job, i, schemes[i], auto_advance=auto_advance) for i in range(job.n_agents)
    }


@dataclass
class OuterMetrics:
    """One line of metrics.jsonl."""

    outer: int
    rel_error: float
    consensus_spread: float
    bytes: int
    messages: int
    crypto_s: float
    compute_s: float
    transport_s: float
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def consensus_spread(Ws: list[np.ndarray]) -> float:
    """max_i ||W_i - mean W||_F / ||mean W||_F: 0 at exact consensus."""
    mean = sum(Ws) / len(Ws)
    norm = float(np.linalg.norm(mean))
    return max(float(np.linalg.norm(W - mean)) for W in Ws) / norm if norm > 0 else 0.0


@dataclass
class OuterResult:
    """What any engine reports after an outer iteration (all agents at the boundary).

    ``Ws``/``Hs`` are the agents' current factors, gathered by the simulation
    harness for metrics only (a deployment never gathers them); ``stats`` is the
    cumulative traffic so far.
    """

    metrics: OuterMetrics
    Ws: list[np.ndarray]
    Hs: list[np.ndarray]
    stats: TrafficStats


def outer_metrics(
    job: PPDNMFJob,
    t: int,
    Ws: list[np.ndarray],
    Hs: list[np.ndarray],
    seconds: dict[str, float],
    wall: float,
    stats: TrafficStats,
    before: tuple[int, int],
) -> OuterMetrics:
    """Metrics of one outer iteration; shared by every engine.

    ``before`` is ``(bytes_total, messages_total)`` of ``stats`` when the
    iteration began.
    """
    crypto_s, compute_s = seconds.get("crypto", 0.0), seconds.get("compute", 0.0)
    return OuterMetrics(
        outer=t,
        rel_error=relative_error(job.blocks, Ws, Hs),
        consensus_spread=consensus_spread(Ws),
        bytes=stats.bytes_total - before[0],
        messages=stats.messages_total - before[1],
        crypto_s=crypto_s,
        compute_s=compute_s,
        transport_s=max(0.0, wall - crypto_s - compute_s),
        wall_s=wall,
    )


def run_inmemory(
    job: PPDNMFJob,
    *,
    observer: Callable[[Envelope], None] | None = None,
    schemes: dict[int, Scheme] | None = None,
) -> Iterator[OuterResult]:
    """Run the job over the in-memory transport, yielding after every outer iteration."""
    if schemes is None:
        schemes = generate_keys(job)
    roles = build_roles(job, schemes)
    engine = InMemoryEngine(roles, observer=observer)
    pool = None
    if job.scenario.crypto.processes > 1 and job.scenario.crypto.scheme == "paillier":
        # Agents run one at a time here: let each decryption use every core.
        pool = SharedDecryptPool(job.scenario.crypto.processes)
        for scheme in schemes.values():
            scheme.use_shared_pool(pool)  # type: ignore[attr-defined]
    try:
        engine.start()
        yield from _pump_outer_iterations(job, roles, engine)
    finally:
        if pool is not None:
            for scheme in schemes.values():
                scheme.use_shared_pool(None)  # type: ignore[attr-defined]
            pool.close()


def _pump_outer_iterations(
    job: PPDNMFJob, roles: dict[int, PPDNMFAgent], engine: InMemoryEngine
) -> Iterator[OuterResult]:
    for t in range(job.config.outer_iters):
        before = engine.stats.bytes_total, engine.stats.messages_total
        start = time.perf_counter()
        engine.run_outer()
        wall = time.perf_counter() - start
        seconds: dict[str, float] = {}
        for role in roles.values():
            for name, value in role.records[-1].seconds.items():
                seconds[name] = seconds.get(name, 0.0) + value
        Ws = [roles[i].W for i in range(job.n_agents)]
        Hs = [roles[i].H for i in range(job.n_agents)]
        metrics = outer_metrics(job, t, Ws, Hs, seconds, wall, engine.stats, before)
        yield OuterResult(metrics, Ws, Hs, engine.stats)


def references(job: PPDNMFJob) -> tuple[ReferenceResult, ReferenceResult]:
    """Centralized NMF and the crypto-free decentralized algorithm, same start and budget."""
    solver = job.make_solver()
    H0 = job.initial_h()
    W0 = job.config.initial_w(job.X.shape[0])
    central = centralized_nmf(
        job.X, W0, np.hstack(H0), job.config.outer_iters, solver, h_sweeps=job.config.h_sweeps
    )
    neighbors = [job.graph.neighbors(i) for i in range(job.n_agents)]
    plain = decentralized_nmf_plain(job.blocks, neighbors, job.config, H0, job.weight_seeds, solver)
    return central, plain
