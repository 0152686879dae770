"""Synthetic ratings with the shape of MovieLens ml-latest-small.

``synthetic_ratings`` (``cipherfact.data.ratings``) gives every user about the
same number of ratings. Real rating data is heavy-tailed on both sides: in
ml-latest-small (610 users, 9,724 items, 100,836 ratings, 1.7% dense, half
stars 0.5..5) every user has at least 20 ratings, the median user about 70 and
the most active one 2,698, while a few hundred films take most of the ratings.
Both tails set what a CSR protocol costs (slots per chunk, padding to the most
active user with ``hide_pattern``), so benchmarks at "MovieLens size" use this
generator.

Memory is O(ratings + items + users): each user's items are drawn on their own
(weighted sampling without replacement over the items), never users x items.
"""

from __future__ import annotations

import math

import numpy as np

from cipherfact.data.ratings import Ratings

__all__ = ["ML_LATEST_SMALL", "movielens_like_ratings"]

#: ml-latest-small's published shape (users, items, ratings; per-user minimum and maximum).
ML_LATEST_SMALL = {
    "n_users": 610,
    "n_items": 9724,
    "n_ratings": 100836,
    "min_per_user": 20,
    "max_per_user": 2698,
}


def _user_counts(
    n_users: int, n_ratings: int, lo: int, hi: int, rng: np.random.Generator
) -> np.ndarray:
    """Heavy-tailed ratings per user in [lo, hi] summing to exactly ``n_ratings``.

    lo + lognormal with median about ``lo * 2.5`` (ml-latest-small: 20 and
    ~70), rescaled to the total, then the rounding remainder spread one by one
    over users still below ``hi``.
    """
    extra = rng.lognormal(math.log(1.5 * lo), 1.4, n_users)
    target = n_ratings - lo * n_users
    counts = np.full(n_users, lo, dtype=np.int64)
    for _ in range(64):  # rescale until the cap no longer binds
        room = hi - counts
        free = room > 0
        if target <= 0 or not free.any():
            break
        share = np.zeros(n_users)
        share[free] = extra[free] / extra[free].sum() * target
        add = np.minimum(np.floor(share).astype(np.int64), room)
        counts += add
        target -= int(add.sum())
        if not np.any(add == room):
            break
    order = np.argsort(-extra, kind="stable")
    k = 0
    while target > 0:
        u = order[k % n_users]
        if counts[u] < hi:
            counts[u] += 1
            target -= 1
        k += 1
    return counts


def movielens_like_ratings(
    rng: np.random.Generator,
    *,
    n_users: int = ML_LATEST_SMALL["n_users"],
    n_items: int = ML_LATEST_SMALL["n_items"],
    n_ratings: int = ML_LATEST_SMALL["n_ratings"],
    rank: int = 4,
    noise: float = 0.5,
    min_per_user: int = ML_LATEST_SMALL["min_per_user"],
    max_per_user: int = ML_LATEST_SMALL["max_per_user"],
    popularity_exponent: float = 1.0,
    scale: tuple[float, float] = (0.5, 5.0),
    step: float = 0.5,
) -> Ratings:
    """Ratings of ml-latest-small's shape: heavy-tailed users, power-law items, half stars.

    Exactly ``n_ratings`` distinct (user, item) pairs; user u rates c_u items,
    c_u in [min_per_user, max_per_user] from a lognormal tail; item k (random
    order) is drawn with weight (k + 1) ** -popularity_exponent. A rating is
    3.5 + b_u + b_i + 0.5 <p_u, q_i> + noise (biases of s.d. 0.4, <p, q> of unit
    variance), clipped to ``scale`` and rounded to ``step``. Timestamps are a
    random order, so ``split_last_k`` works too. Deterministic in ``rng``.
    """
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("n_ratings", n_ratings),
        ("rank", rank),
        ("min_per_user", min_per_user),
        ("max_per_user", max_per_user),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    hi = min(max_per_user, n_items)
    if min_per_user > hi:
        raise ValueError(f"min_per_user={min_per_user} exceeds min(max_per_user, n_items) = {hi}")
    if not n_users * min_per_user <= n_ratings <= n_users * hi:
        raise ValueError(
            f"n_ratings={n_ratings} must lie in [n_users * min_per_user, n_users * "
            f"min(max_per_user, n_items)] = [{n_users * min_per_user}, {n_users * hi}]"
        )
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if not (math.isfinite(popularity_exponent) and popularity_exponent >= 0):
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent!r}")
    lo_v, hi_v = float(scale[0]), float(scale[1])
    if not (math.isfinite(lo_v) and math.isfinite(hi_v) and lo_v < hi_v):
        raise ValueError(f"scale must be (low, high) with low < high, got {scale!r}")
    if not (math.isfinite(step) and 0 < step <= hi_v - lo_v):
        raise ValueError(f"step must be in (0, {hi_v - lo_v:g}], got {step!r}")

    counts = _user_counts(n_users, n_ratings, min_per_user, hi, rng)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -popularity_exponent
    log_weight = np.empty(n_items)
    log_weight[rng.permutation(n_items)] = np.log(popularity)
    items = np.empty(n_ratings, dtype=np.int64)
    start = 0
    for c in counts.tolist():
        # Gumbel top-k: the c largest of log w + Gumbel noise are a weighted
        # sample without replacement (the Efraimidis-Spirakis scheme in logs).
        keys = log_weight - np.log(-np.log(rng.random(n_items)))
        chosen = np.argpartition(-keys, c - 1)[:c] if c < n_items else np.arange(n_items)
        items[start : start + c] = np.sort(chosen)
        start += c
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)

    P = rng.standard_normal((n_users, rank)) / rank**0.25
    Q = rng.standard_normal((n_items, rank)) / rank**0.25
    b_u = 0.4 * rng.standard_normal(n_users)
    b_i = 0.4 * rng.standard_normal(n_items)
    signal = np.einsum("kr,kr->k", P[users], Q[items])
    values = 3.5 + b_u[users] + b_i[items] + 0.5 * signal + noise * rng.standard_normal(n_ratings)
    values = np.clip(
        lo_v + np.round((np.clip(values, lo_v, hi_v) - lo_v) / step) * step, lo_v, hi_v
    )
    return Ratings(
        users=users,
        items=items,
        values=values,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        timestamps=rng.permutation(n_ratings).astype(np.float64),
    )
