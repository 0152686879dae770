"""A real two-node Ray cluster on loopback, joined with ``--ray-address``.

The fixture follows docs/ray-cluster.md: the head makes a token
(``ray get-auth-token --generate``, its own HOME so no real ``~/.ray`` is
touched) and starts with ``RAY_AUTH_MODE=token``; the worker node and every
driver get ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``. Each node has 1 CPU,
its own ports and its own temp dir; both run as ``ray start --block`` in a
session of their own, so teardown signals exactly those process groups (and
anything still naming the temp dir), never another Ray on the machine.

Every protocol runs through ``cipherfact simulate --backend ray --ray-address``
and is compared with the in-memory run; the cluster's actor table shows that
each run placed actors on both nodes. A driver without the token, or with a
wrong one, and an address where nothing listens each get one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray")

from cipherfact.deploy.local import free_ports
from cipherfact.simulations import simulate as sim
from cipherfact.simulations.ray_cluster import (
    RayClusterError,
    refused_message,
    split_address,
)
from cipherfact.simulations.scenario import load_scenario

pytestmark = pytest.mark.ray

START_TIMEOUT_S = 150.0  # a loaded 2-core machine takes a while to start a node
STOP_GRACE_S = 10.0
START_ATTEMPTS = 3
RUN_TIMEOUT_S = 240.0
# Variables that would point a process at another cluster or another token.
RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

# Small and crypto-light where the protocol allows (ppdnmf: secagg masks only).
RUNS: dict[str, list[str]] = {
    "ppdnmf-synthetic": [
        "n_agents=6",
        "outer_iters=2",
        "inner_iters=3",
        "data.rows=12",
        "data.cols=40",
        "crypto.scheme=none",
    ],
    "csr-fhe-mf-synthetic": ["data.n_users=12", "data.n_items=24", "epochs=2"],
    "fedmf-synthetic": [
        "data.n_users=12",
        "data.n_items=24",
        "epochs=2",
        "crypto.key_bits=512",
        "crypto.insecure_test_keys=true",
    ],
}
CKKS_RMSE_TOL = 1e-4  # fresh CKKS noise in every run, in memory too


def ray_exe() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        pytest.skip("the `ray` command is not installed")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
        # a busy machine starts the dashboard agent slowly; the raylet waits for it
        RAY_agent_register_timeout_ms="120000",
        RAY_worker_register_timeout_seconds="300",
    )
    env.update(extra)
    return env


@dataclass
class Cluster:
    address: str
    token: str
    tmp: Path
    head_dir: Path

    def driver_env(self, **extra: str) -> dict[str, str]:
        return clean_env(**{"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **extra})


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _daemon_errors(tmp: Path) -> str:
    """Fatal and error lines from the nodes' Ray daemon logs (why a node did not start)."""
    found = []
    for path in sorted({q.resolve() for q in tmp.glob("**/session_2*/logs/*.out")}):
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if " C " in line or " E " in line or "Check failed" in line:
                    found.append(f"{path.name}: {line[:300]}")
    return "\n".join(found[-10:])


def _wait_started(proc: subprocess.Popen[bytes], log: Path) -> str | None:
    """None once the node is up, else why it is not (it exited, or took too long)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return None
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        time.sleep(0.5)
    return f"not started within {START_TIMEOUT_S:g} s"


def _node_ports(p: list[int]) -> list[str]:
    return [
        f"--node-manager-port={p[0]}",
        f"--object-manager-port={p[1]}",
        f"--dashboard-agent-listen-port={p[2]}",
        f"--dashboard-agent-grpc-port={p[3]}",
        f"--metrics-export-port={p[4]}",
        f"--runtime-env-agent-port={p[5]}",
    ]


def _start_node(
    cmd: list[str], env: dict[str, str], folder: Path, what: str, procs: list[Any]
) -> None:
    """``ray start --block`` in its own session; a node whose start fails is stopped and
    started again with fresh ports and temp dir (Ray waits a fixed 30 s for its own
    daemons, which a loaded 2-core machine can miss), at most ``START_ATTEMPTS`` times."""
    why = ""
    for attempt in range(START_ATTEMPTS):
        ports = free_ports(7)
        extra = [f"--temp-dir={folder / f'ray{attempt}'}", *_node_ports(ports)]
        if "--head" in cmd:
            extra.append(f"--ray-client-server-port={ports[6]}")
        log = folder / f"{what}-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*cmd, *extra],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        failed = _wait_started(proc, log)
        if failed is None:
            return
        why = f"{what} {failed}:\n{_tail(log, 3)}\n{_daemon_errors(folder / f'ray{attempt}')}"
        _stop([proc], folder / f"ray{attempt}")
    pytest.fail(f"{why}\n({START_ATTEMPTS} attempts)")


def _ours(tmp: Path) -> list[int]:
    """Processes whose command line names our temp dir (Ray's daemons all do)."""
    pids = []
    needle = str(tmp).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _stop(procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    """SIGTERM each ``ray start --block`` session (it stops its node's daemons), then
    SIGKILL what is left of those groups and of processes naming ``tmp``."""
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
    if sys.platform.startswith("linux"):
        for pid in _ours(tmp):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    ray = ray_exe()
    tmp = Path(tempfile.mkdtemp(prefix="cfray-"))  # short: Ray's socket paths must fit
    procs: list[subprocess.Popen[bytes]] = []
    try:
        home, head_dir, worker_dir = tmp / "home", tmp / "head", tmp / "worker"
        for folder in (home, head_dir, worker_dir):
            folder.mkdir()
        head_env = clean_env(HOME=str(home), RAY_AUTH_MODE="token")
        # docs/ray-cluster.md, on the head: make the token (printed on stdout)
        made = subprocess.run(
            [ray, "get-auth-token", "--generate"],
            env=head_env,
            capture_output=True,
            timeout=120,
            check=True,
        )
        token = made.stdout.decode().strip()
        assert len(token) >= 32
        assert (home / ".ray" / "auth_token").read_text().strip() == token
        (gcs,) = free_ports(1)
        common = ["--block", "--num-cpus=1", "--disable-usage-stats", "--include-log-monitor=false"]
        head_cmd = [
            ray,
            "start",
            "--head",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            *common,
        ]
        _start_node(head_cmd, head_env, head_dir, "head", procs)
        address = f"127.0.0.1:{gcs}"
        # docs/ray-cluster.md, on every worker machine: the head's token in the environment
        worker_env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        worker_cmd = [ray, "start", f"--address={address}", *common]
        _start_node(worker_cmd, worker_env, worker_dir, "worker", procs)
        yield Cluster(address, token, tmp, head_dir)
    finally:
        _stop(procs, tmp)
        for _ in range(10):  # daemons killed a moment ago may still be closing their logs
            shutil.rmtree(tmp, ignore_errors=True)
            if not tmp.exists():
                break
            time.sleep(0.5)


def _cli(
    args: list[str],
    env: dict[str, str],
    timeout: float = RUN_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cipherfact.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _simulate_args(name: str, out: Path, address: str) -> list[str]:
    args = [
        "simulate",
        name,
        "--backend",
        "ray",
        "--ray-address",
        address,
        "--quiet",
        "--out",
        str(out),
    ]
    for item in RUNS[name]:
        args += ["--set", item]
    return args


def _inmemory(name: str, out: Path) -> dict[str, Any]:
    opts = sim.SimOptions(progress=False)
    return sim.simulate(load_scenario(name, RUNS[name]), out, options=opts)


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _actors_by_job(cluster: Cluster) -> tuple[set[str], dict[str, set[str]]]:
    """(alive node ids, job id -> node ids of its actors), read from the cluster's GCS."""
    script = (
        "import json, ray\n"
        "from ray._private import state\n"
        f"ray.init(address={cluster.address!r}, log_to_driver=False)\n"
        "nodes = [n['NodeID'] for n in ray.nodes() if n['Alive']]\n"
        "actors = [{'job': a['JobID'], 'node': a['Address']['NodeID']}\n"
        "          for a in state.actors().values()]\n"
        "print(json.dumps({'nodes': nodes, 'actors': actors}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=cluster.driver_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    jobs: dict[str, set[str]] = {}
    for a in data["actors"]:
        jobs.setdefault(a["job"], set()).add(a["node"])
    return set(data["nodes"]), jobs


def test_every_protocol_on_two_nodes_equals_inmemory(cluster: Cluster, tmp_path: Path) -> None:
    summaries = {}
    for name in RUNS:
        # HOST:PORT as documented; ppdnmf also tries `auto`, resolved from RAY_ADDRESS
        # (a bare `auto` would find whichever cluster this machine started last)
        auto = name == "ppdnmf-synthetic"
        address = "auto" if auto else cluster.address
        env = cluster.driver_env(**({"RAY_ADDRESS": cluster.address} if auto else {}))
        done = _cli(_simulate_args(name, tmp_path / f"{name}-ray", address), env)
        assert done.returncode == 0, (
            f"{name}: {done.stderr[-3000:]}\n{_daemon_errors(cluster.head_dir)}"
        )
        summaries[name] = json.loads((tmp_path / f"{name}-ray" / "summary.json").read_text())
        assert summaries[name]["status"] == "completed"
        assert summaries[name]["ray"]["actors"] == 2  # one per CPU of the cluster

    # ppdnmf: the factors bit for bit, and every count
    name = "ppdnmf-synthetic"
    mem = _inmemory(name, tmp_path / "ppdnmf-mem")
    ray_s = summaries[name]
    with (
        np.load(tmp_path / "ppdnmf-mem" / "factors.npz") as a,
        np.load(tmp_path / f"{name}-ray" / "factors.npz") as b,
    ):
        assert sorted(a.files) == sorted(b.files) and len(a.files) == 3 * 6  # W, H, columns
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    for key in ("rel_error", "bytes_total", "messages_total", "traffic_per_agent"):
        assert ray_s[key] == mem[key], key
    assert ray_s["ray"]["cross_actor_messages"] > 0

    # fedmf: exact (Paillier arithmetic is exact; keys differ, numbers do not)
    name = "fedmf-synthetic"
    mem = _inmemory(name, tmp_path / "fedmf-mem")
    for key in ("train_rmse", "test_rmse", "plain_test_rmse", "bytes_total"):
        assert summaries[name][key] == mem[key], key

    # csr_fhe_mf: to CKKS noise, the plaintext twin exactly
    name = "csr-fhe-mf-synthetic"
    _inmemory(name, tmp_path / "csr-mem")
    pairs = zip(_metrics(tmp_path / "csr-mem"), _metrics(tmp_path / f"{name}-ray"), strict=True)
    for a, b in pairs:
        assert abs(a["train_rmse"] - b["train_rmse"]) < CKKS_RMSE_TOL
        assert abs(a["test_rmse"] - b["test_rmse"]) < CKKS_RMSE_TOL
        assert a["plain_test_rmse"] == b["plain_test_rmse"]

    # every run placed its actors on both nodes
    nodes, jobs = _actors_by_job(cluster)
    assert len(nodes) == 2
    assert len(jobs) == len(RUNS), jobs
    for job, used in jobs.items():
        assert used == nodes, f"job {job} ran actors on {used} only"


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr
    return errors[0]


def test_driver_without_the_token_gets_one_line(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    done = _cli(
        _simulate_args("ppdnmf-synthetic", tmp_path / "r", cluster.address),
        clean_env(HOME=str(tmp_path)),
        timeout=120,
    )
    line = _one_error_line(done)
    assert "requires an authentication token and this driver sent none" in line
    assert "RAY_AUTH_MODE=token" in line and cluster.address in line
    assert time.monotonic() - started < 60  # not ray.init's long retry loop


def test_driver_with_a_wrong_token_gets_one_line(cluster: Cluster, tmp_path: Path) -> None:
    wrong = "0" * 64
    done = _cli(
        _simulate_args("ppdnmf-synthetic", tmp_path / "r", cluster.address),
        cluster.driver_env(RAY_AUTH_TOKEN=wrong),
        timeout=120,
    )
    line = _one_error_line(done)
    assert "refused this driver's authentication token (read from RAY_AUTH_TOKEN)" in line
    assert wrong not in done.stderr and cluster.token not in done.stderr


def test_nothing_listening_gets_one_line(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # released: nothing listens there now
    address = f"127.0.0.1:{port}"
    done = _cli(
        _simulate_args("ppdnmf-synthetic", tmp_path / "r", address), clean_env(), timeout=120
    )
    line = _one_error_line(done)
    assert f"cannot join the Ray cluster at {address}: nothing listens there" in line


@pytest.mark.parametrize("address", ["head", "10.0.0.1:", "10.0.0.1:http", "h:70000", ":80"])
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(RayClusterError, match="is not HOST:PORT"):
        split_address(address)
    assert split_address("[::1]:6379") == ("::1", 6379)
    assert split_address("10.0.0.1:6379") == ("10.0.0.1", 6379)


def test_refusal_messages_never_hold_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret" * 8)
    for token_mode in (False, True):
        line = refused_message("10.0.0.1:6379", token_mode)
        assert "s3cret" not in line and "\n" not in line
    assert "sent none" in refused_message("h:1", False)
    assert "(read from RAY_AUTH_TOKEN)" in refused_message("h:1", True)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/ray/token")
    assert "(read from RAY_AUTH_TOKEN_PATH=/etc/ray/token)" in refused_message("h:1", True)


def _doc_commands(path: Path) -> list[list[str]]:
    """Shell lines of the ```bash blocks of a doc, comments dropped, split into words."""
    import shlex

    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            lines.append(shlex.split(line.split(" #")[0].replace("<the head's token>", "T")))
    return lines


@pytest.mark.parametrize("doc", ["docs/ray-cluster.md", "README.md"])
def test_documented_cluster_commands_exist_as_written(doc: str) -> None:
    """Every ``ray`` option and ``cipherfact`` command line the cluster docs show parses;
    the fixture above runs the same steps (token, head, worker, driver)."""
    from ray.scripts.scripts import cli as ray_cli

    from cipherfact.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    commands = _doc_commands(root / doc)
    ray_lines = [c for c in commands if c[0] == "ray"]
    steps = {tuple(c[:2]) for c in ray_lines}
    assert {("ray", "get-auth-token"), ("ray", "start")} <= steps, ray_lines
    for words in ray_lines:
        command = ray_cli.commands[words[1]]
        known = {opt for param in command.params for opt in param.opts}
        for word in words[2:]:
            assert word.split("=")[0] in known, f"{doc}: `ray {words[1]}` has no {word}"
    exports = [w for c in commands if c[0] == "export" for w in c[1:]]
    assert "RAY_AUTH_MODE=token" in exports and "RAY_AUTH_TOKEN=T" in exports
    drivers = [c for c in commands if c[0] == "cipherfact"]
    assert any("--ray-address" in c for c in drivers), doc
    for words in drivers:
        build_parser(words[1:]).parse_args(words[1:])
