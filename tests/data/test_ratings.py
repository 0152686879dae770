"""Tests for ratings loading, splitting and the synthetic ratings generator."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cipherfact.data.ratings import (
    Ratings,
    RatingsSplit,
    load_ratings,
    load_train_test,
    split_last_k,
    split_random,
    synthetic_ratings,
)

MOVIELENS = """userId,movieId,rating,timestamp
1,31,2.5,1260759144
1,1029,3.0,1260759179
7,31,4.0,1260759185
3,1061,5.0,1260759205
7,1029,0.5,1260759100
"""
ML100K = (
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
    "22\t377\t1\t878887116\n196\t377\t4\t881250950\n"
)
GENERIC = "score,who,what\n4.5,alice,m1\n3,bob,m2\n1,alice,m3\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _triples(r: Ratings) -> set[tuple[object, object, float]]:
    return {
        (r.user_ids[u].item(), r.item_ids[i].item(), float(v))
        for u, i, v in zip(r.users, r.items, r.values, strict=True)
    }


@pytest.mark.parametrize("fmt", ["auto", "movielens_csv"])
def test_movielens_csv(tmp_path: Path, fmt: str) -> None:
    r = load_ratings(_write(tmp_path, "ratings.csv", MOVIELENS), fmt=fmt)  # type: ignore[arg-type]
    assert (r.n_users, r.n_items, r.n_ratings) == (3, 3, 5)
    assert r.user_ids.tolist() == [1, 3, 7] and r.item_ids.tolist() == [31, 1029, 1061]
    assert r.user_ids.dtype == np.int64
    assert (7, 1029, 0.5) in _triples(r) and (3, 1061, 5.0) in _triples(r)
    assert r.timestamps is not None and r.timestamps[0] == 1260759144.0
    csr = r.to_csr()
    assert isinstance(csr, sp.csr_matrix) and csr.shape == (3, 3) and csr.nnz == 5
    assert csr[2, 1] == 0.5  # user 7 -> index 2, movie 1029 -> index 1
    assert csr[1, 0] == 0.0  # user 3 never rated movie 31
    assert r.density == pytest.approx(5 / 9)


@pytest.mark.parametrize("fmt", ["auto", "ml100k"])
def test_ml100k(tmp_path: Path, fmt: str) -> None:
    r = load_ratings(_write(tmp_path, "u.data", ML100K), fmt=fmt)  # type: ignore[arg-type]
    assert r.user_ids.tolist() == [22, 186, 196] and r.item_ids.tolist() == [242, 302, 377]
    assert _triples(r) == {(196, 242, 3.0), (186, 302, 3.0), (22, 377, 1.0), (196, 377, 4.0)}
    assert r.timestamps is not None and r.timestamps.tolist()[2] == 878887116.0


def test_generic_csv_named_columns_and_string_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine.csv", GENERIC)
    r = load_ratings(path, user_col="who", item_col="what", rating_col="score")
    assert r.user_ids.tolist() == ["alice", "bob"]
    assert _triples(r) == {("alice", "m1", 4.5), ("bob", "m2", 3.0), ("alice", "m3", 1.0)}
    assert r.timestamps is None


def test_generic_csv_default_columns_and_timestamp(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "user,item,rating,t\n5,9,1,20\n6,9,2,10\n")
    r = load_ratings(path, fmt="csv", timestamp_col="t")
    assert r.timestamps is not None and r.timestamps.tolist() == [20.0, 10.0]
    assert load_ratings(path).timestamps is None  # auto -> csv, no timestamp unless named


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "match"),
    [
        ("r.csv", "", {}, r"r\.csv: empty file"),
        ("r.csv", "userId,movieId,rating,timestamp\n", {}, r"r\.csv: no ratings after the header"),
        (
            "r.csv",
            "userId,movieId,score,timestamp\n1,2,3,4\n",
            {"fmt": "movielens_csv"},
            r"r\.csv, line 1: missing column\(s\) \['rating'\] \(found \['userId', 'movieId'",
        ),
        ("r.csv", "a,b\n1,2\n", {}, r"missing column\(s\) \['user', 'item', 'rating'\]"),
        (
            "r.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,good,5\n",
            {},
            r"r\.csv, line 3: non-numeric rating 'good'",
        ),
        (
            "r.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,4\n",
            {},
            r"r\.csv, line 3: expected 4 fields, got 3",
        ),
        (
            "r.csv",
            "userId,movieId,rating,timestamp\n1,2,nan,4\n",
            {},
            r"line 2: non-finite rating 'nan'",
        ),
        (
            "r.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,,3,4\n",
            {},
            r"line 3: empty user or item id",
        ),
        (
            "r.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n5,6,1,1\n1,2,4,9\n",
            {},
            r"r\.csv, line 4: duplicate rating for user 1 item 2 \(first on line 2\)",
        ),
        ("u.data", "1\t2\t3\n", {}, r"u\.data, line 1: expected 4 fields"),
        ("u.data", "1\t2\t3\t4\n1\t3\tx\t4\n", {}, r"u\.data, line 2: non-numeric rating 'x'"),
        ("u.data", "1\t2\t3\tyesterday\n", {}, r"line 1: non-numeric timestamp 'yesterday'"),
        ("u.data", "\n\n", {}, r"u\.data: empty file"),
        ("u.data", "1\t2\t3\t4\n", {"fmt": "ml100k", "user_col": "u"}, "fixed columns"),
        ("r.csv", "user,item,rating\n1,2,3\n", {"fmt": "xml"}, "unknown ratings format 'xml'"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, kwargs: dict, match: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=match):
        load_ratings(path, **kwargs)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ratings file not found: .*none\.csv"):
        load_ratings(tmp_path / "none.csv")


def _pairs(r: Ratings) -> set[tuple[int, int]]:
    return set(zip(r.users.tolist(), r.items.tolist(), strict=True))


def _check_partition(original: Ratings, split: RatingsSplit) -> None:
    """Train and test are disjoint, together exactly the original, same mapping."""
    train, test = split
    assert train.user_ids is original.user_ids and test.item_ids is original.item_ids
    assert not _pairs(train) & _pairs(test)
    assert _pairs(train) | _pairs(test) == _pairs(original)
    assert train.n_ratings + test.n_ratings == original.n_ratings
    assert _triples(train) | _triples(test) == _triples(original)


@pytest.fixture(scope="module")
def medium() -> Ratings:
    return synthetic_ratings(200, 150, 4, 0.05, rng=np.random.default_rng(3))


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_split_random(medium: Ratings, fraction: float) -> None:
    split = split_random(medium, fraction, np.random.default_rng(0))
    _check_partition(medium, split)
    assert split.test.n_ratings == round(fraction * medium.n_ratings)
    assert np.all(np.bincount(split.train.users, minlength=medium.n_users) >= 1)
    again = split_random(medium, fraction, np.random.default_rng(0))
    np.testing.assert_array_equal(again.test.values, split.test.values)
    np.testing.assert_array_equal(again.test.users, split.test.users)
    other = split_random(medium, fraction, np.random.default_rng(1))
    assert not np.array_equal(other.test.items, split.test.items)


def test_split_random_validation(medium: Ratings) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.0"):
        split_random(medium, 1.0, rng)
    with pytest.raises(ValueError, match="selects no test rating"):
        split_random(medium, 1e-6, rng)
    with pytest.raises(ValueError, match=r"only \d+ can move while every user keeps"):
        split_random(medium, 0.99, rng)
    with pytest.raises(TypeError, match="test_fraction must be a number"):
        split_random(medium, "0.2", rng)  # type: ignore[arg-type]
    split = split_random(medium, 0.99, rng, keep_one_per_user=False)
    assert split.test.n_ratings == round(0.99 * medium.n_ratings)


def test_split_last_k_takes_latest_per_user(tmp_path: Path) -> None:
    r = load_ratings(_write(tmp_path, "ratings.csv", MOVIELENS))
    split = split_last_k(r, 1)
    _check_partition(r, split)
    # user 1: latest is movie 1029 (…179); user 7: latest is movie 31 (…185);
    # user 3 has a single rating, which stays in training
    assert _triples(split.test) == {(1, 1029, 3.0), (7, 31, 4.0)}
    assert (3, 1061, 5.0) in _triples(split.train)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_split_last_k_synthetic(medium: Ratings, k: int) -> None:
    split = split_last_k(medium, k)
    _check_partition(medium, split)
    assert split.train.timestamps is not None and split.test.timestamps is not None
    counts = np.bincount(medium.users, minlength=medium.n_users)
    test_counts = np.bincount(split.test.users, minlength=medium.n_users)
    np.testing.assert_array_equal(test_counts, np.minimum(k, counts - 1))
    for u in range(medium.n_users):
        train_t = split.train.timestamps[split.train.users == u]
        test_t = split.test.timestamps[split.test.users == u]
        if len(test_t):
            assert train_t.max() < test_t.min()


def test_split_last_k_validation(tmp_path: Path) -> None:
    r = load_ratings(
        _write(tmp_path, "mine.csv", GENERIC), user_col="who", item_col="what", rating_col="score"
    )
    with pytest.raises(ValueError, match="split_last_k needs timestamps"):
        split_last_k(r, 1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        split_last_k(r, 0)


def test_load_train_test_shares_mapping_and_drops_unseen(tmp_path: Path) -> None:
    train = _write(tmp_path, "train.csv", MOVIELENS)
    test = _write(
        tmp_path,
        "test.csv",
        "userId,movieId,rating,timestamp\n3,31,4.0,1\n99,31,1.0,2\n1,5555,2.0,3\n7,1061,3.5,4\n",
    )
    split = load_train_test(train, test)
    assert split.n_dropped_test == 2  # user 99 and movie 5555 never appear in training
    assert split.train.user_ids.tolist() == [1, 3, 7]
    assert split.test.user_ids is split.train.user_ids
    assert _triples(split.test) == {(3, 31, 4.0), (7, 1061, 3.5)}
    assert split.test.to_csr().shape == split.train.to_csr().shape == (3, 3)


def test_load_train_test_mixed_id_types(tmp_path: Path) -> None:
    train = _write(tmp_path, "train.csv", "user,item,rating\n1,10,3\n2,11,4\n")
    test = _write(tmp_path, "test.csv", "user,item,rating\n1,11,5\nx,10,1\n")
    split = load_train_test(train, test)
    assert split.n_dropped_test == 1
    # user ids compared as text (one file has "x"); item ids stay integers
    assert _triples(split.test) == {("1", 11, 5.0)}
    assert split.train.user_ids.tolist() == ["1", "2"]


def test_synthetic_ratings_density_scale_and_coverage() -> None:
    r = synthetic_ratings(300, 200, 5, 0.03, rng=np.random.default_rng(0))
    assert r.n_ratings == round(0.03 * 300 * 200)
    assert r.density == pytest.approx(0.03)
    assert r.values.min() >= 1.0 and r.values.max() <= 5.0
    assert np.all(np.bincount(r.users, minlength=300) >= 1)
    csr = r.to_csr()
    assert csr.nnz == r.n_ratings  # no duplicate pairs were summed
    assert 2.5 < r.values.mean() < 3.5 and r.values.std() > 0.5


def _item_counts_desc(exponent: float) -> np.ndarray:
    r = synthetic_ratings(
        2000, 500, 3, 0.01, rng=np.random.default_rng(1), popularity_exponent=exponent
    )
    return np.sort(np.bincount(r.items, minlength=500))[::-1]


def test_synthetic_ratings_popularity_is_power_law() -> None:
    steep, flat = _item_counts_desc(1.0), _item_counts_desc(0.0)
    top = 50  # 10% of the items
    assert steep[:top].sum() / steep.sum() > 0.4
    assert flat[:top].sum() / flat.sum() < 0.2
    # power law with exponent 1: rank-1 item about twice as popular as rank-2
    assert 1.5 < steep[0] / steep[1] < 2.7


def test_synthetic_ratings_step_and_dense() -> None:
    r = synthetic_ratings(20, 30, 2, 1.0, rng=np.random.default_rng(2), step=0.5)
    assert r.n_ratings == 600
    np.testing.assert_array_equal(np.round(r.values * 2) / 2, r.values)
    assert set(np.unique(r.values)) <= {1 + 0.5 * k for k in range(9)}


def test_synthetic_ratings_low_rank_signal() -> None:
    # noiseless, fully observed: the centred matrix is close to rank 4 (clipping aside)
    r = synthetic_ratings(100, 80, 4, 1.0, rng=np.random.default_rng(4), noise=0.0)
    dense = r.to_csr().toarray()
    s = np.linalg.svd(dense - dense.mean(), compute_uv=False)
    assert (s[:4] ** 2).sum() / (s**2).sum() > 0.95
    noisy = synthetic_ratings(100, 80, 4, 1.0, rng=np.random.default_rng(4), noise=1.0)
    s_noisy = np.linalg.svd(noisy.to_csr().toarray() - noisy.values.mean(), compute_uv=False)
    assert (s_noisy[:4] ** 2).sum() / (s_noisy**2).sum() < 0.9


def test_synthetic_ratings_deterministic() -> None:
    a = synthetic_ratings(50, 40, 3, 0.1, rng=np.random.default_rng(9))
    b = synthetic_ratings(50, 40, 3, 0.1, rng=np.random.default_rng(9))
    c = synthetic_ratings(50, 40, 3, 0.1, rng=np.random.default_rng(10))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, c.items)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"density": 0.0}, ValueError, r"density must be in \(0, 1\], got 0.0"),
        ({"density": 0.001}, ValueError, r"density=0.001 gives 2 ratings for 50 users"),
        ({"rank": 0}, ValueError, "rank must be >= 1, got 0"),
        ({"n_users": 2.0}, TypeError, "n_users must be an int"),
        ({"noise": -1.0}, ValueError, "noise must be a finite number >= 0"),
        ({"scale": (5, 1)}, ValueError, r"scale must be \(low, high\) with low < high"),
        ({"popularity_exponent": -1}, ValueError, "popularity_exponent must be >= 0"),
        ({"step": 0.0}, ValueError, r"step must be in \(0, 4\] or None"),
    ],
)
def test_synthetic_ratings_validation(kwargs: dict, exc: type, match: str) -> None:
    args = {"n_users": 50, "n_items": 40, "rank": 3, "density": 0.1, **kwargs}
    with pytest.raises(exc, match=match):
        synthetic_ratings(**args, rng=np.random.default_rng(0))


def test_ratings_constructor_checks() -> None:
    ids = np.arange(2)
    with pytest.raises(ValueError, match=r"Ratings\.items must be a 1-D array of length 2"):
        Ratings(np.array([0, 1]), np.array([0]), np.array([1.0, 2.0]), ids, ids)
    with pytest.raises(ValueError, match=r"Ratings.users has indices outside 0\.\.1"):
        Ratings(np.array([0, 2]), np.array([0, 1]), np.array([1.0, 2.0]), ids, ids)


def test_load_user_ratings_reads_one_users_file(tmp_path: Path) -> None:
    from cipherfact.data.ratings import load_user_ratings

    path = tmp_path / "me.csv"
    path.write_text("item,rating,note\n7,4.5,x\n2,3,y\n", encoding="utf-8")
    items, values = load_user_ratings(path, n_items=10)
    assert items.tolist() == [2, 7] and values.tolist() == [3.0, 4.5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("movie,rating\n1,3\n", "must name the columns 'item' and 'rating'"),
        ("item,rating\n10,3\n", r"line 2: item '10' is not an index in 0..9"),
        ("item,rating\n1.5,3\n", r"item '1.5' is not an index"),
        ("item,rating\n1,3\n1,4\n", "rated more than once"),
        ("item,rating\n1,good\n", "non-numeric rating 'good'"),
        ("item,rating\n", "no ratings"),
    ],
)
def test_load_user_ratings_refuses_bad_files(tmp_path: Path, text: str, message: str) -> None:
    from cipherfact.data.ratings import load_user_ratings

    path = tmp_path / "me.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_user_ratings(path, n_items=10)
