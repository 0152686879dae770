"""Communication graphs for decentralized protocols.

Agents talk only to graph neighbours, and consensus needs a connected graph,
so every constructor here either returns a connected graph or raises. Random
graphs draw only from the caller's seeded ``numpy.random.Generator`` (never
networkx's own RNG), so a seed fixes the graph on every platform.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "GRAPH_KINDS",
    "Graph",
    "expected_geometric_degree",
    "geometric_radius_for_degree",
    "make_graph",
]

GRAPH_KINDS = ("ring", "complete", "erdos_renyi", "geometric", "small_world")

Edge = tuple[int, int]


def _components(n_agents: int, edges: Iterable[Edge]) -> list[list[int]]:
    """Connected components, each sorted, ordered by smallest member."""
    parent = list(range(n_agents))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for a in range(n_agents):
        groups.setdefault(find(a), []).append(a)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph on agents 0..n_agents-1.

    ``edges`` is a sorted tuple of (i, j) with i < j; ``positions`` holds the
    unit-square coordinates of a geometric graph (None otherwise). The
    constructor checks structure only; ``from_edges``/``from_dict`` and
    ``make_graph`` also guarantee connectivity.
    """

    n_agents: int
    edges: tuple[Edge, ...]
    positions: tuple[tuple[float, float], ...] | None = None
    _adjacency: tuple[tuple[int, ...], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        if isinstance(self.n_agents, bool) or not isinstance(self.n_agents, (int, np.integer)):
            raise TypeError(f"n_agents must be an int, got {type(self.n_agents).__name__}")
        if self.n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {self.n_agents}")
        previous: Edge | None = None
        for edge in self.edges:
            i, j = edge
            if not (0 <= i < j < self.n_agents):
                raise ValueError(f"edge {edge} must satisfy 0 <= i < j < n_agents={self.n_agents}")
            if previous is not None and edge <= previous:
                raise ValueError(f"edges must be sorted and unique; {edge} after {previous}")
            previous = edge
        if self.positions is not None and len(self.positions) != self.n_agents:
            raise ValueError(
                f"positions has {len(self.positions)} entries but n_agents is {self.n_agents}"
            )
        adjacency: list[list[int]] = [[] for _ in range(self.n_agents)]
        for i, j in self.edges:
            adjacency[i].append(j)
            adjacency[j].append(i)
        object.__setattr__(self, "_adjacency", tuple(tuple(sorted(a)) for a in adjacency))

    # construction -----------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        n_agents: int,
        edges: Iterable[Iterable[int]],
        positions: Iterable[Iterable[float]] | None = None,
    ) -> Graph:
        """Build a connected graph from user-given edges in any order or direction.

        Duplicate edges (also (j, i) after (i, j)) collapse to one; self loops,
        ids outside 0..n_agents-1 and disconnected graphs are rejected.
        """
        if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)):
            raise TypeError(f"n_agents must be an int, got {type(n_agents).__name__}")
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        normalized: set[Edge] = set()
        for raw in edges:
            pair = tuple(raw)
            if len(pair) != 2:
                raise ValueError(f"edge {pair} must have exactly two agent ids")
            for agent in pair:
                if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)):
                    raise TypeError(f"agent ids must be ints; edge {pair} has {agent!r}")
            i, j = int(pair[0]), int(pair[1])
            if i == j:
                raise ValueError(f"self loop on agent {i} is not allowed")
            for agent in (i, j):
                if not 0 <= agent < n_agents:
                    raise ValueError(
                        f"agent id {agent} in edge {pair} is out of range 0..{n_agents - 1}"
                    )
            normalized.add((min(i, j), max(i, j)))
        pos = None
        if positions is not None:
            pos = tuple((float(p[0]), float(p[1])) for p in (tuple(q) for q in positions))
        graph = cls(int(n_agents), tuple(sorted(normalized)), pos)
        components = graph.components()
        if len(components) > 1:
            raise ValueError(f"graph is not connected: components {components}")
        return graph

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Graph:
        """Inverse of ``to_dict``; unknown keys are an error, not ignored."""
        unknown = set(data) - {"n_agents", "edges", "positions"}
        if unknown:
            raise ValueError(f"unknown graph keys: {sorted(unknown)}")
        missing = {"n_agents", "edges"} - set(data)
        if missing:
            raise ValueError(f"graph dict is missing keys: {sorted(missing)}")
        return cls.from_edges(data["n_agents"], data["edges"], data.get("positions"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists only) that ``from_dict`` reads back exactly."""
        return {
            "n_agents": self.n_agents,
            "edges": [[i, j] for i, j in self.edges],
            "positions": None if self.positions is None else [list(p) for p in self.positions],
        }

    # queries ----------------------------------------------------------------
    def _check_agent(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"agent id must be an int, got {type(i).__name__}")
        if not 0 <= i < self.n_agents:
            raise ValueError(f"agent id {i} is out of range 0..{self.n_agents - 1}")

    def neighbors(self, i: int) -> tuple[int, ...]:
        """Sorted neighbour ids of agent ``i``."""
        self._check_agent(i)
        return self._adjacency[i]

    def degree(self, i: int) -> int:
        return len(self.neighbors(i))

    @property
    def max_degree(self) -> int:
        return max(len(a) for a in self._adjacency)

    @property
    def average_degree(self) -> float:
        return 2.0 * len(self.edges) / self.n_agents

    def low_degree_agents(self, k: int) -> list[int]:
        """Agents with fewer than ``k`` neighbours, in increasing id order.

        Empty when every agent has at least ``k`` neighbours, so callers that
        need, e.g., two neighbours per agent can refuse a graph with
        ``if graph.low_degree_agents(2): ...``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__} ({k!r})")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return [i for i, a in enumerate(self._adjacency) if len(a) < k]

    def components(self) -> list[list[int]]:
        """Connected components as sorted id lists, ordered by smallest id."""
        return _components(self.n_agents, self.edges)

    def is_connected(self) -> bool:
        return len(self.components()) == 1

    def to_networkx(self) -> Any:
        """A ``networkx.Graph`` copy (node attribute ``pos`` for geometric graphs)."""
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.n_agents))
        g.add_edges_from(self.edges)
        if self.positions is not None:
            nx.set_node_attributes(g, dict(enumerate(self.positions)), "pos")
        return g


# random graph generation -----------------------------------------------------


def _pair_cdf_unit_square(r: float) -> float:
    """P(|U - V| <= r) for U, V uniform in the unit square (boundary effects included)."""
    if r <= 0.0:
        return 0.0
    if r >= math.sqrt(2.0):
        return 1.0
    if r <= 1.0:
        return math.pi * r**2 - 8.0 / 3.0 * r**3 + 0.5 * r**4
    s = math.sqrt(r**2 - 1.0)
    return (
        1.0 / 3.0
        + 4.0 / 3.0 * (2.0 * r**2 + 1.0) * s
        - 2.0 * r**2
        - 0.5 * r**4
        + 4.0 * r**2 * math.asin(1.0 / r)
        - math.pi * r**2
    )


def expected_geometric_degree(n_agents: int, radius: float) -> float:
    """Expected average degree of a random geometric graph in the unit square."""
    return (n_agents - 1) * _pair_cdf_unit_square(radius)


def geometric_radius_for_degree(n_agents: int, degree: float) -> float:
    """Radius whose expected average degree (before any connectivity rejection) is ``degree``.

    For reporting and for callers that want a fixed radius; ``make_graph`` with
    ``degree`` instead targets the degree per draw (see ``_geometric_edges``).
    """
    if n_agents < 2 or not 0.0 < degree <= n_agents - 1:
        raise ValueError(f"degree must be in (0, n_agents - 1={n_agents - 1}], got {degree}")
    target = degree / (n_agents - 1)
    lo, hi = 0.0, math.sqrt(2.0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _pair_cdf_unit_square(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def _ring_edges(n: int) -> list[Edge]:
    if n == 1:
        return []
    if n == 2:
        return [(0, 1)]
    return [(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)]


def _complete_edges(n: int) -> list[Edge]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _erdos_renyi_edges(n: int, p: float, rng: np.random.Generator) -> list[Edge]:
    pairs = _complete_edges(n)
    keep = rng.random(len(pairs)) < p
    return [e for e, k in zip(pairs, keep, strict=True) if k]


def _geometric_edges(
    n: int, radius: float | None, degree: float | None, rng: np.random.Generator
) -> tuple[list[Edge], np.ndarray]:
    """Edges between points closer than the radius.

    With ``degree``, the radius of each draw is the distance of the m-th
    closest pair (m = round(degree * n / 2)), so the average degree is the
    requested one up to rounding rather than only in expectation; the
    expectation-based radius would drift upwards once disconnected draws are
    rejected.
    """
    points = rng.random((n, 2))
    pairs = _complete_edges(n)
    if not pairs:
        return [], points
    dist = np.array([math.dist(points[i], points[j]) for i, j in pairs])
    if degree is not None:
        m = min(len(pairs), max(1, round(degree * n / 2.0)))
        chosen = np.argsort(dist, kind="stable")[:m]
        return sorted(pairs[c] for c in chosen), points
    limit = math.inf if radius is None else radius
    return [e for e, d in zip(pairs, dist, strict=True) if d <= limit], points


def _small_world_edges(n: int, k: int, rewire: float, rng: np.random.Generator) -> list[Edge]:
    """Watts–Strogatz: ring lattice with k/2 neighbours per side, then rewiring."""
    adjacency: list[set[int]] = [set() for _ in range(n)]
    for u in range(n):
        for step in range(1, k // 2 + 1):
            v = (u + step) % n
            adjacency[u].add(v)
            adjacency[v].add(u)
    for step in range(1, k // 2 + 1):
        for u in range(n):
            v = (u + step) % n
            if v not in adjacency[u] or rng.random() >= rewire:
                continue
            candidates = [w for w in range(n) if w != u and w not in adjacency[u]]
            if not candidates:
                continue
            w = candidates[int(rng.integers(len(candidates)))]
            adjacency[u].discard(v)
            adjacency[v].discard(u)
            adjacency[u].add(w)
            adjacency[w].add(u)
    return sorted({(min(u, v), max(u, v)) for u in range(n) for v in adjacency[u]})


def _check_min_degree(value: object, n: int) -> int:
    """``min_degree`` as an int in [1, n - 1], else ``ValueError`` naming the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"min_degree must be an int between 1 and n_agents - 1 = {n - 1}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not 1 <= int(value) <= n - 1:
        raise ValueError(f"min_degree must be between 1 and n_agents - 1 = {n - 1}, got {value}")
    return int(value)


def _raise_degree_nearest(
    n: int, edges: Iterable[Edge], min_degree: int, distance: Any
) -> list[Edge]:
    """Connect each agent with fewer than ``min_degree`` neighbours to its nearest non-neighbours.

    Agents are visited in id order; a deficient agent gains edges to the
    non-neighbours with the smallest ``distance(i, j)``, ties broken by id.
    Deterministic: no randomness is drawn.
    """
    adjacency: list[set[int]] = [set() for _ in range(n)]
    for i, j in edges:
        adjacency[i].add(j)
        adjacency[j].add(i)
    for i in range(n):
        need = min_degree - len(adjacency[i])
        if need <= 0:
            continue
        candidates = sorted(
            (j for j in range(n) if j != i and j not in adjacency[i]),
            key=lambda j: (distance(i, j), j),
        )
        for j in candidates[:need]:
            adjacency[i].add(j)
            adjacency[j].add(i)
    return sorted({(min(u, v), max(u, v)) for u in range(n) for v in adjacency[u]})


def _raise_degree_random(
    n: int, edges: Iterable[Edge], min_degree: int, rng: np.random.Generator
) -> list[Edge]:
    """Connect each agent with fewer than ``min_degree`` neighbours to random non-neighbours.

    Agents are visited in id order and gain one edge at a time, to a
    non-neighbour drawn uniformly with ``rng`` from those that are themselves
    still deficient, or from all non-neighbours when none is. Draws nothing
    when no agent is deficient, so such graphs keep the rng state unchanged.
    """
    adjacency: list[set[int]] = [set() for _ in range(n)]
    for i, j in edges:
        adjacency[i].add(j)
        adjacency[j].add(i)
    for i in range(n):
        while len(adjacency[i]) < min_degree:
            others = [j for j in range(n) if j != i and j not in adjacency[i]]
            deficient = [j for j in others if len(adjacency[j]) < min_degree]
            pool = deficient or others
            j = pool[int(rng.integers(len(pool)))]
            adjacency[i].add(j)
            adjacency[j].add(i)
    return sorted({(min(u, v), max(u, v)) for u in range(n) for v in adjacency[u]})


def _describe(kind: str, n_agents: int, params: Mapping[str, object]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
    return f"{kind} graph with n_agents={n_agents}" + (f", {shown}" if shown else "")


def _check_number(name: str, value: object, low: float, high: float, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    ok = (v > low if low_open else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value}")
    return v


def make_graph(
    kind: str,
    n_agents: int,
    *,
    rng: np.random.Generator,
    degree: float | None = None,
    p: float | None = None,
    radius: float | None = None,
    k: int | None = None,
    rewire: float | None = None,
    min_degree: int | None = None,
    max_tries: int = 100,
) -> Graph:
    """Build a connected communication graph of the given kind.

    - ``ring``, ``complete``: no parameters.
    - ``erdos_renyi``: ``p``, or ``degree`` giving p = degree / (n_agents - 1).
    - ``geometric``: points uniform in the unit square, edges within ``radius``;
      or ``degree``: the radius of each draw is set so that the average degree
      equals ``degree`` (up to rounding to whole edges).
    - ``small_world``: Watts–Strogatz with even ``k`` (or ``degree`` rounded to
      an even k) and rewiring probability ``rewire`` (default 0.1).

    Random kinds redraw from the same ``rng`` until the graph is connected and
    raise ``ValueError`` after ``max_tries`` draws. Parameters that a kind does
    not use are an error, not ignored.

    ``min_degree`` (an int in [1, n_agents - 1]; every kind accepts it)
    guarantees that every agent has at least that many neighbours, e.g. 2 for
    a secure-aggregation exchange. After the connected draw, agents with too
    few neighbours are visited in id order and gain edges (only ever added,
    so the graph stays connected):

    - ``geometric``: to their nearest non-neighbours by Euclidean distance
      between the drawn points, ties broken by id (no further randomness);
    - ``ring``: to their nearest non-neighbours around the ring (cyclic id
      distance), ties broken by id; ``complete`` already has n_agents - 1;
    - ``erdos_renyi``, ``small_world``: to non-neighbours drawn one at a time
      from the same ``rng`` (so the seed fixes the result), preferring agents
      that are themselves still below ``min_degree``.

    A geometric graph so raised is no longer a pure threshold graph and its
    average degree exceeds ``degree``. ``min_degree=None`` (the default) adds
    nothing and draws nothing extra: graphs are the same as without it.
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; expected one of {list(GRAPH_KINDS)}")
    if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)):
        raise TypeError(f"n_agents must be an int, got {type(n_agents).__name__}")
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be an int >= 1, got {max_tries!r}")
    n = int(n_agents)
    need = None if min_degree is None else _check_min_degree(min_degree, n)

    given = {"degree": degree, "p": p, "radius": radius, "k": k, "rewire": rewire}
    allowed = {
        "ring": set(),
        "complete": set(),
        "erdos_renyi": {"degree", "p"},
        "geometric": {"degree", "radius"},
        "small_world": {"degree", "k", "rewire"},
    }[kind]
    extra = sorted(name for name, v in given.items() if v is not None and name not in allowed)
    if extra:
        accepts = ", ".join(sorted(allowed)) or "no parameters"
        raise ValueError(f"{kind} graph does not take {', '.join(extra)} (it accepts {accepts})")

    if kind == "ring":
        ring = _ring_edges(n)
        if need is not None:

            def around(i: int, j: int) -> int:
                return min((i - j) % n, (j - i) % n)

            ring = _raise_degree_nearest(n, ring, need, around)
        return Graph.from_edges(n, ring)
    if kind == "complete":
        return Graph.from_edges(n, _complete_edges(n))
    if n == 1:  # a single agent is trivially connected; nothing to draw
        return Graph(1, ())

    draw: Any
    if kind == "erdos_renyi":
        if (p is None) == (degree is None):
            raise ValueError("erdos_renyi graph needs exactly one of p or degree")
        if degree is not None:
            deg = _check_number("degree", degree, 0.0, n - 1, low_open=True)
            prob = deg / (n - 1)
        else:
            prob = _check_number("p", p, 0.0, 1.0, low_open=True)

        def draw() -> tuple[list[Edge], np.ndarray | None]:
            return _erdos_renyi_edges(n, prob, rng), None

    elif kind == "geometric":
        if (radius is None) == (degree is None):
            raise ValueError("geometric graph needs exactly one of radius or degree")
        if degree is not None:
            geo_degree: float | None = _check_number("degree", degree, 0.0, n - 1, low_open=True)
            geo_radius: float | None = None
        else:
            geo_degree = None
            geo_radius = _check_number("radius", radius, 0.0, math.sqrt(2.0), low_open=True)

        def draw() -> tuple[list[Edge], np.ndarray | None]:
            return _geometric_edges(n, geo_radius, geo_degree, rng)

    else:  # small_world
        if (k is None) == (degree is None):
            raise ValueError("small_world graph needs exactly one of k or degree")
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"k must be an int, got {type(k).__name__} ({k!r})")
            lattice_k = int(k)
        else:
            deg = _check_number("degree", degree, 0.0, n - 1, low_open=True)
            lattice_k = max(2, 2 * round(deg / 2.0))
        if lattice_k % 2 or not 2 <= lattice_k < n:
            raise ValueError(
                f"small_world k must be even with 2 <= k < n_agents={n}, got {lattice_k}"
            )
        beta = 0.1 if rewire is None else _check_number("rewire", rewire, 0.0, 1.0, low_open=False)
        given["k"], given["rewire"], given["degree"] = lattice_k, beta, None

        def draw() -> tuple[list[Edge], np.ndarray | None]:
            return _small_world_edges(n, lattice_k, beta, rng), None

    for _ in range(max_tries):
        edges, points = draw()
        if len(_components(n, edges)) == 1:
            break
    else:
        raise ValueError(
            f"could not draw a connected {_describe(kind, n, given)} in {max_tries} tries; "
            "raise the density (degree/p/radius/k) or max_tries"
        )
    positions = None
    if points is not None:
        positions = tuple((float(x), float(y)) for x, y in points)
    if need is not None:
        if positions is not None:
            pos = positions

            def apart(i: int, j: int) -> float:
                return math.dist(pos[i], pos[j])

            edges = _raise_degree_nearest(n, edges, need, apart)
        else:
            edges = _raise_degree_random(n, edges, need, rng)
    return Graph(n, tuple(sorted(edges)), positions)
