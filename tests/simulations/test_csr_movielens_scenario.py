"""The bundled ``csr-movielens-size`` scenario and ``data.generator`` (issue 18)."""

from __future__ import annotations

import pytest

from cipherfact.protocols.ratings.job import csr_config, load_split
from cipherfact.simulations.scenario import ScenarioError, load_scenario


def test_movielens_size_scenario_has_the_shape() -> None:
    s = load_scenario("csr-movielens-size", [])
    split = load_split(s.data, s.seed)
    assert (split.train.n_users, split.train.n_items) == (610, 9724)
    assert split.train.n_ratings + split.test.n_ratings == round(0.017 * 610 * 9724)
    cfg = csr_config(s, split.train)
    assert cfg.plan().name == "n8192-depth2-s30" and not cfg.hide_pattern


def test_hide_pattern_scenario_gets_a_public_item_divisor() -> None:
    s = load_scenario("csr-fhe-mf-synthetic", ["crypto.hide_pattern=true"])
    train = load_split(s.data, s.seed).train
    cfg = csr_config(s, train)
    counts = [int((train.items == i).sum()) for i in range(train.n_items)]
    assert cfg.item_norm == max(counts)
    cfg = csr_config(
        load_scenario("csr-fhe-mf-synthetic", ["crypto.hide_pattern=true", "item_norm=50"]), train
    )
    assert cfg.item_norm == 50


def test_unknown_generator_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"data\.generator must be one of"):
        load_scenario("csr-fhe-mf-synthetic", ["data.generator=zipf"])
