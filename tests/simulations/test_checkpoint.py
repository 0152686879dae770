"""Checkpoints: round trip, atomic replacement, refusal of foreign or broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cipherfact.protocols.ppdnmf import load_state_npz, save_state_npz
from cipherfact.simulations.checkpoint import (
    CheckpointError,
    app_meta,
    config_changes,
    config_digest,
    data_digest,
    has_checkpoint,
    job_meta,
    load_checkpoint,
    public_config,
    save_checkpoint,
)

X = np.arange(12, dtype=np.float64).reshape(3, 4)
META = job_meta("job-a", 2, 4, X, [(0, 1)])


def _states(value: float) -> dict[int, bytes]:
    return {
        i: save_state_npz({"W": np.full((3, 2), value + i), "round": 8, "outer": 2, "W_prev": None})
        for i in range(2)
    }


def test_round_trip(tmp_path: Path) -> None:
    assert not has_checkpoint(tmp_path)
    folder = save_checkpoint(tmp_path, 2, _states(1.0), META)
    assert folder.name == "outer-000002"
    assert has_checkpoint(tmp_path)
    ckpt = load_checkpoint(tmp_path, META)
    assert ckpt.outer == 2
    state = load_state_npz(ckpt.states[1])
    assert np.array_equal(state["W"], np.full((3, 2), 2.0))
    assert state["W_prev"] is None and int(state["round"]) == 8


def test_newer_checkpoint_replaces_the_older(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)
    save_checkpoint(tmp_path, 4, _states(5.0), META)
    ckpt = load_checkpoint(tmp_path, META)
    assert ckpt.outer == 4
    assert np.array_equal(load_state_npz(ckpt.states[0])["W"], np.full((3, 2), 5.0))
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "latest.json",
        "outer-000004",
    ]


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)
    # a half-written newer checkpoint: folder started, latest.json never replaced
    partial = tmp_path / "checkpoint" / ".outer-000004.tmp"
    partial.mkdir()
    (partial / "agent-00000.npz").write_bytes(b"garbage")
    assert load_checkpoint(tmp_path, META).outer == 2
    save_checkpoint(tmp_path, 4, _states(5.0), META)  # a later save cleans up
    assert not partial.exists()


def test_checkpoint_of_another_job_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)
    other = job_meta("job-a", 2, 4, X + 1.0, [(0, 1)])
    with pytest.raises(CheckpointError, match="data_graph_sha256: the data or the graph differ"):
        load_checkpoint(tmp_path, other)
    with pytest.raises(CheckpointError, match="belongs to another job: job_id is 'job-a'"):
        load_checkpoint(tmp_path, {**META, "job_id": "job-b"})


def test_changed_inner_iters_is_refused_naming_the_field(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)
    changed = job_meta("job-a", 2, 7, X, [(0, 1)])
    with pytest.raises(
        CheckpointError,
        match=r"configuration changed \(inner_iters: 4 in the checkpoint, 7 now\)",
    ):
        load_checkpoint(tmp_path, changed)


def _config(*overrides: str) -> dict:
    from cipherfact.protocols.ppdnmf.job import prepare_job
    from cipherfact.simulations.scenario import load_scenario

    job = prepare_job(
        load_scenario("ppdnmf-synthetic", ["n_agents=4", "crypto.scheme=none", *overrides])
    )
    return public_config(job.scenario, job.graph.edges, job.codec)


def test_public_config_names_every_changed_field(tmp_path: Path) -> None:
    base = _config("inner_iters=5")
    assert base["inner_iters"] == 5 and base["crypto.scheme"] == "none"
    assert "graph.edges" in base and "codec.frac_bits" in base
    assert "crypto.processes" not in base  # speed only: may change on resume
    assert config_digest(base) == config_digest(_config("inner_iters=5", "crypto.processes=2"))
    meta = job_meta("job-a", 2, 5, X, [(0, 1)], config=base)
    assert meta["config_sha256"] == config_digest(base)
    save_checkpoint(tmp_path, 2, _states(1.0), meta)
    assert load_checkpoint(tmp_path, meta).outer == 2  # the same configuration resumes
    changed = _config("inner_iters=5", "admm.penalty=3.0", "crypto.frac_bits=12")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path, job_meta("job-a", 2, 5, X, [(0, 1)], config=changed))
    message = str(info.value)
    assert "admm.penalty: 10.0 in the checkpoint, 3.0 now" in message
    assert "crypto.frac_bits: 15 in the checkpoint, 12 now" in message
    assert "codec.frac_bits" in message  # the codec follows the crypto setting
    assert "\n" not in message
    assert config_changes(base, base) == []


def test_checkpoint_without_a_recorded_configuration_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)  # an older checkpoint: no config
    with pytest.raises(CheckpointError, match="records no job configuration"):
        load_checkpoint(tmp_path, job_meta("job-a", 2, 4, X, [(0, 1)], config=_config()))


def test_missing_checkpoint_and_missing_agent(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        load_checkpoint(tmp_path, META)
    save_checkpoint(tmp_path, 2, {0: _states(1.0)[0]}, META)  # meta says 2 agents
    with pytest.raises(CheckpointError, match="lacks the state of agent 1"):
        load_checkpoint(tmp_path, META)


def test_latest_json_holds_no_state(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, _states(1.0), META)
    info = json.loads((tmp_path / "checkpoint" / "latest.json").read_text())
    assert info == {"dir": "outer-000002", "meta": META, "outer": 2}


@pytest.mark.parametrize(
    ("outer", "states", "exc", "message"),
    [
        (0, {0: b"x"}, ValueError, "checkpoint outer must be an integer >= 1, got 0"),
        (True, {0: b"x"}, ValueError, "checkpoint outer must be an integer >= 1, got True"),
        (1, {}, ValueError, "checkpoint states are empty"),
        (1, {3: "x"}, TypeError, "checkpoint state of agent 3 must be bytes, got str"),
    ],
)
def test_save_validation(tmp_path: Path, outer: int, states: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        save_checkpoint(tmp_path, outer, states, META)


def test_files_are_private_to_the_owner(tmp_path: Path) -> None:
    import stat

    folder = save_checkpoint(tmp_path, 2, _states(0.0), META)
    assert stat.S_IMODE((tmp_path / "checkpoint").stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in [*folder.iterdir(), tmp_path / "checkpoint" / "latest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_app_meta_refuses_other_data_naming_it(tmp_path: Path) -> None:
    config = public_config({"lr": 0.1})
    meta = app_meta("job", 3, data_digest(X), config)
    save_checkpoint(tmp_path, 1, {i: b"x" for i in range(3)}, meta)
    assert load_checkpoint(tmp_path, meta).outer == 1
    other = app_meta("job", 3, data_digest(X + 1), config)
    with pytest.raises(CheckpointError, match=r"\(data_sha256: the data differ\)"):
        load_checkpoint(tmp_path, other)
    changed = app_meta("job", 3, data_digest(X + 1), public_config({"lr": 0.2}))
    with pytest.raises(CheckpointError, match=r"\(lr: 0.1 in the checkpoint, 0.2 now\)"):
        load_checkpoint(tmp_path, changed)  # the changed setting explains the data
    assert data_digest(X) != data_digest(X.astype(np.float32))
