"""``cipherfact agent serve`` and ``cipherfact deploy certs|local``.

Loaded by ``cipherfact.cli`` only when ``agent`` or ``deploy`` is on the
command line, so ``simulate`` never imports grpc.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cipherfact.deploy.node_base import BaseNode

INSECURE_WARNING = (
    "WARNING: insecure mode: agents talk in PLAINTEXT without authentication. "
    "Anyone on the network can read ciphertexts' routing and impersonate agents. "
    "Use only for debugging on a trusted loopback."
)


#: what ``deploy local`` and ``deploy gather`` print of the job's summary
SUMMARY_KEYS = (
    "status",
    "interrupted_by",
    "transport",
    "n_agents",
    "processes",
    "rel_error",
    "consensus_spread",
    "train_rmse",
    "test_rmse",
    "plain_test_rmse",
    "wall_s",
    "bytes_total",
    "grpc_bytes_total",
    "messages_total",
)


def _parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Reuse a placeholder the main CLI may already have added for ``name``."""
    existing = sub.choices.get(name)
    if isinstance(existing, argparse.ArgumentParser):
        return existing
    return sub.add_parser(name, help=help)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    agent = _parser(sub, "agent", help="run one agent of a deployed job (gRPC + mTLS)")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    serve = agent_sub.add_parser(
        "serve",
        help="serve one agent of JOB.toml until the job finishes",
        description="Run agent ID of the job: build its party of the job's protocol "
        "(ppdnmf, csr_fhe_mf, fedmf), wait for its peers, run, write its results and metrics "
        "into <job.out>/agent-ID/. Exit 0 when done, 1 on a failure (named peer and round), "
        "143 on SIGTERM.",
    )
    serve.add_argument("--job", required=True, help="path to JOB.toml (same file on every machine)")
    serve.add_argument("--agent-id", type=int, required=True, help="this agent's id in JOB.toml")
    group = serve.add_mutually_exclusive_group()
    group.add_argument(
        "--resume-from",
        type=int,
        default=None,
        metavar="T",
        help="resume from this agent's checkpoint at outer iteration (epoch) T "
        "(every agent must pass the same T)",
    )
    group.add_argument(
        "--resume", action="store_true", help="resume from this agent's newest checkpoint"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext gRPC when JOB.toml sets job.insecure = true",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log every envelope")
    serve.set_defaults(func=_serve)

    deploy = _parser(
        sub, "deploy", help="certificates, per-machine kits, local deployments, gathering results"
    )
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    certs = deploy_sub.add_parser("certs", help="create a job CA and one certificate per agent")
    certs.add_argument("--agents", type=int, required=True, help="number of agents")
    certs.add_argument("--out", required=True, help="output folder")
    certs.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    certs.set_defaults(func=_certs)

    local = deploy_sub.add_parser(
        "local",
        help="run a scenario as N agent processes on loopback with gRPC and mTLS",
        description="Start N real agent processes on 127.0.0.1 (free ports, a fresh job CA) "
        "and gather their results into summary.json, metrics.jsonl and factors.npz in --out.",
    )
    local.add_argument("scenario", help="bundled scenario name or path to a .toml file")
    local.add_argument(
        "--agents",
        type=int,
        default=None,
        help="number of agent processes (ppdnmf: default the scenario's "
        "n_agents; csr_fhe_mf: RS + CSP + one per user, fedmf: server + one per user, "
        "both fixed by the data)",
    )
    local.add_argument("--out", default=None, help="output folder (default runs/<scenario>-grpc)")
    local.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario field (repeatable)",
    )
    local.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="K",
        help="each party checkpoints every K outer iterations (epochs) in its own folder",
    )
    local.add_argument(
        "--resume",
        action="store_true",
        help="resume the job in --out from the newest common checkpoint",
    )
    local.add_argument("--insecure", action="store_true", help="plaintext gRPC (warns)")
    local.add_argument("--quiet", action="store_true", help="no progress bar")
    local.add_argument(
        "--peer-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds of silence after which an agent gives up (default 60)",
    )
    local.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="terminate agents still running after S seconds",
    )
    local.set_defaults(func=_local)

    kit = deploy_sub.add_parser(
        "kit",
        help="write one folder per agent machine: job file, CA certificate, that agent's "
        "certificate and key, a start script",
        description="Make deployment kits from JOB.toml and the job's certificates "
        "(`deploy certs`): --out/agent-<i>/ holds the job file, the CA certificate, agent i's "
        "certificate and key (0600), start.sh and a README. Never the CA key or another "
        "agent's key. Copy each folder to its machine and run ./start.sh there.",
    )
    kit.add_argument("--job", required=True, help="path to JOB.toml")
    kit.add_argument("--out", required=True, help="folder for the kits (must not hold kits)")
    kit.set_defaults(func=_kit)

    gather = deploy_sub.add_parser(
        "gather",
        help="merge the agents' result folders, copied back from their machines",
        description="Assemble summary.json, metrics.jsonl and the factors in --out from the "
        "agents' result folders: RESULTS/agent-<i>/ (each agent's result folder) or "
        "RESULTS/agent-<i>/<job out>/agent-<i>/ (whole kit folders).",
    )
    gather.add_argument("--job", required=True, help="path to JOB.toml")
    gather.add_argument(
        "--results", required=True, help="folder with the agents' agent-<i> folders"
    )
    gather.add_argument("--out", required=True, help="folder for summary.json and the factors")
    gather.set_defaults(func=_gather)


def _setup_logging(verbose: bool, agent_id: int | None = None) -> None:
    prefix = f"agent {agent_id} " if agent_id is not None else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {prefix}%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)


SIGNAL_EXIT = {"SIGTERM": 143, "SIGINT": 130}


class _StoppedBeforeStartError(Exception):
    """SIGTERM or SIGINT while the job file is read, before the node exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"stopped by {name} before start")
        self.name = name


def _write_early_failure(job_path: str, agent_id: int, out: Path | None, status: str) -> None:
    """``result.json`` for an agent that stopped before its node existed (bad job file,
    bad flags, a signal): into its folder when the job file still tells where."""
    from cipherfact.deploy.jobfile import agent_out_hint
    from cipherfact.deploy.node_base import one_line, write_atomic

    folder = out if out is not None else agent_out_hint(job_path, agent_id)
    if folder is None:
        return
    record = {
        "agent_id": agent_id,
        "status": one_line(status),
        "round": None,
        "bytes_sent": 0,
        "messages_sent": 0,
        "grpc_bytes_sent": 0,
        "wall_s": 0.0,
    }
    with contextlib.suppress(OSError):  # the error line on stderr still says why
        write_atomic(
            folder / "result.json",
            (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"),
        )


def _serve(args: argparse.Namespace) -> int:
    stopped: list[str] = []

    def stop_early(signum: int, _frame: object) -> None:
        if not stopped:  # once: a second signal must not interrupt the clean-up
            stopped.append(signal.Signals(signum).name)
            raise _StoppedBeforeStartError(stopped[0])

    previous = {sig: signal.signal(sig, stop_early) for sig in (signal.SIGTERM, signal.SIGINT)}
    _setup_logging(args.verbose, args.agent_id)
    log = logging.getLogger("cipherfact.deploy")
    made: list[Path] = []
    try:
        node, out = _make_serving_node(args, made)
        return _run_node(node, args, out)  # the node's own handlers from here on
    except _StoppedBeforeStartError as exc:
        _write_early_failure(
            args.job,
            args.agent_id,
            made[0] if made else None,
            f"stopped: agent {args.agent_id} {exc}",
        )
        log.warning("agent %s %s", args.agent_id, exc)
        return SIGNAL_EXIT[exc.name]
    except (ValueError, TypeError, OSError) as exc:  # bad job file or flags: one line
        _write_early_failure(
            args.job,
            args.agent_id,
            made[0] if made else None,
            f"failed before start: {type(exc).__name__}: {exc}",
        )
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _make_serving_node(args: argparse.Namespace, made: list[Path]) -> tuple[BaseNode, Path]:
    from cipherfact.deploy.jobfile import load_job, node_class
    from cipherfact.deploy.nodes import make_node
    from cipherfact.deploy.party_checkpoint import latest_checkpoint

    job = load_job(args.job)
    job.agent(args.agent_id)  # a bad id fails before any key is generated
    out = job.agent_out(args.agent_id)
    made.append(out)
    if job.insecure and not args.insecure:
        raise ValueError(f"{args.job} sets job.insecure = true; pass --insecure to allow it")
    if args.insecure:
        if not job.insecure:
            raise ValueError(f"--insecure given but {args.job} does not set job.insecure = true")
        print(INSECURE_WARNING, file=sys.stderr)
    resume_from = args.resume_from
    party = node_class(job.scenario.protocol)
    if args.resume and party.supports_resume and not party.keeps_checkpoints(args.agent_id):
        pass  # a party with no state across epochs (a csr_fhe_mf user) just starts again
    elif args.resume:
        resume_from = latest_checkpoint(out)
        if resume_from is None:
            raise ValueError(f"--resume: agent {args.agent_id} has no checkpoint")
    return make_node(job, args.agent_id, resume_from=resume_from, stop=threading.Event()), out


def _run_node(node: BaseNode, args: argparse.Namespace, out: Path) -> int:
    from cipherfact.deploy.node_base import NodeError, NodeStoppedError, install_signal_handlers

    log = logging.getLogger("cipherfact.deploy")
    restore = install_signal_handlers(node)  # SIGTERM/SIGINT stop it in every state
    try:
        result = node.run()
    except NodeStoppedError as exc:
        log.warning("%s", exc)
        return SIGNAL_EXIT.get(node.stop_signal or "SIGTERM", 143)
    except NodeError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        restore()
    done = (
        f"its part as {result['party']} ({result['epochs_completed']} epochs)"
        if "party" in result
        else f"{result['round']} rounds"
    )
    log.info("agent %s completed %s; results in %s", args.agent_id, done, out)
    return 0


def _certs(args: argparse.Namespace) -> int:
    from cipherfact.deploy.tls import write_job_certs

    files = write_job_certs(args.out, args.agents, days=args.days)
    print(
        f"job CA and {len(files)} agent certificates written to {args.out}/ "
        f"(keep ca-key.pem off the agent machines)",
        file=sys.stderr,
    )
    return 0


def _local(args: argparse.Namespace) -> int:
    from cipherfact.deploy.local import deploy_local

    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    out = Path(args.out or f"runs/{Path(args.scenario).stem}-grpc")
    summary = deploy_local(
        args.scenario,
        args.agents,
        out,
        args.overrides,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        insecure=args.insecure,
        timeouts={"peer_s": args.peer_timeout},
        timeout_s=args.timeout,
        progress=not args.quiet,
    )
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS if k in summary}, indent=2))
    print(f"results written to {out}/ (agent logs in {out}/agents/)", file=sys.stderr)
    if summary["status"] == "interrupted":
        print(
            f"interrupted by {summary.get('interrupted_by')}: agents stopped, partial "
            f"summary in {out}/summary.json",
            file=sys.stderr,
        )
        return SIGNAL_EXIT.get(str(summary.get("interrupted_by")), 143)
    return 0 if summary["status"] == "completed" else 1


def _kit(args: argparse.Namespace) -> int:
    from cipherfact.deploy.kit import make_kits

    kits = make_kits(args.job, args.out)
    for kit in kits:
        print(f"{kit.folder}/  ({', '.join(kit.files)})")
    print(
        f"{len(kits)} kits written to {args.out}/: copy agent-<i>/ to agent i's machine and "
        "run ./start.sh there (no kit holds the CA key)",
        file=sys.stderr,
    )
    return 0


def _gather(args: argparse.Namespace) -> int:
    from cipherfact.deploy.kit import gather_folders

    summary = gather_folders(args.job, args.results, args.out)
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS if k in summary}, indent=2))
    print(f"results written to {args.out}/", file=sys.stderr)
    return 0 if summary["status"] == "completed" else 1
