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
    header: list[str] | None = None
    if rows and any(_parse_float(cell.strip()) is None for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]  # header line
    if header is not None and _ratings_header(header):
        _refuse_ratings(path, f"its header {','.join(header)} names users, items or ratings")
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
    matrix = np.asarray(values, dtype=np.float64)
    if header is None and _ratings_table(matrix):
        _refuse_ratings(
            path,
            f"{matrix.shape[1]} columns, the first two integer ids whose (user, item) pairs are "
            "unique, the third a few rating levels",
        )
    return matrix


_USER_NAMES = {"user", "users", "userid", "uid", "customer", "customerid", "reviewer"}
_ITEM_NAMES = {"item", "items", "itemid", "iid", "movie", "movieid", "product", "productid"}
_RATING_NAMES = {"rating", "ratings", "score", "stars", "value"}


def _ratings_header(header: list[str]) -> bool:
    """A header naming a user and an item column, or a rating and one of them."""
    names = {"".join(ch for ch in cell.lower() if ch.isalnum()) for cell in header}
    user, item = bool(names & _USER_NAMES), bool(names & _ITEM_NAMES)
    rating = bool(names & (_RATING_NAMES - {"value"}))
    return (user and item) or (rating and (user or item))


def _ratings_table(X: np.ndarray) -> bool:
    """A headerless (user, item, rating[, timestamp]) list rather than a dense matrix:
    3 or 4 columns, integer ids >= 0 in the first two with unique pairs and repeated
    users, few distinct values in the third (a rating scale), integers in the fourth."""
    n, width = X.shape
    if width not in (3, 4) or n < 10:
        return False
    ids = X[:, :2]
    if np.any(ids < 0) or np.any(ids != np.round(ids)):
        return False
    if width == 4 and np.any(X[:, 3] != np.round(X[:, 3])):
        return False
    pairs = {(a, b) for a, b in ids.tolist()}
    users = np.unique(X[:, 0])
    return len(pairs) == n and len(users) < n and len(np.unique(X[:, 2])) <= 20


def _refuse_ratings(path: Path, why: str) -> None:
    raise ValueError(
        f"{path}: looks like a ratings file ({why}), not a matrix: ppdnmf factorizes a dense "
        "matrix; for ratings use a recommendation protocol (cipherfact simulate "
        "csr-fhe-mf-synthetic or fedmf-synthetic --set data.path=...); if this is a matrix, "
        "save it as .npy"
    )


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
