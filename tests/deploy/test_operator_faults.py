"""Operator faults and signals, seen from outside: one-line errors, result.json, aborts.

Every way a deployed agent ends (a bad job file, a port in use, SIGTERM while
waiting for its neighbours) leaves a ``result.json`` with the reason, and no
traceback; ``deploy local`` passes SIGTERM on to its agents and still writes a
summary; ``--resume`` refuses a changed configuration and counts the job's
bytes over both parts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cipherfact.cli import main
from cipherfact.deploy.jobfile import JobFileError, load_job
from cipherfact.deploy.local import deploy_local, launch, wait_all, write_local_job

SCENARIO = "ppdnmf-synthetic"
# 3 agents, each the other two's neighbour, no encryption: seconds. The pairwise
# exchange, because secagg's setup has a race across edges (a share can overtake
# the hub's peer list on another edge: "share for round 0 before the setup finished").
TINY = [
    "topology.degree=2",
    "exchange=pairwise",
    "crypto.scheme=none",
    "inner_iters=3",
    "data.rows=12",
    "data.cols=30",
]
FAST = {"peer_s": 20, "startup_s": 30, "retries": 2, "backoff_s": 0.1, "backoff_max_s": 0.5}


def _result(out: Path, i: int) -> dict[str, Any]:
    return json.loads((out / "agents" / f"agent-{i}" / "result.json").read_text())


def _log(out: Path, i: int) -> str:
    path = out / "agents" / f"agent-{i}" / "agent.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# --- the job file: refused with one line naming the field, result.json where possible ---


def _job(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The tiny job's file with regex edits (each must match)."""
    path = write_local_job(SCENARIO, [*TINY, "outer_iters=2"], 3, tmp_path, insecure=True)
    text = path.read_text()
    for pattern, repl in edits:
        text, n = re.subn(pattern, repl, text, count=1)
        assert n == 1, pattern
    path.write_text(text)
    return path


TIMEOUT = ("\\[job\\]", "[timeouts]\n{}\n\n[job]")


def _timeout(line: str) -> tuple[str, str]:
    return TIMEOUT[0], TIMEOUT[1].format(line)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('(id = 1\naddress = "127.0.0.1:)\\d+', "\\g<1>0"),
            r"agents\[1\]\.address: port 0 is outside 1\.\.65535",
        ),
        (
            ('(id = 0\naddress = "127.0.0.1:\\d+"\nlisten = "127.0.0.1:)\\d+', "\\g<1>70000"),
            r"agents\[0\]\.listen: port 70000 is outside 1\.\.65535",
        ),
        (
            _timeout("startup_s = nan"),
            r"timeouts\.startup_s must be a positive, finite number of seconds, got nan",
        ),
        (
            _timeout("peer_s = inf"),
            r"timeouts\.peer_s must be a positive, finite number of seconds, got inf",
        ),
        (_timeout("backoff_s = -nan"), r"timeouts\.backoff_s must be a positive"),
        (_timeout("rpc_s = 0"), r"timeouts\.rpc_s must be a positive"),
        (_timeout("retries = 1.5"), r"timeouts\.retries must be an integer"),
    ],
)
def test_bad_ports_and_timeouts_are_refused_naming_the_field(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(JobFileError, match=message):
        load_job(_job(tmp_path, edit))


def test_job_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    path = _job(tmp_path, ('out = "agents"', 'out = "taken"'))
    with pytest.raises(JobFileError, match=r"job\.out: '.*taken' exists and is not a directory"):
        load_job(path)
    path = _job(tmp_path, ('out = "agents"', 'out = "taken/sub"'))
    with pytest.raises(
        JobFileError,
        match=r"job\.out: '.*sub' cannot be created: '.*taken' is "
        "not a directory",
    ):
        load_job(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_timeout("startup_s = nan"), "timeouts.startup_s must be"),
        (('(id = 0\naddress = "127.0.0.1:)\\d+', "\\g<1>0"), "agents[0].address: port 0"),
        (('out = "agents"', 'out = "job.toml"'), "job.out: "),
    ],
)
def test_agent_serve_with_a_bad_job_file_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: tuple[str, str], message: str
) -> None:
    path = _job(tmp_path, edit)
    code = main(["agent", "serve", "--job", str(path), "--agent-id", "0", "--insecure"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err
    _no_traceback(err)
    result = tmp_path / "agents" / "agent-0" / "result.json"
    if "job.out" in message:  # nowhere to write it: the error line is all there is
        assert not result.exists()
    else:
        status = json.loads(result.read_text())["status"]
        assert status.startswith("failed before start: JobFileError: ") and message in status


def test_deploy_local_out_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    code = main(
        [
            "deploy",
            "local",
            SCENARIO,
            "--agents",
            "3",
            "--out",
            str(tmp_path / "taken"),
            "--insecure",
            *[a for item in TINY for a in ("--set", item)],
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "error: --out: " in err and "is not a directory" in err, err
    _no_traceback(err)


# --- start-up failures and signals, with real agent processes ----------------------------


def _listening(out: Path, i: int) -> bool:
    return " listening on " in _log(out, i)


@pytest.mark.grpc
def test_port_in_use_fails_with_result_json_and_aborts_the_peers(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, [*TINY, "outer_iters=50"], 3, tmp_path, timeouts=FAST)
    port = int(load_job(job).agent(1).listen.rsplit(":", 1)[1])
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        procs = launch(job, 3, only=0) + launch(job, 3, only=2)
        _wait_for(
            lambda: _listening(tmp_path, 0) and _listening(tmp_path, 2),
            30,
            "agents 0 and 2 to listen",
        )
        started = time.monotonic()
        procs.insert(1, launch(job, 3, only=1)[0])
        codes = wait_all(procs, timeout=FAST["startup_s"] + 10)
        took = time.monotonic() - started
    finally:
        blocker.close()
    assert codes == [1, 1, 1], [_log(tmp_path, i) for i in range(3)]
    failed = _result(tmp_path, 1)["status"]
    assert failed.startswith("failed before start: ") and f"{port}" in failed, failed
    assert "\n" not in failed
    for i in (0, 2):  # told by agent 1's abort notice, long before startup_s
        status = _result(tmp_path, i)["status"]
        assert status.startswith("failed: ") and "agent 1 aborted the job" in status, status
        assert f"{port}" in status
    assert took < FAST["startup_s"] / 2
    for i in range(3):
        _no_traceback(_log(tmp_path, i))
        assert sum(x.startswith("error: ") for x in _log(tmp_path, i).splitlines()) == 1


@pytest.mark.grpc
def test_sigterm_while_waiting_for_peers_stops_within_a_second(tmp_path: Path) -> None:
    # agent 2 never comes: agents 0 and 1 wait (and retry) for it
    job = write_local_job(SCENARIO, [*TINY, "outer_iters=50"], 3, tmp_path, timeouts=FAST)
    procs = launch(job, 3, only=0) + launch(job, 3, only=1)
    _wait_for(lambda: _listening(tmp_path, 0) and _listening(tmp_path, 1), 30, "listening")
    time.sleep(1.0)  # well into the retries towards agent 2
    assert [p.poll() for p in procs] == [None, None]
    procs[0].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    codes = wait_all(procs, timeout=15)
    took = time.monotonic() - sent
    assert codes == [143, 1], [_log(tmp_path, i) for i in range(2)]
    assert took < 2.5, took
    stopped = _result(tmp_path, 0)
    assert "stopped by SIGTERM" in stopped["status"] and stopped["stop_signal"] == "SIGTERM"
    assert stopped["status"].startswith("stopped: agent 0 stopped by signal at ")
    told = _result(tmp_path, 1)["status"]
    assert "agent 0 aborted the job" in told and "stopped by SIGTERM" in told, told
    for i in range(2):
        _no_traceback(_log(tmp_path, i))


@pytest.mark.grpc
def test_sigterm_to_deploy_local_stops_its_agents_and_writes_a_partial_summary(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "cipherfact.cli",
        "deploy",
        "local",
        SCENARIO,
        "--agents",
        "3",
        "--out",
        str(out),
        "--insecure",
        "--peer-timeout",
        "20",
    ]
    for item in [*TINY, "outer_iters=100000"]:
        cmd += ["--set", item]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        metrics = [out / "agents" / f"agent-{i}" / "metrics.jsonl" for i in range(3)]
        _wait_for(
            lambda: all(m.exists() and m.stat().st_size > 0 for m in metrics),
            60,
            "every agent to finish an outer iteration",
        )
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert took < 10, took
    _no_traceback(stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    assert json.loads(stdout)["status"] == "interrupted"
    assert summary["bytes_total"] > 0 and len(summary["exit_codes"]) == 3
    assert all(c in (143, 1) for c in summary["exit_codes"]), summary["exit_codes"]
    for i in range(3):  # each agent stopped (or was told by a peer that stopped) and said so
        status = _result(out, i)["status"]
        assert "stopped by SIGTERM" in status, status
        _no_traceback(_log(out, i))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and json.loads(lines[0])["outer"] == 0  # the outer iterations all finished


# --- resume: a changed configuration is refused; bytes add up over both parts -------------


@pytest.mark.grpc
def test_resume_refuses_a_changed_configuration_and_counts_both_parts(tmp_path: Path) -> None:
    from cipherfact.deploy.node_base import NodeError
    from cipherfact.deploy.nodes import make_node
    from cipherfact.deploy.party_checkpoint import checkpoint_path

    overrides = [*TINY, "outer_iters=4"]
    full = deploy_local(
        SCENARIO,
        3,
        tmp_path,
        overrides,
        checkpoint_every=1,
        insecure=True,
        timeouts={"peer_s": 20},
        timeout_s=120,
    )
    assert full["status"] == "completed", full["status"]
    # As if the job had been interrupted after outer iteration 2: the newer checkpoints go.
    for i in range(3):
        for t in (3, 4):
            checkpoint_path(tmp_path / "agents" / f"agent-{i}", t).unlink()

    changed = [x.replace("inner_iters=3", "inner_iters=5") for x in overrides]
    with pytest.raises(ValueError, match=r"inner_iters: 3 in the checkpoint, 5 now") as refused:
        deploy_local(
            SCENARIO,
            3,
            tmp_path,
            changed,
            checkpoint_every=1,
            resume=True,
            insecure=True,
            timeout_s=60,
        )
    assert "\n" not in str(refused.value)
    # An agent started by hand with the changed job file refuses too, and says so.
    job = write_local_job(SCENARIO, changed, 3, tmp_path / "by-hand", insecure=True)
    by_hand = load_job(job)
    (by_hand.agent_out(0) / "checkpoints").mkdir(parents=True)
    ckpt = checkpoint_path(tmp_path / "agents" / "agent-0", 2)
    checkpoint_path(by_hand.agent_out(0), 2).write_bytes(ckpt.read_bytes())
    with pytest.raises(
        NodeError,
        match=r"agent 0: cannot resume .*inner_iters: 3 in the "
        "checkpoint, 5 now",
    ):
        make_node(by_hand, 0, resume_from=2).run()
    status = json.loads((by_hand.agent_out(0) / "result.json").read_text())["status"]
    assert status.startswith("failed before start: NodeError: ") and "inner_iters" in status

    resumed = deploy_local(
        SCENARIO,
        3,
        tmp_path,
        overrides,
        checkpoint_every=1,
        resume=True,
        insecure=True,
        timeouts={"peer_s": 20},
        timeout_s=120,
    )
    assert resumed["status"] == "completed", resumed["status"]
    assert resumed["resumed_from"] == 2
    for key in ("bytes_total", "bytes_setup", "messages_total", "grpc_bytes_total"):
        assert resumed[key] == full[key], key
    # what this run sent: outers 2 and 3 again, plus one more key exchange
    assert resumed["bytes_resume_setup"] == full["bytes_setup"]
    assert resumed["bytes_this_run"] < full["bytes_total"]
    assert resumed["wall_s_total"] > 0
    outers = [json.loads(x)["outer"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert outers[-4:] == [0, 1, 2, 3]
