"""Per-machine deployment kits and gathering their results (after NVFlare's startup kits).

``make_kits`` turns one job file and the job's certificates (``cipherfact
deploy certs``) into one folder per agent, to be copied to that agent's machine
as it is::

    kits/agent-3/
      job.toml               the job file, byte for byte the same in every kit
      certs/ca.pem           the job CA's certificate (never its key)
      certs/agent-3.pem      this agent's certificate
      certs/agent-3-key.pem  this agent's private key, mode 0600
      start.sh               runs `cipherfact agent serve` for agent 3 from this folder
      README.md              what the files are, how to start, what to send back

The certificate files sit at the paths the job file's ``[tls]`` section names
(relative to the job file), so the job file needs no change and the agent runs
with the kit folder as its only input (plus its own ``data_path``, which stays
on its machine and is never copied). A kit holds no other agent's key and
never the CA's key: only the three TLS files the job names for that agent are
copied, and each kit is checked with ``check_tls_files`` (the key matches the
agent's certificate, issued by the job's CA, naming ``agent-<id>``) and for
stray ``PRIVATE KEY`` blocks in every other file before it is written.

``gather_folders`` assembles ``summary.json``, ``metrics.jsonl`` and the
factors from the agents' result folders once they are copied back, by calling
the same gathering step as ``deploy local`` (``local.gather``). Only the
operator who collects every folder can do this; no agent sees another's
factors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cipherfact.agents.envelope import AgentId
from cipherfact.deploy.jobfile import DeployJob, load_job, node_class
from cipherfact.deploy.tls import agent_identity, check_tls_files

PRIVATE_KEY_MARK = b"PRIVATE KEY-----"
KIT_SCRIPT = "start.sh"


class KitError(ValueError):
    """A kit cannot be made (or gathered) from these inputs; one line says why."""


@dataclass(frozen=True)
class Kit:
    """One agent's kit folder and the files in it (relative paths)."""

    agent_id: AgentId
    folder: Path
    files: tuple[str, ...]


def _inside(job: DeployJob, path: Path, what: str) -> PurePosixPath:
    """``path`` relative to the job file's folder; a kit can only hold files below it."""
    base = job.path.resolve().parent
    try:
        rel = Path(os.path.abspath(path)).relative_to(base)
    except ValueError as exc:
        raise KitError(
            f"{what} {str(path)!r} is not below the job file's folder {str(base)!r}: a kit "
            "keeps the job file unchanged, so every file it carries must be named by a "
            "relative path inside that folder"
        ) from exc
    return PurePosixPath(rel.as_posix())


def _role(job: DeployJob, agent_id: AgentId) -> str:
    return str(node_class(job.scenario.protocol).role_title(agent_id))


def _start_script(agent_id: AgentId) -> str:
    return (
        "#!/bin/sh\n"
        f"# Start agent {agent_id} of this kit's job. Runs in the kit's own folder;\n"
        "# extra arguments go to `cipherfact agent serve` (e.g. --resume).\n"
        "# CIPHERFACT_PYTHON=/path/to/python runs `python -m cipherfact.cli` instead of\n"
        "# the `cipherfact` command.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        'if [ -n "${CIPHERFACT_PYTHON:-}" ]; then\n'
        f'  exec "$CIPHERFACT_PYTHON" -m cipherfact.cli agent serve --job job.toml '
        f'--agent-id {agent_id} "$@"\n'
        "fi\n"
        f'exec cipherfact agent serve --job job.toml --agent-id {agent_id} "$@"\n'
    )


def _readme(job: DeployJob, agent_id: AgentId, digest: str, tls: dict[str, PurePosixPath]) -> str:
    spec = job.agent(agent_id)
    try:
        out: object = _inside(job, job.agent_out(agent_id), "job.out")
    except KitError:  # an absolute job.out: results go there on the agent's machine
        out = job.agent_out(agent_id)
    data = (
        f"- Its own data: `{spec.data_path}` must exist on this machine (it is not in the "
        "kit and never leaves the machine).\n"
        if spec.data_path is not None
        else ""
    )
    role = _role(job, agent_id)
    title = role if role == f"agent {agent_id}" else f"{role}, agent {agent_id}"
    return (
        f"# cipherfact kit: {title}\n\n"
        f"Protocol {job.scenario.protocol}, scenario `{job.scenario.name}`, "
        f"{len(job.agents)} agents.\n\n"
        "| file | what |\n|---|---|\n"
        f"| `job.toml` | the job file, the same on every machine (sha256 `{digest}`) |\n"
        f"| `{tls['ca']}` | the job CA's certificate |\n"
        f"| `{tls['cert']}` | this agent's certificate (`{agent_identity(agent_id)}`) |\n"
        f"| `{tls['key']}` | this agent's private key, mode 0600: keep it on this machine |\n"
        f"| `{KIT_SCRIPT}` | starts this agent |\n\n"
        "## Run\n\n"
        "With cipherfact installed (the same version as the operator's):\n\n"
        f"```\n./{KIT_SCRIPT}        # or: sh {KIT_SCRIPT}\n```\n\n"
        f"- It listens on `{spec.listen}`; its peers dial `{spec.address}` (open that "
        "port to them).\n"
        f"{data}"
        "- It waits for its neighbours (any start order), runs the job and exits 0 when "
        "done, 1 on a failure (the log names the peer and the round).\n"
        f"- Resume after a failure: `./{KIT_SCRIPT} --resume-from T` with the same T on "
        "every machine (checkpoint jobs only).\n\n"
        "## Send back\n\n"
        f"The folder `{out}/` (result.json, metrics.jsonl and this agent's share of the "
        "result) goes back to the operator, who runs `cipherfact deploy gather`. It holds "
        "no key.\n"
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no moment with wider rights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # whatever the umask took away


def _plan(
    job: DeployJob, job_text: bytes, agent_id: AgentId
) -> dict[PurePosixPath, tuple[bytes, int]]:
    """Every file of agent ``agent_id``'s kit: relative path -> (bytes, mode)."""
    files = job.tls_files(agent_id)
    if files is None:  # pragma: no cover - insecure jobs are refused before
        raise KitError("an insecure job has no TLS files")
    ca, cert, key = check_tls_files(files, identity=agent_identity(agent_id))
    tls = {
        "ca": _inside(job, files.ca, "[tls] ca"),
        "cert": _inside(job, files.cert, f"agent {agent_id}'s certificate"),
        "key": _inside(job, files.key, f"agent {agent_id}'s key"),
    }
    for name, path, data in (("CA certificate", files.ca, ca), ("certificate", files.cert, cert)):
        if PRIVATE_KEY_MARK in data:
            raise KitError(
                f"agent {agent_id}'s {name} file {str(path)!r} holds a private key; a kit "
                "copies certificates only"
            )
    digest = hashlib.sha256(job_text).hexdigest()
    plan: dict[PurePosixPath, tuple[bytes, int]] = {
        PurePosixPath("job.toml"): (job_text, 0o644),
        tls["ca"]: (ca, 0o644),
        tls["cert"]: (cert, 0o644),
        tls["key"]: (key, 0o600),
        PurePosixPath(KIT_SCRIPT): (_start_script(agent_id).encode(), 0o755),
        PurePosixPath("README.md"): (_readme(job, agent_id, digest, tls).encode(), 0o644),
    }
    scenario = _scenario_file(job)
    if scenario is not None:
        rel, data = scenario
        plan[rel] = (data, 0o644)
    if len(plan) != 6 + (scenario is not None):
        raise KitError(
            f"agent {agent_id}'s kit files collide: {sorted(str(p) for p in plan)} (the job's "
            "[tls] paths must name different files, none of them job.toml, start.sh or README.md)"
        )
    return plan


def _scenario_file(job: DeployJob) -> tuple[PurePosixPath, bytes] | None:
    """A scenario given as a path to a TOML file travels in the kit at that path."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    tree = tomllib.loads(job.path.read_text(encoding="utf-8"))
    source = tree.get("job", {}).get("scenario")
    if not isinstance(source, str):
        return None  # an inline [scenario] table
    candidate = job.path.resolve().parent / source
    if not (candidate.is_file() or source.endswith(".toml")):
        return None  # a bundled scenario name
    if Path(source).is_absolute() or not candidate.is_file():
        raise KitError(
            f"job.scenario {source!r}: a kit carries a scenario file only by a relative path "
            "below the job file's folder (or use a bundled name or an inline [scenario])"
        )
    return _inside(job, candidate, "job.scenario"), candidate.read_bytes()


def make_kits(job_path: str | Path, out: str | Path) -> list[Kit]:
    """Write ``out/agent-<i>/`` for every agent of the job; returns what was written.

    Refuses an insecure job (nothing to put in a kit), TLS files that do not make
    a valid identity for their agent, paths outside the job file's folder, and an
    ``out`` that already holds a kit (keys are never overwritten).
    """
    job_path = Path(job_path)
    job = load_job(job_path)
    if job.insecure:
        raise KitError(
            f"{job_path} sets job.insecure = true: a kit carries an agent's mTLS identity; "
            "make the job secure ([tls] with `cipherfact deploy certs`)"
        )
    out = Path(out)
    folders = {i: out / f"agent-{i}" for i in sorted(job.agents)}
    taken = [str(f) for f in folders.values() if f.exists()]
    if taken:
        raise KitError(f"kit folder {taken[0]!r} already exists; give an empty --out")
    job_text = job_path.read_bytes()
    plans = {i: _plan(job, job_text, i) for i in folders}  # every check before any write
    out.mkdir(parents=True, exist_ok=True)
    kits = []
    for i, plan in plans.items():
        folder = folders[i]
        folder.mkdir(mode=0o700)
        for rel, (data, mode) in plan.items():
            _write(folder.joinpath(*rel.parts), data, mode)
        kits.append(Kit(i, folder, tuple(sorted(str(p) for p in plan))))
    return kits


# --- gathering ----------------------------------------------------------------------


def find_agent_folder(results: Path, job: DeployJob, agent_id: AgentId) -> Path:
    """Agent ``agent_id``'s copied-back result folder under ``results``: either
    ``results/agent-<i>/`` (the folders themselves) or the kit layout
    ``results/agent-<i>/<job.out>/agent-<i>/`` (whole kit folders copied back)."""
    name = f"agent-{agent_id}"
    candidates = [results / name]
    try:
        out_rel = _inside(job, job.out, "job.out")
        candidates.append(results.joinpath(name, *out_rel.parts, name))
    except KitError:  # an absolute job.out: only the folders themselves
        pass
    for folder in candidates:
        if (folder / "result.json").is_file():
            return folder
    raise KitError(
        f"no results for agent {agent_id}: no result.json in "
        f"{' or '.join(repr(str(c)) for c in candidates)} (copy that agent's result "
        "folder back first)"
    )


def _copy_results(src: Path, dst: Path) -> None:
    """Regular files only (a copied-back folder is not trusted to hold links)."""
    for path in sorted(src.rglob("*")):
        mode = path.lstat().st_mode
        target = dst / path.relative_to(src)
        if stat.S_ISDIR(mode):
            target.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISREG(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _result_json(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KitError(f"{folder / 'result.json'} is not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise KitError(f"{folder / 'result.json'} is not a JSON object")
    return data


def gather_folders(
    job_path: str | Path,
    results: str | Path,
    out: str | Path,
) -> dict[str, Any]:
    """``summary.json``, ``metrics.jsonl`` and the factors in ``out`` from the agents'
    result folders under ``results`` (see ``find_agent_folder``).

    The folders are copied to ``out/agents/agent-<i>/`` and merged by the same
    step as ``deploy local``; exit codes are unknown here, so the agents'
    ``result.json`` statuses decide whether the job completed.
    """
    from cipherfact.deploy.local import gather

    job_path, results, out = Path(job_path), Path(results), Path(out)
    job = load_job(job_path)
    if not results.is_dir():
        raise KitError(f"--results {str(results)!r} is not a directory")
    found = {i: find_agent_folder(results, job, i) for i in sorted(job.agents)}
    agents_dir = out / "agents"
    if agents_dir.exists():
        raise KitError(f"{str(agents_dir)!r} already exists; give an empty --out")
    for i, folder in found.items():
        _copy_results(folder, agents_dir / f"agent-{i}")
    walls = [float(_result_json(agents_dir / f"agent-{i}").get("wall_s") or 0.0) for i in found]
    return gather(job_path, max(walls, default=0.0), [], results_dir=agents_dir, out_dir=out)
