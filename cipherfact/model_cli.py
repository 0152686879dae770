"""``cipherfact recommend`` and ``cipherfact predict``: use a recommendation run's model.

Both read ``model.npz`` from a csr_fhe_mf or FedMF results folder (see
``protocols/ratings/model.py``) and speak the data's own user and item ids.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_subcommands"]


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser(
        "recommend",
        help="top items for a user from a recommendation run's model.npz",
        description="Print the K items with the highest predicted rating for USER (ids as in "
        "the data), from RUN (a csr_fhe_mf or fedmf --out folder, or its model.npz). Items "
        "the user rated in training are left out unless --include-rated.",
    )
    rec.add_argument("run", help="results folder of a csr_fhe_mf or fedmf run, or a model.npz")
    rec.add_argument("--user", required=True, help="user id as in the ratings data")
    rec.add_argument("--top", type=int, default=10, metavar="K", help="how many items (10)")
    rec.add_argument("--include-rated", action="store_true", help="keep items rated in training")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.set_defaults(func=_run_recommend)
    pred = sub.add_parser(
        "predict",
        help="predicted ratings for (user, item) pairs from a run's model.npz",
        description="Print the predicted rating of each USER for each ITEM (ids as in the "
        "data; one user and several items, several users and one item, or pairs).",
    )
    pred.add_argument("run", help="results folder of a csr_fhe_mf or fedmf run, or a model.npz")
    pred.add_argument("--user", required=True, nargs="+", help="user id(s)")
    pred.add_argument("--item", required=True, nargs="+", help="item id(s)")
    pred.set_defaults(func=_run_predict)


def _run_recommend(args: argparse.Namespace) -> int:
    from cipherfact.protocols.ratings.model import RatingsModel

    model = RatingsModel.load(args.run)
    top = model.recommend(args.user, args.top, exclude_rated=not args.include_rated)
    if args.json:
        print(json.dumps([{"item": item, "score": score} for item, score in top]))
        return 0
    print(f"{'rank':>4}  {'item':>12}  predicted")
    for rank, (item, score) in enumerate(top, 1):
        print(f"{rank:>4}  {item!s:>12}  {score:.3f}")
    if not top:
        print("(no item left to recommend)", file=sys.stderr)
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from cipherfact.protocols.ratings.model import RatingsModel

    model = RatingsModel.load(args.run)
    scores = model.predict(args.user, args.item)
    users = np.broadcast_to(np.asarray(args.user), scores.shape)
    items = np.broadcast_to(np.asarray(args.item), scores.shape)
    print(f"{'user':>12}  {'item':>12}  predicted")
    for user, item, score in zip(users, items, scores, strict=True):
        print(f"{user!s:>12}  {item!s:>12}  {score:.3f}")
    return 0
