"""Writing a run's results: metrics as they come, summary and factors at the end.

``metrics.jsonl`` is appended and flushed after every outer iteration, so a
run that fails or is interrupted keeps everything it computed so far.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("cipherfact", "numpy", "scipy", "phe", "gmpy2", "tenseal", "ray", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class RunWriter:
    """Owns one output folder."""

    def __init__(self, out_dir: str | Path, *, append: bool = False) -> None:
        """``append``: keep an existing ``metrics.jsonl`` (resuming a run)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if not append or not self.metrics_path.exists():
            self.metrics_path.write_text("", encoding="utf-8")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
            f.flush()

    def metrics_written(self) -> int:
        """Complete lines in ``metrics.jsonl``: the iterations recorded so far."""
        if not self.metrics_path.exists():
            return 0
        return self.metrics_path.read_text(encoding="utf-8").count("\n")

    def read_all_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def truncate_metrics(self, keep: int) -> None:
        """Keep the first ``keep`` lines (a resume drops iterations after its checkpoint)."""
        lines = read_metrics(self.metrics_path)[:keep]
        self.metrics_path.write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines), encoding="utf-8"
        )

    def write_json(self, name: str, data: Mapping[str, Any]) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        tmp.replace(path)
        return path

    def write_factors(
        self, Ws: list[np.ndarray], Hs: list[np.ndarray], columns: list[np.ndarray] | None = None
    ) -> Path:
        """``factors.npz``: W_i, H_i (and the column indices) for each agent i."""
        arrays: dict[str, np.ndarray] = {}
        for i, (W, H) in enumerate(zip(Ws, Hs, strict=True)):
            arrays[f"W_{i}"] = np.asarray(W)
            arrays[f"H_{i}"] = np.asarray(H)
            if columns is not None:
                arrays[f"columns_{i}"] = np.asarray(columns[i])
        path = self.out_dir / "factors.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_metrics_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records, skipping a line cut short (a killed agent); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
