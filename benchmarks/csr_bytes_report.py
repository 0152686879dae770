"""Markdown tables from ``benchmarks/csr_bytes.py``'s JSON (no number typed by hand).

Usage::

    python benchmarks/csr_bytes_report.py /tmp/csr-bytes/*/csr_bytes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _mb(x: float) -> str:
    return f"{x / 1e6:.3f} MB"


def levers(data: dict[str, Any]) -> list[str]:
    out = []
    for shape, rows in data.items():
        r0 = rows[0]
        out += [
            f"**{shape}**: {r0['users']} users x {r0['items']} items, {r0['train_ratings']} "
            f"train ratings in {r0['slots']} slots ({r0['chunks']} chunks), "
            f"{r0['n_factors']} factors, CKKS set `{r0['ckks_params']}`",
            "",
            "| lever (cumulative) | bytes / rating / epoch | bytes / epoch | RS -> CSP | "
            "CSP -> RS | setup bytes / user (context + upload) |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            b = r["bytes_per_epoch"]
            by = r.get("epoch_bytes_by_stage", {})
            out.append(
                f"| {r['lever']} | {r['bytes_per_rating_per_epoch']:.1f} | {_mb(b)} | "
                f"{_mb(by.get('masked', 0))} | {_mb(by.get('refreshed', 0))} | "
                f"{r['setup_bytes_per_user']:.0f} ({r['context_bytes_user']:.0f} + "
                f"{r['upload_bytes_per_user']:.0f}) |"
            )
        first, last = rows[0], rows[-1]
        out += [
            "",
            f"before / after: {first['bytes_per_rating_per_epoch']:.1f} / "
            f"{last['bytes_per_rating_per_epoch']:.1f} bytes per rating per epoch = "
            f"{first['bytes_per_rating_per_epoch'] / last['bytes_per_rating_per_epoch']:.2f}x; "
            f"setup per user {first['setup_bytes_per_user']:.0f} / "
            f"{last['setup_bytes_per_user']:.0f} = "
            f"{first['setup_bytes_per_user'] / last['setup_bytes_per_user']:.2f}x",
            "",
        ]
    return out


def main() -> None:
    lines: list[str] = []
    for path in sys.argv[1:]:
        data = json.loads(Path(path).read_text())
        if "levers" in data:
            lines += levers(data["levers"])
        for key in ("movielens", "density", "hide"):
            if key in data:
                lines += [f"### {key}", "```json", json.dumps(_slim(data[key]), indent=1), "```"]
    print("\n".join(lines))


def _slim(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _slim(v) for k, v in x.items() if k not in ("epochs", "setup_bytes_by_stage")}
    if isinstance(x, list):
        return [_slim(v) for v in x]
    return x


if __name__ == "__main__":
    main()
