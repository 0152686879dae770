"""A recommendation run leaves a usable model: model.npz in the data's own ids,
predictions that reproduce the run's reported RMSE, recommend / predict on the
command line and in Python, and summaries that describe the user's own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cipherfact
from cipherfact.cli import main
from cipherfact.protocols.ratings.model import ModelError, RatingsModel

FEDMF = [
    "data.n_users=8",
    "data.n_items=20",
    "epochs=2",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]


def _ratings_csv(path: Path, n_users: int = 6, n_items: int = 9) -> Path:
    """Ratings with ids that are not 0..n-1 (users 101.., items 9001..)."""
    rng = np.random.default_rng(5)
    rows = ["user,item,rating"]
    for u in range(n_users):
        for i in rng.choice(n_items, size=5, replace=False):
            rows.append(f"{101 + u},{9001 + int(i)},{rng.integers(1, 6)}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("own")
    csv = _ratings_csv(tmp / "my-ratings.csv")
    out = tmp / "run"
    summary = cipherfact.simulate(
        "fedmf-synthetic",
        out,
        overrides=[*FEDMF[2:], f"data.path={csv}", "data.test_fraction=0.2"],
        progress=False,
    )
    return out, summary


def test_model_reproduces_the_reported_rmse_in_the_data_ids(own_run: tuple[Path, dict]) -> None:
    out, summary = own_run
    assert summary["model"] == "model.npz"
    model = cipherfact.RatingsModel.load(out)
    assert set(model.user_ids.tolist()) <= set(range(101, 107))
    assert set(model.item_ids.tolist()) <= set(range(9001, 9010))
    rated = model.rated.tocoo()
    train_pairs = {
        (int(model.user_ids[u]), int(model.item_ids[i]))
        for u, i in zip(rated.row, rated.col, strict=True)
    }
    csv = np.loadtxt(out.parent / "my-ratings.csv", delimiter=",", skiprows=1)
    train = np.array([r for r in csv if (int(r[0]), int(r[1])) in train_pairs])
    assert len(train) == len(train_pairs) == summary["train_ratings"]
    preds = model.predict(train[:, 0].astype(int), train[:, 1].astype(int))
    # the model's predictions in the data's ids give the run's reported train RMSE
    rmse = float(np.sqrt(np.mean((train[:, 2] - preds) ** 2)))
    assert rmse == pytest.approx(summary["train_rmse"], rel=1e-12)
    assert model.U.shape == (len(model.user_ids), model.V.shape[1])


def test_recommend_leaves_out_rated_items_and_ranks_by_prediction(
    own_run: tuple[Path, dict],
) -> None:
    model = RatingsModel.load(own_run[0])
    user = int(model.user_ids[0])
    rated = set(model.item_ids[model.rated[0].indices].tolist())
    top = model.recommend(user, k=50)
    assert len(top) == len(model.item_ids) - len(rated)
    assert not rated & {item for item, _ in top}
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(model.predict(user, top[0][0])[0])
    everything = model.recommend(user, k=50, exclude_rated=False)
    assert len(everything) == len(model.item_ids)
    with pytest.raises(ModelError, match=r"unknown user id\(s\) \[5\]"):
        model.recommend(5)
    with pytest.raises(ModelError, match="k must be a positive integer"):
        model.recommend(user, k=0)


def test_cli_recommend_and_predict(own_run: tuple[Path, dict], capsys) -> None:
    out = own_run[0]
    model = RatingsModel.load(out)
    user = str(model.user_ids[1])
    assert main(["recommend", str(out), "--user", user, "--top", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [t["item"] for t in top] == [i for i, _ in model.recommend(int(user), 3)]
    item = str(model.item_ids[0])
    assert main(["predict", str(out), "--user", user, "--item", item]) == 0
    line = capsys.readouterr().out.splitlines()[-1].split()
    assert line[:2] == [user, item]
    assert float(line[2]) == pytest.approx(model.predict(int(user), int(item))[0], abs=1e-3)
    assert main(["recommend", str(out.parent), "--user", user]) == 2
    assert "no model at" in capsys.readouterr().err


def test_summary_and_titles_describe_the_users_own_data(own_run: tuple[Path, dict]) -> None:
    _, summary = own_run
    data = summary["scenario"]["data"]
    assert data["path"].endswith("my-ratings.csv")
    # the generator's sizes (n_users = 8 above, or the default) are not reported
    assert "n_users" not in data and "n_items" not in data and "density" not in data
    assert summary["n_users"] <= 6 and summary["n_items"] <= 9


def test_csr_run_writes_a_model_too(tmp_path: Path) -> None:
    summary = cipherfact.simulate(
        "csr-fhe-mf-synthetic",
        tmp_path,
        overrides=["data.n_users=10", "data.n_items=20", "epochs=1"],
        progress=False,
    )
    model = RatingsModel.load(tmp_path / "model.npz")
    assert summary["model"] == "model.npz"
    assert model.U.shape == (10, summary["scenario"]["n_factors"])


def test_readme_ratings_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    """The README's RatingsModel block, run in a temporary folder."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "RatingsModel" in b
    ]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(blocks[0], namespace)
    assert (tmp_path / "runs" / "csr" / "model.npz").exists()
    assert len(namespace["model"].recommend(user=3, k=5)) == 5
