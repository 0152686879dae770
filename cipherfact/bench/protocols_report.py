"""Write a protocol sweep's outputs: points.csv/json, table.md and PNG plots.

Why kept apart from the runner: the outputs are rebuilt from rows and the
points' ``metrics.jsonl`` alone, so the table and the plots can be regenerated
without re-running a simulation.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cipherfact.bench.protocols_points import CSV_FIELDS, accuracy_history

__all__ = ["format_table", "write_outputs"]


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "bytes":
        return f"{value / 1e6:,.3f}" if value >= 1e4 else f"{value / 1e6:,.5f}"
    if isinstance(value, float):
        return f"{value:.6g}" if kind == "acc" else f"{value:,.2f}"
    return str(value)


def _sweep_cell(r: dict[str, Any]) -> str:
    """The swept parameter and its value, e.g. ``topology=ring``."""
    value = {
        "agents": r["n_agents"] if r["n_agents"] is not None else r["n_users"],
        "key_bits": r["key_bits"],
        "topology": f"{r['topology']} (deg {_fmt(r['degree_mean'])})",
        "data_size": f"{r['data_rows']}x{r['data_cols']}",
        "rank": r["rank"],
        "packing": r["packing"],
        "ckks_params": r["ckks_params"],
        "protocol": r["protocol"] + (f"-{r['mode']}" if r["mode"] else "") + f"/{r['scheme']}",
    }.get(r["sweep"], "")
    return f"{r['sweep']}={value}"


def _network_note(rows: Sequence[dict[str, Any]]) -> str:
    """Which network model the ``sim net s`` column assumes (from the rows themselves)."""
    models = sorted(
        {
            (r["network_latency_ms"], r["network_bandwidth_mbps"])
            for r in rows
            if r["simulated_network_s"] is not None
        },
        key=str,
    )
    if not models:
        return "No network model ran (sim net s is empty)."
    shown = "; ".join(f"{lat:g} ms latency, {bw:g} Mb/s per edge" for lat, bw in models)
    return (
        f"sim net s: simulated network time of the ppdnmf messages on {shown} "
        "(synchronous waves, no loss; see cipherfact.simulations.network), "
        "not measured and not included in wall s."
    )


def format_table(rows: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    """Markdown ready to paste: the exact command, machine and key caveat first."""
    machine = header["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    lines = [
        f"Command: `{header['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} logical cores, Python "
        f"{machine['python']}; {versions}. Seed {header['seed']}; sweep wall time "
        f"{header['wall_s']:.1f} s; load average at start {header['load_at_start']}.",
        "",
    ]
    if any(r["insecure_test_keys"] for r in rows):
        lines += [
            "**Test-sized keys:** Paillier points marked 1024* use 1024-bit keys with "
            "`crypto.insecure_test_keys=true` (fast, NOT secure); run without `--quick` "
            "for 2048/3072-bit keys.",
            "",
        ]
    cols = [
        "point",
        "sweep",
        "protocol",
        "scheme",
        "agents/users",
        "key bits",
        "iters",
        "accuracy",
        "no-crypto twin",
        "reference",
        "wall s",
        "crypto s",
        "compute s",
        "transport s",
        "sim net s",
        "MB total",
        "MB/party max",
        "MB/edge max",
    ]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * 4 + "---:|" * (len(cols) - 4)]
    for r in rows:
        bits = _fmt(r["key_bits"]) + ("*" if r["insecure_test_keys"] and r["key_bits"] else "")
        proto = r["protocol"] + (f" ({r['mode']})" if r["mode"] else "")
        acc = f"{_fmt(r['accuracy'], 'acc')} {r['accuracy_metric']}"
        cells = [
            r["label"],
            _sweep_cell(r),
            proto,
            r["scheme"],
            _fmt(r["n_agents"] if r["n_agents"] is not None else r["n_users"]),
            bits,
            _fmt(r["iterations"]),
            acc,
            _fmt(r["twin_accuracy"], "acc"),
            _fmt(r["reference_accuracy"], "acc"),
            _fmt(r["wall_s"]),
            _fmt(r["crypto_s"]),
            _fmt(r["compute_s"]),
            _fmt(r["transport_s"]),
            _fmt(r["simulated_network_s"]),
            _fmt(r["bytes_total"], "bytes"),
            _fmt(r["bytes_per_party_max"], "bytes"),
            _fmt(r["bytes_per_edge_max"], "bytes"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Accuracy: ppdnmf relative error ||X - WH||/||X|| (reference: centralized NMF); "
        "recsys test RMSE (reference: plaintext MF). No-crypto twin: the same algorithm "
        "in floating point, computed by the same run (ppdnmf: decentralized without fixed "
        "point; its exact integer twin is the scheme=plain point). "
        "crypto/compute/transport split: ppdnmf only (recsys summaries split time "
        "per party instead, see points.json). "
        "csr_fhe_mf's CKKS accuracy varies in the last digits between runs (encryption "
        "noise from OS randomness); every other accuracy is reproduced exactly by the seed. "
        + _network_note(rows),
        "",
    ]
    return "\n".join(lines)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*CSV_FIELDS, "versions", "machine"])
        writer.writeheader()
        for r in rows:
            flat = {k: r[k] for k in CSV_FIELDS}
            flat["versions"] = json.dumps(r["versions"], sort_keys=True)
            flat["machine"] = json.dumps(r["machine"], sort_keys=True)
            writer.writerow(flat)


def _series_by_agents(rows: Sequence[dict[str, Any]], key: str) -> dict[str, list[tuple]]:
    series: dict[str, list[tuple]] = {}
    for r in rows:  # the agents/key-size sweeps only: other sweeps vary something else
        if r["protocol"] != "ppdnmf" or r[key] is None or r["sweep"] not in ("agents", "key_bits"):
            continue
        name = r["scheme"] + (f" {r['key_bits']}-bit" if r["key_bits"] else "")
        series.setdefault(name, []).append((r["n_agents"], r[key]))
    return series


def _plot_vs_agents(path: Path, rows: Sequence[dict[str, Any]], key: str, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, pts in sorted(_series_by_agents(rows, key).items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("agents")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(f"ppdnmf: {ylabel} vs agents")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_accuracy(path: Path, rows: Sequence[dict[str, Any]], out_dir: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for r in rows:
        ys = accuracy_history(out_dir / r["label"], r["accuracy_metric"])
        style = "--" if r["scheme"] == "plain" else "-"  # twins overlap: keep both visible
        ax.plot(range(1, len(ys) + 1), ys, style, marker=".", label=r["label"])
    metric = rows[0]["accuracy_metric"]
    ax.set_xlabel("outer iteration" if metric == "rel_error" else "epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{rows[0]['protocol']}: {metric} per iteration")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out_dir: Path, rows: Sequence[dict[str, Any]], header: dict[str, Any]) -> None:
    """points.json, points.csv, table.md and the PNG plots, all in ``out_dir``."""
    (out_dir / "points.json").write_text(
        json.dumps({**header, "points": list(rows)}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    _write_csv(out_dir / "points.csv", rows)
    (out_dir / "table.md").write_text(format_table(rows, header), encoding="utf-8")
    _plot_vs_agents(out_dir / "cost_vs_agents.png", rows, "wall_s", "wall seconds")
    _plot_vs_agents(out_dir / "bytes_vs_agents.png", rows, "bytes_total", "bytes total")
    by_protocol: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_protocol.setdefault(r["protocol"], []).append(r)
    for protocol, group in by_protocol.items():
        _plot_accuracy(out_dir / f"accuracy_{protocol}.png", group, out_dir)
