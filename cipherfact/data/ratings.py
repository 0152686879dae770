"""Sparse ratings for the recommendation protocols: loading, splitting, generating.

Original user/item ids are remapped to 0..n-1 (what CSR needs) and the mapping
is kept in the ``Ratings`` object so results can be reported in the user's
own ids. Real data sets cannot be downloaded at run time, so a synthetic
generator with MovieLens-like structure (low rank, power-law item
popularity) is the default data source.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Ratings",
    "RatingsSplit",
    "load_ratings",
    "load_train_test",
    "split_last_k",
    "split_random",
    "synthetic_ratings",
]

RatingsFormat = Literal["auto", "movielens_csv", "ml100k", "csv"]
_FORMATS = ("auto", "movielens_csv", "ml100k", "csv")
_MOVIELENS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
_CSV_DEFAULT_COLUMNS = ("user", "item", "rating")


@dataclass(frozen=True)
class Ratings:
    """Ratings as parallel arrays (COO) with the id mapping.

    ``users[k]``, ``items[k]`` are 0-based indices of rating ``values[k]``;
    ``user_ids[u]``/``item_ids[i]`` are the original ids of index u/i.
    ``timestamps`` (float64) is present when the source had them. A split keeps
    the full mapping, so train and test index the same matrix.
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.values)
        for name in ("users", "items", "values"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.ndim != 1 or len(array) != n:
                raise ValueError(f"Ratings.{name} must be a 1-D array of length {n}")
        if self.timestamps is not None and (self.timestamps.ndim != 1 or len(self.timestamps) != n):
            raise ValueError(f"Ratings.timestamps must be a 1-D array of length {n}")
        for name, index, size in (
            ("users", self.users, len(self.user_ids)),
            ("items", self.items, len(self.item_ids)),
        ):
            if n and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"Ratings.{name} has indices outside 0..{size - 1}")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_ratings(self) -> int:
        return len(self.values)

    @property
    def density(self) -> float:
        """Fraction of the users x items matrix that is rated."""
        return self.n_ratings / (self.n_users * self.n_items)

    def to_csr(self) -> sp.csr_matrix:
        """The users x items rating matrix in CSR (unrated entries are absent)."""
        matrix = sp.csr_matrix(
            (self.values, (self.users, self.items)), shape=(self.n_users, self.n_items)
        )
        matrix.sort_indices()
        return matrix

    def select(self, mask_or_index: np.ndarray) -> Ratings:
        """A subset of the ratings with the same id mapping (for splits)."""
        take = np.asarray(mask_or_index)
        return Ratings(
            users=self.users[take],
            items=self.items[take],
            values=self.values[take],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            timestamps=None if self.timestamps is None else self.timestamps[take],
        )


@dataclass(frozen=True)
class RatingsSplit:
    """Train and test ratings over one shared id mapping.

    ``n_dropped_test`` counts test ratings whose user or item never occurs in
    training (only ``load_train_test`` drops any): a factorization has no
    vector for them.
    """

    train: Ratings
    test: Ratings
    n_dropped_test: int = 0

    def __iter__(self) -> Iterator[Ratings]:
        """Allow ``train, test = split``."""
        return iter((self.train, self.test))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _RawRatings:
    """Ratings as read from a file, before id remapping."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray | None
    lines: np.ndarray


def _ids_array(raw: list[str]) -> np.ndarray:
    """Integer ids when every id is an integer (MovieLens), otherwise strings."""
    try:
        return np.array([int(x) for x in raw], dtype=np.int64)
    except ValueError:
        return np.array(raw, dtype=str)


def _number(path: Path, line: int, what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: non-numeric {what} {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}: non-finite {what} {text!r}")
    return value


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                return line
    raise ValueError(f"{path}: empty file")


def _read_ml100k(path: Path) -> _RawRatings:
    """ml-100k ``u.data``: whitespace (tab) separated ``user item rating timestamp``."""
    users: list[str] = []
    items: list[str] = []
    values: list[float] = []
    stamps: list[float] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4:
                raise ValueError(
                    f"{path}, line {line_no}: expected 4 fields "
                    f"(user item rating timestamp), got {len(fields)}"
                )
            users.append(fields[0])
            items.append(fields[1])
            values.append(_number(path, line_no, "rating", fields[2]))
            stamps.append(_number(path, line_no, "timestamp", fields[3]))
            lines.append(line_no)
    if not values:
        raise ValueError(f"{path}: empty file")
    return _RawRatings(
        _ids_array(users),
        _ids_array(items),
        np.array(values, dtype=np.float64),
        np.array(stamps, dtype=np.float64),
        np.array(lines, dtype=np.int64),
    )


def _read_csv(
    path: Path, user_col: str, item_col: str, rating_col: str, timestamp_col: str | None
) -> _RawRatings:
    """A comma-separated file with a header line naming the columns."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        for row in reader:
            if any(cell.strip() for cell in row):
                header = [cell.strip() for cell in row]
                break
        if header is None:
            raise ValueError(f"{path}: empty file")
        wanted = [user_col, item_col, rating_col] + ([timestamp_col] if timestamp_col else [])
        missing = [c for c in wanted if c not in header]
        if missing and all(_is_number(cell) for cell in header):
            raise ValueError(
                f"{path}, line {reader.line_num}: no header line (the first line is numbers); "
                "a ratings CSV starts with a header naming its columns (e.g. user,item,rating; "
                "others are named with data.user_col, data.item_col and data.rating_col); a "
                "dense matrix is factorized by ppdnmf (cipherfact simulate ppdnmf-synthetic "
                "--set data.path=...)"
            )
        if missing:
            raise ValueError(
                f"{path}, line {reader.line_num}: missing column(s) {missing} (found {header}); "
                "name the user, item and rating columns with data.user_col, data.item_col and "
                "data.rating_col (and data.timestamp_col; in Python the user_col, item_col, "
                "rating_col and timestamp_col arguments)"
            )
        u_at, i_at, r_at = header.index(user_col), header.index(item_col), header.index(rating_col)
        t_at = header.index(timestamp_col) if timestamp_col else None
        users: list[str] = []
        items: list[str] = []
        values: list[float] = []
        stamps: list[float] = []
        lines: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line_no = reader.line_num
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {line_no}: expected {len(header)} fields, got {len(row)}"
                )
            user, item = row[u_at].strip(), row[i_at].strip()
            if not user or not item:
                raise ValueError(f"{path}, line {line_no}: empty user or item id")
            users.append(user)
            items.append(item)
            values.append(_number(path, line_no, "rating", row[r_at].strip()))
            if t_at is not None:
                stamps.append(_number(path, line_no, "timestamp", row[t_at].strip()))
            lines.append(line_no)
    if not values:
        raise ValueError(f"{path}: no ratings after the header")
    return _RawRatings(
        _ids_array(users),
        _ids_array(items),
        np.array(values, dtype=np.float64),
        np.array(stamps, dtype=np.float64) if t_at is not None else None,
        np.array(lines, dtype=np.int64),
    )


def _detect_format(path: Path, explicit_columns: bool) -> str:
    first = _first_line(path)
    if "\t" in first or ("," not in first and len(first.split()) == 4):
        return "ml100k"
    if explicit_columns:
        return "csv"
    header = [cell.strip() for cell in next(csv.reader([first]))]
    if all(c in header for c in _MOVIELENS_COLUMNS[:3]):
        return "movielens_csv"
    return "csv"


def _read_raw(
    path: str | Path,
    fmt: str,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
) -> _RawRatings:
    path = Path(path)
    if fmt not in _FORMATS:
        raise ValueError(f"unknown ratings format {fmt!r}; expected one of {list(_FORMATS)}")
    if not path.is_file():
        raise ValueError(f"ratings file not found: {path}")
    _refuse_binary_array(path)
    columns = (user_col, item_col, rating_col, timestamp_col)
    try:
        if fmt == "auto":
            fmt = _detect_format(path, any(c is not None for c in columns))
        if fmt == "ml100k":
            if any(c is not None for c in columns):
                raise ValueError("the ml100k format has fixed columns; do not pass *_col arguments")
            raw = _read_ml100k(path)
        elif fmt == "movielens_csv":
            u, i, r, t = _MOVIELENS_COLUMNS
            raw = _read_csv(path, user_col or u, item_col or i, rating_col or r, timestamp_col or t)
        else:
            u, i, r = _CSV_DEFAULT_COLUMNS
            raw = _read_csv(path, user_col or u, item_col or i, rating_col or r, timestamp_col)
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a text ratings file ({exc})") from exc
    _check_duplicates(path, raw)
    return raw


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _refuse_binary_array(path: Path) -> None:
    """A NumPy ``.npy``/``.npz`` file is a matrix, not a ratings list: say so, and where
    matrices go, instead of failing to decode it as text."""
    with path.open("rb") as handle:
        magic = handle.read(6)
    kind = ".npy" if magic == b"\x93NUMPY" else ".npz" if magic[:4] == b"PK\x03\x04" else None
    if kind is None and path.suffix.lower() not in (".npy", ".npz"):
        return
    raise ValueError(
        f"{path}: a NumPy {kind or path.suffix.lower()} array, but the recommendation protocols "
        "(csr_fhe_mf, fedmf) read ratings: a CSV with user, item and rating columns (a MovieLens "
        "ratings.csv, or name them with data.user_col, data.item_col, data.rating_col) or an "
        "ml-100k u.data; a matrix is factorized by ppdnmf (cipherfact simulate "
        "ppdnmf-synthetic --set data.path=...)"
    )


def _check_duplicates(path: Path, raw: _RawRatings) -> None:
    """A (user, item) pair rated twice would be summed by CSR: refuse it."""
    pairs = np.rec.fromarrays([raw.users, raw.items])
    order = np.argsort(pairs, kind="stable")
    same = pairs[order][1:] == pairs[order][:-1]
    if np.any(same):
        k = int(np.argmax(same))
        first, second = raw.lines[order[k]], raw.lines[order[k + 1]]
        raise ValueError(
            f"{path}, line {second}: duplicate rating for user {raw.users[order[k]]} "
            f"item {raw.items[order[k]]} (first on line {first})"
        )


def _index(raw: _RawRatings, user_ids: np.ndarray, item_ids: np.ndarray) -> Ratings:
    """Map raw ids (all present in the sorted id arrays) to 0-based indices."""
    return Ratings(
        users=np.searchsorted(user_ids, raw.users).astype(np.int64),
        items=np.searchsorted(item_ids, raw.items).astype(np.int64),
        values=raw.values,
        user_ids=user_ids,
        item_ids=item_ids,
        timestamps=raw.timestamps,
    )


def load_ratings(
    path: str | Path,
    *,
    fmt: RatingsFormat = "auto",
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
) -> Ratings:
    """Load ratings from a file, remapping ids to 0..n-1 in sorted original-id order.

    Formats: ``movielens_csv`` (``ratings.csv``: header ``userId,movieId,rating,
    timestamp``), ``ml100k`` (``u.data``: tab separated, no header), ``csv``
    (header naming the columns; defaults ``user,item,rating``, no timestamp
    unless ``timestamp_col``). ``auto`` picks ml100k for tab-separated files,
    movielens_csv for a MovieLens header, csv otherwise. Malformed files raise
    ``ValueError`` naming the file and line.
    """
    raw = _read_raw(path, fmt, user_col, item_col, rating_col, timestamp_col)
    return _index(raw, np.unique(raw.users), np.unique(raw.items))


def load_train_test(
    train_path: str | Path,
    test_path: str | Path,
    *,
    fmt: RatingsFormat = "auto",
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
) -> RatingsSplit:
    """Load explicit train and test files over the training file's id mapping.

    Test ratings whose user or item does not occur in training are dropped
    (there is no factor to predict them with) and counted in
    ``RatingsSplit.n_dropped_test``.
    """
    train_raw = _read_raw(train_path, fmt, user_col, item_col, rating_col, timestamp_col)
    test_raw = _read_raw(test_path, fmt, user_col, item_col, rating_col, timestamp_col)
    if (train_raw.timestamps is None) != (test_raw.timestamps is None):
        raise ValueError(f"{train_path} and {test_path}: only one of them has timestamps")
    # int ids in one file and text ids in the other: compare both as text
    if train_raw.users.dtype.kind != test_raw.users.dtype.kind:
        train_raw = _replace_ids(train_raw, users=train_raw.users.astype(str))
        test_raw = _replace_ids(test_raw, users=test_raw.users.astype(str))
    if train_raw.items.dtype.kind != test_raw.items.dtype.kind:
        train_raw = _replace_ids(train_raw, items=train_raw.items.astype(str))
        test_raw = _replace_ids(test_raw, items=test_raw.items.astype(str))
    user_ids, item_ids = np.unique(train_raw.users), np.unique(train_raw.items)
    keep = np.isin(test_raw.users, user_ids) & np.isin(test_raw.items, item_ids)
    kept = _RawRatings(
        test_raw.users[keep],
        test_raw.items[keep],
        test_raw.values[keep],
        None if test_raw.timestamps is None else test_raw.timestamps[keep],
        test_raw.lines[keep],
    )
    return RatingsSplit(
        train=_index(train_raw, user_ids, item_ids),
        test=_index(kept, user_ids, item_ids),
        n_dropped_test=int(np.count_nonzero(~keep)),
    )


def _replace_ids(
    raw: _RawRatings, *, users: np.ndarray | None = None, items: np.ndarray | None = None
) -> _RawRatings:
    return _RawRatings(
        raw.users if users is None else users,
        raw.items if items is None else items,
        raw.values,
        raw.timestamps,
        raw.lines,
    )


# --------------------------------------------------------------------------- splits


def split_random(
    ratings: Ratings,
    test_fraction: float,
    rng: np.random.Generator,
    *,
    keep_one_per_user: bool = True,
) -> RatingsSplit:
    """Seeded random split; ``round(test_fraction * n)`` ratings go to test.

    With ``keep_one_per_user`` (default) each user keeps at least one training
    rating, since a user absent from training has no factor to predict with.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a number, got {type(test_fraction).__name__}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_test = round(test_fraction * ratings.n_ratings)
    if n_test < 1:
        raise ValueError(
            f"test_fraction={test_fraction} of {ratings.n_ratings} ratings selects no test rating"
        )
    order = rng.permutation(ratings.n_ratings)
    eligible = np.ones(ratings.n_ratings, dtype=bool)
    if keep_one_per_user:
        # the first rating of each user in the shuffled order stays in training
        _, first = np.unique(ratings.users[order], return_index=True)
        eligible[order[first]] = False
    candidates = order[eligible[order]]
    if n_test > len(candidates):
        raise ValueError(
            f"test_fraction={test_fraction} asks for {n_test} test ratings but only "
            f"{len(candidates)} can move while every user keeps a training rating"
        )
    is_test = np.zeros(ratings.n_ratings, dtype=bool)
    is_test[candidates[:n_test]] = True
    return RatingsSplit(ratings.select(~is_test), ratings.select(is_test))


def split_last_k(ratings: Ratings, k: int) -> RatingsSplit:
    """Per user, the ``k`` most recent ratings go to test (leave-last-k-out).

    A user with k or fewer ratings keeps the oldest one in training. Ties in
    time are broken by position in the source, so the split is deterministic.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ratings.timestamps is None:
        raise ValueError("split_last_k needs timestamps, and these ratings have none")
    # sort by user, then time, then original position
    order = np.lexsort((np.arange(ratings.n_ratings), ratings.timestamps, ratings.users))
    sorted_users = ratings.users[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    ends = np.searchsorted(sorted_users, sorted_users, side="right")
    position = np.arange(ratings.n_ratings) - starts  # rank within user, oldest = 0
    count = ends - starts
    n_test_here = np.minimum(k, count - 1)
    is_test = np.zeros(ratings.n_ratings, dtype=bool)
    is_test[order] = position >= count - n_test_here
    return RatingsSplit(ratings.select(~is_test), ratings.select(is_test))


# --------------------------------------------------------------------------- synthetic


def _sample_pairs(
    n_users: int,
    n_items: int,
    n_ratings: int,
    item_weights: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs: one per user first, the rest by popularity."""
    first_items = rng.choice(n_items, size=n_users, p=item_weights)
    keys = list(np.arange(n_users, dtype=np.int64) * n_items + first_items)
    seen = set(int(x) for x in keys)
    total = n_users * n_items
    remaining = n_ratings - n_users
    if remaining > 0 and n_ratings > total // 2:
        # dense: weighted sampling without replacement over all pairs (Efraimidis-Spirakis)
        all_keys = np.arange(total, dtype=np.int64)
        weight = np.tile(item_weights, n_users)
        score = np.log(rng.random(total)) / weight
        score[np.fromiter(seen, dtype=np.int64)] = -np.inf
        chosen = all_keys[np.argsort(-score, kind="stable")[:remaining]]
        keys.extend(chosen.tolist())
        remaining = 0
    while remaining > 0:
        batch = 2 * remaining + 64
        draws = rng.integers(n_users, size=batch) * n_items + rng.choice(
            n_items, size=batch, p=item_weights
        )
        for key in draws.tolist():
            if key not in seen:
                seen.add(key)
                keys.append(key)
                remaining -= 1
                if remaining == 0:
                    break
    key_array = np.asarray(keys, dtype=np.int64)
    return key_array // n_items, key_array % n_items


def synthetic_ratings(
    n_users: int,
    n_items: int,
    rank: int,
    density: float,
    *,
    rng: np.random.Generator,
    noise: float = 0.5,
    scale: tuple[float, float] = (1.0, 5.0),
    popularity_exponent: float = 1.0,
    step: float | None = None,
) -> Ratings:
    """Low-rank ratings plus Gaussian noise on a power-law popularity pattern.

    Exactly ``max(n_users, round(density * n_users * n_items))`` ratings; every
    user has at least one. Item k (in a random order) is chosen with weight
    (k + 1) ** -popularity_exponent (0 = uniform). A rating is mid-scale +
    (scale width / 4) * <p_u, q_i> + noise, with <p_u, q_i> of unit variance,
    clipped to ``scale`` and, with ``step`` (e.g. 0.5 for half stars), rounded
    to the grid lo, lo + step, ... Timestamps are a random order of the
    ratings, so ``split_last_k`` works on synthetic data too.
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    lo, hi = (float(scale[0]), float(scale[1]))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
    if not (math.isfinite(popularity_exponent) and popularity_exponent >= 0.0):
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent}")
    if step is not None and not (math.isfinite(step) and 0.0 < step <= hi - lo):
        raise ValueError(f"step must be in (0, {hi - lo:g}] or None, got {step}")
    n_ratings = round(density * n_users * n_items)
    if n_ratings < n_users:
        raise ValueError(
            f"density={density} gives {n_ratings} ratings for {n_users} users; "
            "every user needs at least one"
        )

    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -popularity_exponent
    item_weights = np.empty(n_items)
    item_weights[rng.permutation(n_items)] = popularity / popularity.sum()
    users, items = _sample_pairs(n_users, n_items, n_ratings, item_weights, rng)

    P = rng.standard_normal((n_users, rank)) / rank**0.25
    Q = rng.standard_normal((n_items, rank)) / rank**0.25
    signal = np.einsum("kr,kr->k", P[users], Q[items])
    values = (lo + hi) / 2 + (hi - lo) / 4 * signal + noise * rng.standard_normal(n_ratings)
    values = np.clip(values, lo, hi)
    if step is not None:
        values = np.clip(lo + np.round((values - lo) / step) * step, lo, hi)
    order = np.lexsort((items, users))  # user-major order, as CSR would store them
    timestamps = rng.permutation(n_ratings).astype(np.float64)
    return Ratings(
        users=users[order],
        items=items[order],
        values=values[order],
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        timestamps=timestamps,
    )


def load_user_ratings(path: str | Path, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """One user's own ratings for a deployed csr_fhe_mf job: (items, values), sorted.

    The file is a CSV with a header naming the columns ``item`` and ``rating``
    (other columns are ignored); items are 0-based indices into the job's
    catalogue of ``n_items`` items, each at most once. This is what a user's
    process reads on its own machine; nobody else ever sees the file.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "item" not in fields or "rating" not in fields:
            raise ValueError(
                f"{path}: the header must name the columns 'item' and 'rating', got {fields}"
            )
        items, values = [], []
        for row in reader:
            line = reader.line_num
            item = _number(path, line, "item", row["item"] or "")
            if item != int(item) or not 0 <= item < n_items:
                raise ValueError(
                    f"{path}, line {line}: item {row['item']!r} is not an index in 0..{n_items - 1}"
                )
            items.append(int(item))
            values.append(_number(path, line, "rating", row["rating"] or ""))
    if not items:
        raise ValueError(f"{path}: no ratings")
    item_arr = np.asarray(items, dtype=np.int64)
    if np.unique(item_arr).size != item_arr.size:
        raise ValueError(f"{path}: an item is rated more than once")
    order = np.argsort(item_arr, kind="stable")
    return item_arr[order], np.asarray(values, dtype=np.float64)[order]
