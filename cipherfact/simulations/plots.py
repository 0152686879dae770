"""PNG plots of a run (matplotlib, non-interactive backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_error(path: str | Path, curves: Mapping[str, Sequence[float]], title: str) -> Path:
    """Relative error per outer iteration, one line per method (log scale)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, ys in curves.items():
        # a log axis spanning ~300 decades overflows in matplotlib's tick locator:
        # values beyond 1e100 are left out of the plot (metrics.jsonl has them)
        shown = [y if y <= 1e100 else float("nan") for y in ys]
        ax.plot(range(1, len(ys) + 1), shown, label=label)
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("relative error ||X - WH|| / ||X||")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_bytes(path: str | Path, bytes_per_iter: Sequence[int], title: str) -> Path:
    """Bytes on the network per outer iteration (bars) and cumulative (line)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    xs = range(1, len(bytes_per_iter) + 1)
    ax.bar(
        xs, [b / 1e6 for b in bytes_per_iter], color="tab:blue", alpha=0.7, label="per iteration"
    )
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("MB per iteration")
    ax2 = ax.twinx()
    total = 0.0
    cumulative = []
    for b in bytes_per_iter:
        total += b / 1e6
        cumulative.append(total)
    ax2.plot(xs, cumulative, color="tab:red", label="cumulative")
    ax2.set_ylabel("MB cumulative")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
