"""``cipherfact deploy local``: a real deployment on one machine, for trying it out.

Creates a job CA and certificates, writes JOB.toml with free loopback ports,
starts one OS process per agent (``cipherfact agent serve``), waits for them,
and gathers their results into the usual ``summary.json``, ``metrics.jsonl``
and ``factors.npz``. Only the gathering step sees every agent's factors;
a real deployment never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cipherfact import registry
from cipherfact.deploy.gather import GatherRun
from cipherfact.deploy.jobfile import (
    DeployJob,
    check_out_dir,
    insecure_refusal,
    load_job,
    node_class,
    party_count,
    render_job,
)
from cipherfact.deploy.party_checkpoint import (
    check_resume_config,
    checkpoint_path,
    latest_checkpoint,
    read_checkpoint_info,
)
from cipherfact.deploy.tls import write_job_certs
from cipherfact.protocols.ppdnmf.job import prepare_job
from cipherfact.simulations.progress import progress_bar
from cipherfact.simulations.results import RunWriter
from cipherfact.simulations.scenario import load_scenario

LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_parties(
    scenario: str, overrides: Sequence[str], n_agents: int | None
) -> tuple[list[str], int]:
    """The overrides a local job runs with and its number of agent processes.

    ppdnmf: ``n_agents`` (default: the scenario's) becomes the scenario's
    ``n_agents``. csr_fhe_mf (RS, CSP and one process per user) and fedmf (the
    server and one per user): the count follows from the data; ``n_agents``, if
    given, must match it.
    """
    if n_agents is not None and (
        isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 2
    ):
        raise ValueError(f"--agents must be an integer >= 2, got {n_agents!r}")
    parsed = load_scenario(scenario, overrides)  # fails fast on a bad scenario
    if parsed.protocol == "ppdnmf":
        n = parsed.n_agents if n_agents is None else n_agents
        # one n_agents entry in the job file, whatever the caller's overrides said
        kept = [o for o in overrides if o.partition("=")[0].strip() != "n_agents"]
        load_scenario(scenario, [*kept, f"n_agents={n}"])
        return [*kept, f"n_agents={n}"], n
    n = party_count(parsed) if parsed.protocol in registry.deployable() else 0
    if not n:
        raise ValueError(
            f"protocol {parsed.protocol!r} cannot be deployed "
            f"(deployable: {', '.join(registry.deployable())})"
        )
    if n_agents is not None and n_agents != n:
        layout = node_class(parsed.protocol).describe_parties(n)
        raise ValueError(
            f"--agents {n_agents}: this {parsed.protocol} job runs {n} processes ({layout}); "
            "leave --agents out or pass that number"
        )
    return list(overrides), n


def write_local_job(
    scenario: str,
    overrides: Sequence[str],
    n_agents: int | None,
    out: Path,
    *,
    checkpoint_every: int = 0,
    insecure: bool = False,
    timeouts: Mapping[str, float | int] | None = None,
    dial_ports: Sequence[int] | None = None,
    listen_ports: Sequence[int] | None = None,
) -> Path:
    """Certificates (unless insecure) and ``out/job.toml`` for ``n_agents`` on loopback.

    ``dial_ports`` differ from ``listen_ports`` only when something sits in
    between (the wire-bytes benchmark's counting proxy).
    """
    overrides, n_agents = local_parties(scenario, overrides, n_agents)
    out.mkdir(parents=True, exist_ok=True)
    if not insecure and not (out / "certs" / "ca.pem").exists():
        write_job_certs(out / "certs", n_agents)
    listen_ports = list(listen_ports or free_ports(n_agents))
    dial = list(dial_ports or listen_ports)
    scenario_ref = str(Path(scenario).resolve()) if Path(scenario).exists() else scenario
    text = render_job(
        scenario=scenario_ref,
        overrides=overrides,
        addresses=[f"{LOOPBACK}:{p}" for p in dial],
        listens=[f"{LOOPBACK}:{p}" for p in listen_ports],
        out="agents",
        certs=None if insecure else "certs",
        checkpoint_every=checkpoint_every,
        private_seeds=False,  # reproduce `simulate` bit for bit (see docs/deploying.md)
        timeouts=timeouts,
    )
    path = out / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def agent_command(
    job: Path, agent_id: int, *, resume_from: int | None = None, insecure: bool = False
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "cipherfact.cli",
        "agent",
        "serve",
        "--job",
        str(job),
        "--agent-id",
        str(agent_id),
    ]
    if resume_from is not None:
        cmd += ["--resume-from", str(resume_from)]
    if insecure:
        cmd.append("--insecure")
    return cmd


def launch(
    job: Path,
    n_agents: int,
    *,
    resume_from: int | None = None,
    insecure: bool = False,
    only: int | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Start one process per agent (or just agent ``only``); each logs to
    ``agents/agent-<i>/agent.log``."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    procs = []
    for i in range(n_agents) if only is None else [only]:
        folder = job.parent / "agents" / f"agent-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "agent.log").open("ab") as logf:
            procs.append(
                subprocess.Popen(
                    agent_command(job, i, resume_from=resume_from, insecure=insecure),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    return procs


STOP_GRACE_S = 15.0  # how long stopped agents get to write their results before SIGKILL
POLL_S = 0.05


class Interrupt:
    """SIGTERM/SIGINT to ``deploy local``: forwarded to every agent still running.

    The first signal is passed on to the agents (each writes its
    ``result.json``, tells its peers and exits); a second one kills them.
    Install with ``forwarding`` (main thread only); ``signal`` names the first
    signal received (None: none).
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.count = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self._sent: set[tuple[int, int]] = set()  # (pid, signal): each signal once

    def handle(self, signum: int, _frame: Any = None) -> None:
        self.count += 1
        if self.signal is None:
            self.signal = signal.Signals(signum).name
        self.forward(signum if self.count == 1 else signal.SIGKILL)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every agent still running that has not had it yet."""
        for p in list(self.procs):
            if p.returncode is None and (p.pid, signum) not in self._sent:
                self._sent.add((p.pid, signum))  # not reaped: the pid is still this child's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[Interrupt]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def wait_all(
    procs: Sequence[subprocess.Popen[bytes]],
    timeout: float | None,
    interrupt: Interrupt | None = None,
    grace_s: float = STOP_GRACE_S,
    tick: Callable[[], None] | None = None,
) -> list[int]:
    """Exit codes. Processes still running at ``timeout`` are terminated (SIGTERM);
    once ``interrupt`` has fired, they get ``grace_s`` to stop, then are killed.
    ``tick`` is called at every poll (a progress bar)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    stop_by: float | None = None
    while any(p.poll() is None for p in procs):
        if tick is not None:
            tick()
        now = time.monotonic()
        if interrupt is not None and interrupt.signal is not None and stop_by is None:
            interrupt.forward(signal.Signals[interrupt.signal])  # agents started meanwhile
            stop_by = now + grace_s
        if deadline is not None and now >= deadline and stop_by is None:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            stop_by = now + 30
        if stop_by is not None and now >= stop_by:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            break
        time.sleep(POLL_S)
    return [int(p.returncode) for p in procs]


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def resume_point(job: Path, n_agents: int, keeps: Callable[[int], bool] | None = None) -> int:
    """The newest outer iteration (epoch) every party that keeps checkpoints (``keeps``,
    default: all) has a checkpoint for."""
    parties = [i for i in range(n_agents) if keeps is None or keeps(i)]
    outs = {i: latest_checkpoint(job.parent / "agents" / f"agent-{i}") for i in parties}
    missing = [i for i, o in outs.items() if o is None]
    if missing:
        raise ValueError(f"cannot resume: agents {missing} have no checkpoint")
    return min(o for o in outs.values() if o is not None)


def check_resume(
    out: Path, scenario: str, overrides: Sequence[str], n_agents: int, outer: int
) -> None:
    """Refuse ``--resume`` when the job's configuration differs from the one its
    checkpoints were written with (names the changed fields), before any agent starts."""
    from cipherfact.simulations.checkpoint import state_from_npz

    parsed = load_scenario(scenario, overrides)
    node = node_class(parsed.protocol)
    config = node.checkpoint_config(parsed, n_agents)
    for i in range(n_agents):
        if not node.keeps_checkpoints(i):
            continue
        path = checkpoint_path(out / "agents" / f"agent-{i}", outer)
        saved, _ = read_checkpoint_info(state_from_npz(path.read_bytes()))
        check_resume_config(saved, config, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _results(deploy: DeployJob, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        path = deploy.agent_out(i) / "result.json"
        result = _read_json(path) if path.exists() else {"status": "no result"}
        out.append(result if result is not None else {"status": "unreadable result.json"})
    return out


def gather(
    job_path: Path,
    wall_s: float,
    codes: Sequence[int],
    interrupted: str | None = None,
    *,
    results_dir: Path | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Merge the agents' folders into summary.json, metrics.jsonl and factors.npz.

    ``interrupted`` (a signal's name): ``deploy local`` was stopped; the summary
    then has status ``interrupted`` and whatever the agents wrote until then.
    ``results_dir`` holds the ``agent-<i>`` folders (default: the job's ``out``);
    ``out_dir`` receives the merged files (default: the job file's folder).
    """
    deploy = load_job(job_path)
    if results_dir is not None:
        deploy = dataclasses.replace(deploy, out=results_dir)
    out = job_path.parent if out_dir is None else out_dir
    writer = RunWriter(out)
    results = _results(deploy, len(deploy.agents))
    run = GatherRun(deploy, results, codes, wall_s, writer, interrupted)
    summary: dict[str, Any] = node_class(deploy.scenario.protocol).gather(run)
    writer.write_json("summary.json", summary)
    return summary


def deploy_local(
    scenario: str,
    n_agents: int | None,
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    checkpoint_every: int = 0,
    resume: bool = False,
    insecure: bool = False,
    timeouts: Mapping[str, float | int] | None = None,
    timeout_s: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run a whole job as ``n_agents`` local processes; returns the gathered summary.
    ``progress``: a bar on stderr following agent 0's completed iterations."""
    out = Path(out)
    check_out_dir(out, "--out")
    overrides, n_agents = local_parties(scenario, overrides, n_agents)
    parsed = load_scenario(scenario, overrides)
    protocol = parsed.protocol
    if insecure and node_class(protocol).needs_certificates:
        raise ValueError(insecure_refusal(protocol))
    if (resume or checkpoint_every) and not node_class(protocol).supports_resume:
        raise ValueError(f"--resume and --checkpoint-every: {protocol} parties keep no checkpoints")
    if protocol == "ppdnmf":
        prepare_job(parsed)  # a bad graph or data setting: one error here, not one per agent
    resume_from = None
    if resume:
        job_path = out / "job.toml"
        if not job_path.exists():
            raise FileNotFoundError(f"cannot resume: {job_path} does not exist")
        resume_from = resume_point(job_path, n_agents, node_class(protocol).keeps_checkpoints)
        check_resume(out, scenario, overrides, n_agents, resume_from)
    job_path = write_local_job(
        scenario,
        overrides,
        n_agents,
        out,
        checkpoint_every=checkpoint_every,
        insecure=insecure,
        timeouts=timeouts,
    )
    started = time.perf_counter()
    interrupt = Interrupt()
    with interrupt.forwarding():
        # a signal from here on reaches every agent already started
        procs = interrupt.procs
        for i in range(n_agents):
            if interrupt.signal is not None:
                break
            procs += launch(job_path, n_agents, resume_from=resume_from, insecure=insecure, only=i)
        epochs = getattr(parsed, "epochs", None)
        total = int(parsed.outer_iters if epochs is None else epochs)
        unit = "outer" if epochs is None else "epoch"
        # agent 0 (a ppdnmf agent, or csr_fhe_mf's RS) writes one metrics line per
        # outer iteration or epoch: its file is the job's progress
        lines = out / "agents" / "agent-0" / "metrics.jsonl"
        with progress_bar(total, f"{protocol} over gRPC", unit, enabled=progress) as bar:

            def tick() -> None:
                done = _count_lines(lines)
                if done > bar.n:
                    bar.update(min(done, total) - bar.n)

            codes = wait_all(procs, timeout_s, interrupt, tick=tick)
        codes += [-1] * (n_agents - len(codes))  # agents never started
        return gather(job_path, time.perf_counter() - started, codes, interrupted=interrupt.signal)
