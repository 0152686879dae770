"""PNG of the agents' graph, nodes coloured by traffic, edges sized by bytes.

Shows at a glance where a protocol's cost lands: in ppdnmf an agent's traffic
grows with its degree, so hubs of the graph stand out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx

from cipherfact.agents.envelope import AgentId
from cipherfact.simulations.topology import Graph


def plot_traffic_graph(
    path: str | Path,
    graph: Graph,
    agent_bytes: Mapping[AgentId, int],
    edge_bytes: Mapping[tuple[AgentId, AgentId], int],
    title: str,
    *,
    layout_seed: int = 0,
) -> Path:
    """``agent_bytes``: bytes sent + received per agent (node colour);
    ``edge_bytes``: bytes per directed edge, summed both ways (edge width).
    Geometric graphs keep their coordinates; others get a seeded spring layout."""
    missing = [i for i in range(graph.n_agents) if i not in agent_bytes]
    if missing:
        raise ValueError(f"agent_bytes lacks agents {missing[:10]}")
    g = graph.to_networkx()
    if graph.positions is not None:
        pos = dict(enumerate(graph.positions))
    else:
        pos = nx.spring_layout(g, seed=layout_seed)
    nodes = list(range(graph.n_agents))
    colours = [agent_bytes[i] / 1e6 for i in nodes]
    undirected = {
        (i, j): edge_bytes.get((i, j), 0) + edge_bytes.get((j, i), 0) for i, j in graph.edges
    }
    top = max(undirected.values(), default=0) or 1
    widths = [0.5 + 3.5 * undirected[e] / top for e in graph.edges]
    big = graph.n_agents > 60
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    nx.draw_networkx_edges(g, pos, edgelist=list(graph.edges), width=widths, alpha=0.5, ax=ax)
    drawn = nx.draw_networkx_nodes(
        g,
        pos,
        nodelist=nodes,
        node_color=colours,
        cmap="viridis",
        node_size=40 if big else 300,
        ax=ax,
    )
    if not big:
        nx.draw_networkx_labels(g, pos, font_size=8, font_color="white", ax=ax)
    fig.colorbar(drawn, ax=ax, label="MB sent + received per agent")
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def per_agent_traffic(
    n_agents: int,
    bytes_by_edge: Mapping[tuple[AgentId, AgentId], int],
    messages_by_edge: Mapping[tuple[AgentId, AgentId], int],
) -> dict[AgentId, dict[str, int]]:
    """Bytes and messages sent and received by each agent (payload bytes)."""
    out = {
        i: {"bytes_sent": 0, "bytes_received": 0, "messages_sent": 0, "messages_received": 0}
        for i in range(n_agents)
    }
    for (s, r), b in bytes_by_edge.items():
        out[s]["bytes_sent"] += b
        out[r]["bytes_received"] += b
    for (s, r), m in messages_by_edge.items():
        out[s]["messages_sent"] += m
        out[r]["messages_received"] += m
    return out
