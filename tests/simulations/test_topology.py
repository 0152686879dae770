"""Tests for communication graph topologies."""

import json
import math

import networkx as nx
import numpy as np
import pytest

from cipherfact.simulations.topology import (
    GRAPH_KINDS,
    Graph,
    expected_geometric_degree,
    geometric_radius_for_degree,
    make_graph,
)

KIND_PARAMS = [
    ("ring", {}),
    ("complete", {}),
    ("erdos_renyi", {"degree": 3}),
    ("erdos_renyi", {"p": 0.4}),
    ("geometric", {"degree": 3}),
    ("geometric", {"radius": 0.5}),
    ("small_world", {"k": 4, "rewire": 0.2}),
    ("small_world", {"degree": 3}),
]


@pytest.mark.parametrize(("kind", "params"), KIND_PARAMS)
@pytest.mark.parametrize("n", [2, 3, 10, 25])
def test_every_kind_connected_and_deterministic(kind: str, params: dict, n: int) -> None:
    if kind == "small_world" and n <= 4:
        pytest.skip("k=4 lattice needs more than 4 agents")
    if "degree" in params:
        params = {**params, "degree": min(params["degree"], n - 1)}
    a = make_graph(kind, n, rng=np.random.default_rng(5), **params)
    b = make_graph(kind, n, rng=np.random.default_rng(5), **params)
    assert a == b
    assert a.positions == b.positions
    assert a.n_agents == n
    assert a.is_connected()
    assert nx.is_connected(a.to_networkx())
    assert list(a.edges) == sorted(a.edges)
    assert all(i < j for i, j in a.edges)


@pytest.mark.parametrize(
    ("kind", "params"), [kp for kp in KIND_PARAMS if kp[0] not in ("ring", "complete")]
)
def test_random_kinds_depend_on_seed(kind: str, params: dict) -> None:
    graphs = {make_graph(kind, 20, rng=np.random.default_rng(s), **params).edges for s in range(5)}
    assert len(graphs) > 1


def test_ring_and_complete_structure() -> None:
    ring = make_graph("ring", 5, rng=np.random.default_rng(0))
    assert ring.edges == ((0, 1), (0, 4), (1, 2), (2, 3), (3, 4))
    assert ring.neighbors(0) == (1, 4)
    assert {ring.degree(i) for i in range(5)} == {2}
    complete = make_graph("complete", 4, rng=np.random.default_rng(0))
    assert len(complete.edges) == 6 and complete.max_degree == 3
    assert complete.average_degree == 3.0
    single = make_graph("ring", 1, rng=np.random.default_rng(0))
    assert single.edges == () and single.is_connected() and single.max_degree == 0


@pytest.mark.parametrize("seed", range(5))
def test_geometric_degree_targeting_paper_setup(seed: int) -> None:
    g = make_graph("geometric", 10, degree=3, rng=np.random.default_rng(seed))
    assert g.average_degree == pytest.approx(3.0)  # 15 edges: exact, not just on average
    assert g.positions is not None and len(g.positions) == 10
    assert all(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 for x, y in g.positions)
    # it is a genuine geometric graph: every edge is shorter than every non-edge
    dist = {
        (i, j): math.dist(g.positions[i], g.positions[j])
        for i in range(10)
        for j in range(i + 1, 10)
    }
    longest_edge = max(dist[e] for e in g.edges)
    assert all(d > longest_edge for e, d in dist.items() if e not in set(g.edges))


def test_geometric_radius_respected() -> None:
    g = make_graph("geometric", 15, radius=0.5, rng=np.random.default_rng(2))
    assert g.positions is not None
    edges = set(g.edges)
    for i in range(15):
        for j in range(i + 1, 15):
            close = math.dist(g.positions[i], g.positions[j]) <= 0.5
            assert close == ((i, j) in edges)


def test_erdos_renyi_degree_near_target_over_seeds() -> None:
    degrees = [
        make_graph("erdos_renyi", 30, degree=4, rng=np.random.default_rng(s)).average_degree
        for s in range(20)
    ]
    assert abs(np.mean(degrees) - 4.0) < 0.6


def test_small_world_degree_preserved_by_rewiring() -> None:
    g = make_graph("small_world", 20, k=4, rewire=0.3, rng=np.random.default_rng(1))
    assert len(g.edges) == 20 * 4 // 2
    lattice = make_graph("small_world", 20, k=4, rewire=0.0, rng=np.random.default_rng(1))
    assert {lattice.degree(i) for i in range(20)} == {4}
    assert g.edges != lattice.edges


def test_expected_geometric_degree_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((200_000, 2)), rng.random((200_000, 2))
    d = np.linalg.norm(a - b, axis=1)
    for r in (0.2, 0.6, 1.1, 1.35):
        assert expected_geometric_degree(2, r) == pytest.approx(np.mean(d <= r), abs=0.004)
    r = geometric_radius_for_degree(10, 3)
    assert expected_geometric_degree(10, r) == pytest.approx(3.0)
    assert 0.38 < r < 0.40
    with pytest.raises(ValueError, match=r"degree must be in \(0, n_agents - 1=9\], got 10"):
        geometric_radius_for_degree(10, 10)


def test_failure_to_connect_names_kind_params_and_tries() -> None:
    with pytest.raises(
        ValueError,
        match=r"could not draw a connected erdos_renyi graph with n_agents=30, p=0\.01 in 7 tries",
    ):
        make_graph("erdos_renyi", 30, p=0.01, max_tries=7, rng=np.random.default_rng(0))
    with pytest.raises(
        ValueError, match=r"connected geometric graph with n_agents=40, radius=0\.05"
    ):
        make_graph("geometric", 40, radius=0.05, max_tries=3, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kind", "n", "params", "exc", "match"),
    [
        ("star", 5, {}, ValueError, "unknown graph kind 'star'"),
        ("ring", 0, {}, ValueError, "n_agents must be >= 1, got 0"),
        (
            "ring",
            5,
            {"degree": 3},
            ValueError,
            r"ring graph does not take degree \(it accepts no parameters\)",
        ),
        (
            "erdos_renyi",
            5,
            {"radius": 0.3, "p": 0.5},
            ValueError,
            "erdos_renyi graph does not take radius",
        ),
        ("erdos_renyi", 5, {}, ValueError, "needs exactly one of p or degree"),
        ("erdos_renyi", 5, {"p": 0.5, "degree": 2}, ValueError, "needs exactly one of p or degree"),
        ("erdos_renyi", 5, {"p": 1.5}, ValueError, r"p must be in \(0, 1\], got 1.5"),
        ("erdos_renyi", 5, {"degree": 5}, ValueError, r"degree must be in \(0, 4\], got 5"),
        ("geometric", 5, {}, ValueError, "needs exactly one of radius or degree"),
        ("geometric", 5, {"radius": 0}, ValueError, "radius must be in"),
        ("geometric", 5, {"radius": "big"}, TypeError, "radius must be a number"),
        (
            "small_world",
            10,
            {"k": 3},
            ValueError,
            "small_world k must be even with 2 <= k < n_agents=10, got 3",
        ),
        ("small_world", 4, {"k": 4}, ValueError, "k must be even with 2 <= k < n_agents=4"),
        ("small_world", 10, {"k": 4, "rewire": 2.0}, ValueError, r"rewire must be in \[0, 1\]"),
        ("small_world", 10, {"rewire": 0.1}, ValueError, "needs exactly one of k or degree"),
    ],
)
def test_make_graph_validation(kind: str, n: int, params: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make_graph(kind, n, rng=np.random.default_rng(0), **params)


def test_rng_and_max_tries_validation() -> None:
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        make_graph("ring", 3, rng=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tries must be an int >= 1, got 0"):
        make_graph("ring", 3, rng=np.random.default_rng(0), max_tries=0)


def test_from_edges_normalizes() -> None:
    g = Graph.from_edges(4, [(1, 0), [2, 1], (0, 1), (3, 2)])
    assert g.edges == ((0, 1), (1, 2), (2, 3))
    assert g.neighbors(1) == (0, 2)
    assert g.degree(3) == 1
    assert g.max_degree == 2
    assert g.average_degree == pytest.approx(1.5)
    assert g.positions is None


@pytest.mark.parametrize(
    ("n", "edges", "exc", "match"),
    [
        (3, [(0, 1)], ValueError, r"graph is not connected: components \[\[0, 1\], \[2\]\]"),
        (4, [(0, 2), (1, 3)], ValueError, r"components \[\[0, 2\], \[1, 3\]\]"),
        (3, [(0, 1), (1, 1)], ValueError, "self loop on agent 1"),
        (3, [(0, 1), (1, 3)], ValueError, r"agent id 3 in edge \(1, 3\) is out of range 0..2"),
        (3, [(0, -1)], ValueError, "agent id -1"),
        (3, [(0, 1, 2)], ValueError, "must have exactly two agent ids"),
        (3, [(0, 1.0)], TypeError, "agent ids must be ints"),
        (0, [], ValueError, "n_agents must be >= 1"),
    ],
)
def test_from_edges_rejects(n: int, edges: list, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Graph.from_edges(n, edges)


def test_constructor_checks_structure() -> None:
    with pytest.raises(ValueError, match="edges must be sorted and unique"):
        Graph(3, ((1, 2), (0, 1)))
    with pytest.raises(ValueError, match=r"edge \(1, 0\) must satisfy 0 <= i < j"):
        Graph(3, ((1, 0),))
    with pytest.raises(ValueError, match="positions has 1 entries but n_agents is 2"):
        Graph(2, ((0, 1),), ((0.0, 0.0),))


def test_neighbors_out_of_range() -> None:
    g = make_graph("ring", 3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"agent id 3 is out of range 0\.\.2"):
        g.neighbors(3)


@pytest.mark.parametrize(
    ("kind", "params"), [("geometric", {"degree": 3}), ("small_world", {"k": 2})]
)
def test_dict_json_roundtrip(kind: str, params: dict) -> None:
    g = make_graph(kind, 10, rng=np.random.default_rng(4), **params)
    back = Graph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back == g
    assert back.positions == g.positions


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown graph keys: \['weights'\]"):
        Graph.from_dict({"n_agents": 2, "edges": [[0, 1]], "weights": []})
    with pytest.raises(ValueError, match=r"missing keys: \['edges'\]"):
        Graph.from_dict({"n_agents": 2})
    with pytest.raises(ValueError, match="graph is not connected"):
        Graph.from_dict({"n_agents": 3, "edges": [[0, 1]]})


def test_to_networkx_carries_positions() -> None:
    g = make_graph("geometric", 6, radius=0.8, rng=np.random.default_rng(0))
    nxg = g.to_networkx()
    assert sorted(nxg.nodes) == list(range(6))
    assert sorted(tuple(sorted(e)) for e in nxg.edges) == list(g.edges)
    assert nxg.nodes[2]["pos"] == g.positions[2]  # type: ignore[index]


def test_kinds_constant() -> None:
    assert set(GRAPH_KINDS) == {"ring", "complete", "erdos_renyi", "geometric", "small_world"}


# min_degree ------------------------------------------------------------------

# make_graph(kind, 10, rng=default_rng(3), **params).edges before min_degree existed
SNAPSHOT_SEED3_N10 = {
    ("erdos_renyi", "degree"): (
        (0, 1), (0, 2), (0, 5), (0, 8), (1, 2), (1, 9), (2, 5), (2, 6), (2, 8), (2, 9),
        (3, 8), (4, 6), (4, 9), (5, 7), (6, 7),
    ),
    ("geometric", "degree"): (
        (0, 2), (1, 6), (1, 7), (1, 9), (2, 5), (2, 6), (2, 8), (3, 4), (3, 5), (3, 9),
        (4, 9), (5, 6), (5, 8), (5, 9), (6, 8),
    ),
    ("small_world", "k"): (
        (0, 2), (0, 3), (0, 9), (1, 2), (1, 3), (1, 8), (1, 9), (2, 3), (2, 4), (2, 6),
        (3, 5), (3, 6), (4, 5), (4, 6), (4, 7), (5, 6), (5, 7), (6, 8), (7, 9), (8, 9),
    ),
}  # fmt: skip


@pytest.mark.parametrize(("kind", "params"), KIND_PARAMS)
@pytest.mark.parametrize("n", [3, 10, 25])
@pytest.mark.parametrize("seed", range(8))
def test_min_degree_two_every_kind(kind: str, params: dict, n: int, seed: int) -> None:
    if kind == "small_world" and n <= 4:
        pytest.skip("k=4 lattice needs more than 4 agents")
    if "degree" in params:
        params = {**params, "degree": min(params["degree"], n - 1)}
    g = make_graph(kind, n, rng=np.random.default_rng(seed), min_degree=2, **params)
    assert min(g.degree(i) for i in range(n)) >= 2
    assert g.low_degree_agents(2) == []
    assert g.is_connected()
    again = make_graph(kind, n, rng=np.random.default_rng(seed), min_degree=2, **params)
    assert again == g and again.positions == g.positions
    # only edges are added, never removed, and the drawn points are kept
    plain = make_graph(kind, n, rng=np.random.default_rng(seed), **params)
    assert set(plain.edges) <= set(g.edges)
    assert plain.positions == g.positions
    if not plain.low_degree_agents(2):
        assert plain.edges == g.edges


@pytest.mark.parametrize("kind", ["erdos_renyi", "geometric", "small_world"])
def test_min_degree_actually_raises_some_draws(kind: str) -> None:
    params = {"small_world": {"k": 2, "rewire": 0.5}, "erdos_renyi": {"degree": 2}}.get(
        kind, {"degree": 3}
    )
    raised = 0
    for seed in range(20):
        plain = make_graph(kind, 20, rng=np.random.default_rng(seed), **params)
        g = make_graph(kind, 20, rng=np.random.default_rng(seed), min_degree=2, **params)
        assert g.low_degree_agents(2) == [] and g.is_connected()
        raised += plain.edges != g.edges
    assert raised > 0  # the test above is not vacuous for this kind


def test_min_degree_higher_values() -> None:
    for kind, params in KIND_PARAMS:
        g = make_graph(kind, 12, rng=np.random.default_rng(1), min_degree=5, **params)
        assert g.low_degree_agents(5) == [] and g.is_connected()
    full = make_graph("erdos_renyi", 6, p=0.5, rng=np.random.default_rng(0), min_degree=5)
    assert len(full.edges) == 15  # n_agents - 1 forces the complete graph


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("erdos_renyi", {"degree": 3}, ("erdos_renyi", "degree")),
        ("geometric", {"degree": 3}, ("geometric", "degree")),
        ("small_world", {"k": 4, "rewire": 0.2}, ("small_world", "k")),
    ],
)
def test_min_degree_none_leaves_graph_unchanged(kind: str, params: dict, key: tuple) -> None:
    a = make_graph(kind, 10, rng=np.random.default_rng(3), **params)
    b = make_graph(kind, 10, rng=np.random.default_rng(3), min_degree=None, **params)
    assert a.edges == b.edges == SNAPSHOT_SEED3_N10[key]
    assert a.positions == b.positions
    # the snapshot has agents of degree 1 for geometric, so the option matters there
    if kind == "geometric":
        assert a.low_degree_agents(2) == [0, 7]


def test_min_degree_does_not_consume_rng_when_already_satisfied() -> None:
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = make_graph("small_world", 10, k=4, rewire=0.1, rng=rng_a)
    b = make_graph("small_world", 10, k=4, rewire=0.1, rng=rng_b, min_degree=2)
    assert a == b
    assert rng_a.random() == rng_b.random()


def test_min_degree_ring_and_complete() -> None:
    ring = make_graph("ring", 6, rng=np.random.default_rng(0), min_degree=2)
    assert ring == make_graph("ring", 6, rng=np.random.default_rng(0))
    # degree 4 on a ring of 8: each agent joins its second neighbours around the ring
    wide = make_graph("ring", 8, rng=np.random.default_rng(0), min_degree=4)
    assert set(wide.edges) == {
        (min(i, (i + s) % 8), max(i, (i + s) % 8)) for i in range(8) for s in (1, 2)
    }
    assert make_graph("ring", 2, rng=np.random.default_rng(0), min_degree=1).edges == ((0, 1),)
    complete = make_graph("complete", 5, rng=np.random.default_rng(0), min_degree=4)
    assert len(complete.edges) == 10


def test_geometric_min_degree_adds_only_nearest_edges() -> None:
    # seed 3 (snapshot above): agents 0 and 7 have a single neighbour each
    plain = make_graph("geometric", 10, degree=3, rng=np.random.default_rng(3))
    g = make_graph("geometric", 10, degree=3, rng=np.random.default_rng(3), min_degree=2)
    assert g.positions == plain.positions and g.positions is not None
    assert plain.low_degree_agents(2) == [0, 7]
    pos = g.positions

    def nearest_non_neighbour(i: int) -> int:
        others = [j for j in range(10) if j != i and j not in plain.neighbors(i)]
        return min(others, key=lambda j: (math.dist(pos[i], pos[j]), j))

    n0, n7 = nearest_non_neighbour(0), nearest_non_neighbour(7)
    assert (n0, n7) == (3, 6)  # neither is the other deficient agent: both edges are needed
    assert set(g.edges) - set(plain.edges) == {(0, 3), (6, 7)}
    assert g.average_degree == pytest.approx(3.4)


def test_nearest_raising_hand_made_case() -> None:
    from cipherfact.simulations.topology import _raise_degree_nearest

    # points on a line: 0 at x=0, 1 at x=1, 2 at x=3, 3 at x=5, 4 at x=7 (path 0-1-2-3-4 plus 1-3)
    x = [0.0, 1.0, 3.0, 5.0, 7.0]

    def dist(i: int, j: int) -> float:
        return abs(x[i] - x[j])

    edges = [(0, 1), (1, 2), (1, 3), (2, 3), (3, 4)]
    # 0 (degree 1): non-neighbours 2 (3.0), 3 (5.0), 4 (7.0) -> joins 2.
    # 4 (degree 1): non-neighbours 2 (4.0), 1 (6.0), 0 (7.0) -> joins 2.
    assert _raise_degree_nearest(5, edges, 2, dist) == [
        (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)
    ]  # fmt: skip
    # ties go to the smaller id: 0 is equally far (2.0) from 1 and 2 and joins 1;
    # then 1 has two neighbours, and 2 joins its nearest non-neighbour 0 (2.0, not 1 at 4.0)
    y = [0.0, 2.0, -2.0, 5.0]

    def dist_y(i: int, j: int) -> float:
        return abs(y[i] - y[j])

    assert _raise_degree_nearest(4, [(0, 3), (1, 3), (2, 3)], 2, dist_y) == [
        (0, 1), (0, 2), (0, 3), (1, 3), (2, 3)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("n", "value", "match"),
    [
        (10, 12, r"min_degree must be between 1 and n_agents - 1 = 9, got 12"),
        (10, 10, r"min_degree must be between 1 and n_agents - 1 = 9, got 10"),
        (10, 0, r"min_degree must be between 1 and n_agents - 1 = 9, got 0"),
        (10, -1, r"min_degree must be between 1 and n_agents - 1 = 9, got -1"),
        (1, 1, r"min_degree must be between 1 and n_agents - 1 = 0, got 1"),
        (10, 2.0, r"min_degree must be an int between 1 and n_agents - 1 = 9, got 2\.0 \(float\)"),
        (10, True, r"min_degree must be an int .* got True \(bool\)"),
        (10, "2", r"min_degree must be an int .* got '2' \(str\)"),
    ],
)
@pytest.mark.parametrize("kind", ["ring", "complete", "geometric"])
def test_min_degree_validation(kind: str, n: int, value: object, match: str) -> None:
    params = {"degree": 1} if kind == "geometric" and n > 1 else {}
    with pytest.raises(ValueError, match=match):
        make_graph(kind, n, rng=np.random.default_rng(0), min_degree=value, **params)  # type: ignore[arg-type]


def test_low_degree_agents() -> None:
    g = Graph.from_edges(5, [(0, 1), (1, 2), (1, 3), (3, 4)])  # degrees 1, 3, 1, 2, 1
    assert g.low_degree_agents(2) == [0, 2, 4]
    assert g.low_degree_agents(3) == [0, 2, 3, 4]
    assert g.low_degree_agents(1) == []
    assert g.low_degree_agents(0) == []
    assert g.low_degree_agents(np.int64(4)) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    assert Graph(1, ()).low_degree_agents(1) == [0]
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        g.low_degree_agents(-1)
    with pytest.raises(TypeError, match="k must be an int"):
        g.low_degree_agents(2.0)  # type: ignore[arg-type]
