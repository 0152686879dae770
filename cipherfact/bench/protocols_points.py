"""Run one benchmark point and flatten its ``summary.json`` into a result row.

Why flatten here: the three protocols' summaries name their numbers
differently (``rel_error`` vs ``test_rmse``; crypto/compute/transport seconds
vs seconds per party), and the CSV, the table and the plots need one shape.
A field a protocol does not measure is ``None``, never a made-up zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cipherfact.bench.protocols_plan import PointSpec
from cipherfact.simulations.results import read_metrics

__all__ = ["CSV_FIELDS", "accuracy_history", "point_row", "run_point"]

#: scalar columns of ``points.csv`` (``points.json`` also holds the nested dicts)
CSV_FIELDS = (
    "label",
    "sweep",
    "protocol",
    "scheme",
    "mode",
    "packing",
    "n_agents",
    "n_users",
    "topology",
    "degree_mean",
    "data_rows",
    "data_cols",
    "rank",
    "ckks_params",
    "key_bits",
    "insecure_test_keys",
    "iterations",
    "accuracy_metric",
    "accuracy",
    "twin_accuracy",
    "reference_accuracy",
    "accuracy_deterministic",
    "wall_s",
    "crypto_s",
    "compute_s",
    "transport_s",
    "bytes_total",
    "bytes_per_party_mean",
    "bytes_per_party_max",
    "bytes_per_edge_mean",
    "bytes_per_edge_max",
    "network_latency_ms",
    "network_bandwidth_mbps",
    "simulated_network_s",
    "seed",
)


def run_point(spec: PointSpec, out_dir: Path) -> dict[str, Any]:
    """Simulate ``spec`` in-memory into ``out_dir`` and return its row."""
    from cipherfact.simulations.network import NetworkModel
    from cipherfact.simulations.scenario import load_scenario
    from cipherfact.simulations.simulate import SimOptions, simulate

    scenario = load_scenario(spec.scenario, list(spec.overrides))
    network = None
    if spec.network is not None:
        latency_ms, bandwidth_mbps = spec.network
        network = NetworkModel(
            latency_ms=latency_ms, bandwidth_mbps=bandwidth_mbps, seed=scenario.seed
        )
    options = SimOptions(backend="inmemory", progress=False, network=network)
    return point_row(spec, simulate(scenario, out_dir, options=options))


def _party_bytes(summary: dict[str, Any]) -> list[int]:
    """Bytes sent + received by each party (ppdnmf: agents; recsys: roles)."""
    if "traffic_per_agent" in summary:
        parties = summary["traffic_per_agent"].values()
        return [int(t["bytes_sent"]) + int(t["bytes_received"]) for t in parties]
    parties = summary.get("bytes_per_party", {}).values()
    return [int(t["sent"]) + int(t["received"]) for t in parties]


def _stats(values: list[int]) -> tuple[float | None, int | None]:
    return (sum(values) / len(values), max(values)) if values else (None, None)


def point_row(spec: PointSpec, summary: dict[str, Any]) -> dict[str, Any]:
    """One row: swept parameters, accuracy, time split, bytes, provenance."""
    if summary.get("status") != "completed":
        raise ValueError(f"point {spec.label!r} did not complete: {summary.get('status')!r}")
    protocol = summary["protocol"]
    scenario = summary["scenario"]
    crypto = scenario.get("crypto", {})
    ppdnmf = protocol == "ppdnmf"
    seconds = summary.get("seconds", {})
    edges = [int(b) for b in summary.get("traffic", {}).get("bytes_by_edge", {}).values()]
    party_mean, party_max = _stats(_party_bytes(summary))
    edge_mean, edge_max = _stats(edges)
    scheme = "ckks" if protocol == "csr_fhe_mf" else summary.get("scheme", crypto.get("scheme"))
    network = summary.get("network") or {}
    graph = summary.get("graph") or {}
    shape = summary.get("data_shape") or [None, None]
    row: dict[str, Any] = {
        "label": spec.label,
        "sweep": spec.sweep,
        "protocol": protocol,
        "scheme": scheme,
        "mode": summary.get("mode"),
        "packing": None if protocol != "fedmf" else not summary.get("naive", False),
        "n_agents": summary.get("n_agents"),
        "n_users": summary.get("n_users"),
        # ppdnmf only; ring/complete are spelled small_world/erdos_renyi (see plan)
        "topology": spec.swept.get("topology", scenario.get("topology", {}).get("kind")),
        "degree_mean": graph.get("average_degree"),
        "data_rows": shape[0],
        "data_cols": shape[1],
        "rank": scenario.get("rank") if ppdnmf else scenario.get("n_factors"),
        "ckks_params": summary.get("ckks_params"),
        "key_bits": crypto.get("key_bits") if scheme == "paillier" else None,
        "insecure_test_keys": bool(crypto.get("insecure_test_keys", False)),
        "iterations": summary.get("outer_iters_completed", summary.get("epochs")),
        "accuracy_metric": "rel_error" if ppdnmf else "test_rmse",
        "accuracy": summary["rel_error"] if ppdnmf else summary["test_rmse"],
        "twin_accuracy": summary.get(
            "decentralized_plain_rel_error" if ppdnmf else "plain_test_rmse"
        ),
        "reference_accuracy": summary.get(
            "centralized_rel_error" if ppdnmf else "mf_reference_test_rmse"
        ),
        # CKKS encrypts with OS randomness: its noise, hence the last digits, varies
        "accuracy_deterministic": protocol != "csr_fhe_mf",
        "wall_s": summary["wall_s"],
        "crypto_s": seconds.get("crypto"),
        "compute_s": seconds.get("compute"),
        "transport_s": seconds.get("transport"),
        "bytes_total": summary["bytes_total"],
        "bytes_per_party_mean": party_mean,
        "bytes_per_party_max": party_max,
        "bytes_per_edge_mean": edge_mean,
        "bytes_per_edge_max": edge_max,
        "network_latency_ms": network.get("latency_ms"),
        "network_bandwidth_mbps": network.get("bandwidth_mbps"),
        # None: no network model ran for this point (recsys), never a made-up 0
        "simulated_network_s": summary.get("simulated_network_s"),
        "seed": scenario["seed"],
        "swept": dict(spec.swept),
        "overrides": list(spec.overrides),
        "seconds_per_party": summary.get("seconds_per_party"),
        "bytes_per_party": summary.get("bytes_per_party", summary.get("traffic_per_agent")),
        "bytes_by_edge": summary.get("traffic", {}).get("bytes_by_edge"),
        "scenario": scenario,
        "versions": summary["versions"],
        "machine": summary["machine"],
    }
    if not math.isfinite(row["accuracy"]):
        raise ValueError(f"point {spec.label!r} has a non-finite accuracy {row['accuracy']!r}")
    return row


def accuracy_history(point_dir: Path, metric: str) -> list[float]:
    """Accuracy per outer iteration / epoch, read back from ``metrics.jsonl``."""
    return [float(m[metric]) for m in read_metrics(point_dir / "metrics.jsonl") if metric in m]
