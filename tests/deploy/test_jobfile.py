"""JOB.toml parsing: every mistake is named before any key is generated."""

from __future__ import annotations

from pathlib import Path

import pytest

from cipherfact.deploy.cli import add_subcommands  # noqa: F401 - the CLI module must import
from cipherfact.deploy.jobfile import JobFileError, load_job, render_job
from cipherfact.deploy.node import plan_node

from .conftest import SMALL

ADDRS = ["127.0.0.1:50001", "127.0.0.1:50002", "127.0.0.1:50003", "127.0.0.1:50004"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def good(**kwargs: object) -> str:
    args: dict[str, object] = {
        "scenario": "ppdnmf-synthetic",
        "overrides": [*SMALL, "n_agents=4"],
        "addresses": ADDRS,
        "out": "res",
        "certs": "certs",
    }
    args.update(kwargs)
    return render_job(**args)  # type: ignore[arg-type]


def test_rendered_job_loads(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, good(checkpoint_every=2)))
    assert sorted(job.agents) == [0, 1, 2, 3]
    assert job.agent(2).address == ADDRS[2]
    assert job.checkpoint_every == 2 and not job.private_seeds
    files = job.tls_files(3)
    assert files is not None and files.cert == tmp_path / "certs" / "agent-3.pem"
    assert job.agent_out(1) == tmp_path / "res" / "agent-1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\n[extra]\n", "unknown key 'extra'"),
        (lambda t: t.replace("[job]", "[job]\nbogus = 1"), r"unknown key 'bogus' in \[job\]"),
        (
            lambda t: t.replace('address = "127.0.0.1:50002"', 'address = "nohost"'),
            r"agents\[1\].address must be 'host:port'",
        ),
        (lambda t: t.replace("id = 3", "id = 2"), "duplicate agent id 2"),
        (lambda t: t.replace("id = 3", "id = 7"), r"ids must be 0..3"),
        (lambda t: t.replace("[tls]", "[tlsx]"), r"unknown key 'tlsx'"),
        (lambda t: t + "\n[timeouts]\npeer_s = -1\n", "timeouts.peer_s must be a positive"),
        (lambda t: t + "\n[timeouts]\nretries = -1\n", "timeouts.retries must be an integer"),
        (lambda t: t + "\n[graph]\nedges = [[0, 1, 2]]\n", "graph.edges must be a list"),
        (
            lambda t: t.replace("checkpoint_every = 0", "checkpoint_every = -2"),
            "job.checkpoint_every must be >= 0",
        ),
        (lambda t: t.replace('scenario = "ppdnmf-synthetic"', ""), "give exactly one of"),
    ],
)
def test_bad_job_files_are_refused(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobFileError, match=message):
        load_job(write(tmp_path, edit(good())))


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"job file .* does not exist"):
        load_job(tmp_path / "nope.toml")


def test_tls_required_unless_insecure(tmp_path: Path) -> None:
    text = good().replace("insecure = false", "insecure = false").split("[tls]")[0]
    text += "\n".join(good().split("[tls]")[1].split("\n")[4:])
    with pytest.raises(JobFileError, match=r"\[tls\] ca is required"):
        load_job(write(tmp_path, text))
    assert load_job(write(tmp_path, good(certs=None))).tls_files(0) is None


def test_unknown_agent_id(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="agent id 9 is not in"):
        load_job(write(tmp_path, good())).agent(9)


def test_per_agent_data_path_and_explicit_graph(tmp_path: Path) -> None:
    import numpy as np

    block = np.abs(np.random.default_rng(0).normal(size=(12, 9)))
    np.save(tmp_path / "mine.npy", block)
    text = good().replace(
        'address = "127.0.0.1:50002"', 'address = "127.0.0.1:50002"\ndata_path = "mine.npy"'
    )
    path_graph = text + "\n[graph]\nedges = [[0, 1], [1, 2], [2, 3]]\n"
    with pytest.raises(ValueError, match=r"secagg exchange needs .* agent\(s\) \[0, 3\]"):
        plan_node(load_job(write(tmp_path, path_graph)), 1)  # ends of a path: one neighbour
    text += "\n[graph]\nedges = [[0, 1], [1, 2], [2, 3], [3, 0]]\n"
    job = load_job(write(tmp_path, text))
    plan = plan_node(job, 1)
    assert np.array_equal(plan.X, block) and plan.columns is None
    assert plan.graph.neighbors(1) == (0, 2)
    seeds = {(plan_node(job, 1).weight_seed) for _ in range(2)}  # private seeds by default?
    assert len(seeds) == 1  # render_job writes private_seeds = false (reproducible)


# --- csr_fhe_mf jobs: RS (0), CSP (1), one process per user ------------------------------

CSR_SMALL = ["data.n_users=3", "data.n_items=10", "data.density=0.5", "epochs=2"]


def csr_job(n_parties: int, **kwargs: object) -> str:
    return good(
        scenario="csr-fhe-mf-synthetic",
        overrides=CSR_SMALL,
        addresses=[f"127.0.0.1:{50100 + i}" for i in range(n_parties)],
        **kwargs,
    )


def test_csr_job_has_rs_csp_and_one_agent_per_user(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, csr_job(5)))
    assert job.scenario.protocol == "csr_fhe_mf" and sorted(job.agents) == [0, 1, 2, 3, 4]
    # RS and the CSP keep checkpoints (users keep nothing)
    text = csr_job(5).replace("checkpoint_every = 0", "checkpoint_every = 2")
    assert load_job(write(tmp_path, text)).checkpoint_every == 2


def test_csr_job_with_the_wrong_number_of_parties_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"3 users, so RS \(0\), CSP \(1\).*0\.\.4"):
        load_job(write(tmp_path, csr_job(4)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\n[graph]\nedges = [[0, 1]]\n", r"\[graph\] edges cannot be used"),
        (
            lambda t: t.replace(
                'address = "127.0.0.1:50100"', 'address = "127.0.0.1:50100"\ndata_path = "x.csv"'
            ),
            r"RS \(0\) and the CSP \(1\) hold no ratings",
        ),
        (
            lambda t: t.replace(
                'address = "127.0.0.1:50102"', 'address = "127.0.0.1:50102"\ndata_path = "x.csv"'
            ),
            r"users \[3, 4\] have no data_path",
        ),
    ],
)
def test_csr_job_refuses_ppdnmf_only_settings(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobFileError, match=message):
        load_job(write(tmp_path, edit(csr_job(5))))


def test_fedmf_job_needs_the_server_and_one_agent_per_user(tmp_path: Path) -> None:
    text = good(scenario="fedmf-synthetic", overrides=["epochs=1"])
    with pytest.raises(JobFileError, match=r"the server \(0\) and users \(1\.\.\), so ids must be"):
        load_job(write(tmp_path, text))


def test_local_csr_job_counts_its_parties_and_checks_agents() -> None:
    from cipherfact.deploy.local import local_parties

    assert local_parties("csr-fhe-mf-synthetic", CSR_SMALL, None) == (CSR_SMALL, 5)
    with pytest.raises(ValueError, match="runs 5 processes"):
        local_parties("csr-fhe-mf-synthetic", CSR_SMALL, 4)
    overrides, n = local_parties("ppdnmf-synthetic", SMALL, None)
    assert n == 10 and overrides[-1] == "n_agents=10"


def _with_user_files(text: str, ids: list[int]) -> str:
    for i in ids:
        text = text.replace(
            f'address = "127.0.0.1:{50100 + i}"',
            f'address = "127.0.0.1:{50100 + i}"\ndata_path = "user-{i}.csv"',
        )
    return text


def test_csr_users_with_their_own_rating_files_set_the_party_count(tmp_path: Path) -> None:
    # 4 parties = 2 users, whatever the scenario's data would give (3 users)
    job = load_job(write(tmp_path, _with_user_files(csr_job(4), [2, 3])))
    assert job.users_own_ratings and sorted(job.agents) == [0, 1, 2, 3]
    assert job.agent(3).data_path == tmp_path / "user-3.csv"
    hidden = csr_job(4).replace("set = [", 'set = ["crypto.hide_pattern=true", ')
    with pytest.raises(JobFileError, match=r"set crypto\.pad_to"):
        load_job(write(tmp_path, _with_user_files(hidden, [2, 3])))
    padded = csr_job(4).replace("set = [", 'set = ["crypto.hide_pattern=true", "crypto.pad_to=5", ')
    with pytest.raises(JobFileError, match=r"set item_norm > 0"):
        load_job(write(tmp_path, _with_user_files(padded, [2, 3])))
    fixed = padded.replace("set = [", 'set = ["item_norm=4.0", ')
    assert load_job(write(tmp_path, _with_user_files(fixed, [2, 3]))).users_own_ratings


def test_a_user_with_a_bad_ratings_file_fails_before_start_and_says_why(tmp_path: Path) -> None:
    import json

    from cipherfact.deploy.node_base import NodeError
    from cipherfact.deploy.nodes import make_node

    job = load_job(write(tmp_path, _with_user_files(csr_job(4), [2, 3])))
    (tmp_path / "user-2.csv").write_text("item,rating\n99,4\n", encoding="utf-8")
    with pytest.raises(NodeError, match=r"agent 2: .*item '99' is not an index in 0\.\.9"):
        make_node(job, 2).run()
    result = json.loads((job.agent_out(2) / "result.json").read_text())
    assert result["status"].startswith("failed before start: ValueError")


def test_deploy_local_resume_needs_a_job_and_every_checkpoint(tmp_path: Path) -> None:
    from cipherfact.deploy.local import deploy_local, write_local_job

    with pytest.raises(FileNotFoundError, match=r"cannot resume: .*job\.toml does not exist"):
        deploy_local("csr-fhe-mf-synthetic", None, tmp_path, CSR_SMALL, resume=True)
    write_local_job("csr-fhe-mf-synthetic", CSR_SMALL, None, tmp_path, checkpoint_every=1)
    # RS (0) and the CSP (1) keep checkpoints; users (2..) are not waited for
    with pytest.raises(ValueError, match=r"cannot resume: agents \[0, 1\] have no checkpoint"):
        deploy_local("csr-fhe-mf-synthetic", None, tmp_path, CSR_SMALL, resume=True)
