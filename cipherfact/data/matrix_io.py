"""Loading a user's own data matrix from ``.npy`` or ``.csv``.

Errors name the file (and the line, for CSV) so that a user can fix their
data rather than guess; the matrix is checked here, at the boundary, so that
no protocol starts on data it cannot use.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

__all__ = ["load_matrix"]


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _load_csv(path: Path) -> np.ndarray:
    """Read a comma-separated numeric table; a first line with any non-number is a header."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [(n, row) for n, row in enumerate(csv.reader(handle), start=1) if row]
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if rows and any(_parse_float(cell.strip()) is None for cell in rows[0][1]):
        rows = rows[1:]  # header line
    if not rows:
        raise ValueError(f"{path}: empty matrix (no numeric rows)")
    width = len(rows[0][1])
    values: list[list[float]] = []
    for line, row in rows:
        if len(row) != width:
            raise ValueError(
                f"{path}, line {line}: expected {width} columns (as on line {rows[0][0]}), "
                f"got {len(row)}"
            )
        parsed = []
        for col, cell in enumerate(row, start=1):
            value = _parse_float(cell.strip())
            if value is None:
                raise ValueError(f"{path}, line {line}, column {col}: non-numeric value {cell!r}")
            if not math.isfinite(value):
                raise ValueError(f"{path}, line {line}, column {col}: non-finite value {cell!r}")
            parsed.append(value)
        values.append(parsed)
    return np.asarray(values, dtype=np.float64)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # truncated, empty, or needs pickle
        raise ValueError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: expected a single array, got {type(array).__name__}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: non-numeric dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got {array.ndim}-D shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{path}: empty matrix of shape {array.shape}")
    result = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(result)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(result))[0])
        raise ValueError(f"{path}: non-finite value {result[bad]} at index {bad}")
    return result


def load_matrix(path: str | Path) -> np.ndarray:
    """Load a 2-D float64 matrix from ``.npy`` or ``.csv`` (comma separated).

    A CSV's first line is taken as a header when any of its fields is not a
    number. NaN/inf are rejected here; nonnegativity is the caller's check,
    since not every use needs it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ValueError(f"{path}: unsupported extension {path.suffix!r} (use .npy or .csv)")
    if not path.is_file():
        raise ValueError(f"matrix file not found: {path}")
    if suffix == ".npy":
        return _load_npy(path)
    try:
        return _load_csv(path)
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a text CSV ({exc})") from exc
