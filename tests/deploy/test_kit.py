"""Deployment kits: one folder per machine, started only from itself, then gathered.

End to end on loopback: ``deploy certs`` + a job file -> ``deploy kit`` -> one
process per agent started by its kit's ``start.sh`` with the kit as its working
directory (the operator's folder moved away meanwhile) -> ``deploy gather`` from
the kits' result folders -> the simulation's factors, bit for bit. Every file
of every kit is compared with the CA key and every other agent's key.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cipherfact.cli import main
from cipherfact.deploy.kit import KitError, gather_folders, make_kits
from cipherfact.deploy.local import wait_all, write_local_job
from cipherfact.protocols.ppdnmf.job import prepare_job, run_inmemory
from cipherfact.simulations.scenario import load_scenario

from .conftest import SMALL, same_factors

pytestmark = pytest.mark.grpc

N = 4
SCENARIO = "ppdnmf-synthetic"
OVERRIDES = [*SMALL, f"n_agents={N}"]


def _operator_job(folder: Path, overrides: list[str] = OVERRIDES, n: int = N) -> Path:
    """What an operator has on the trusted machine: job.toml and certs/ (CA key included)."""
    return write_local_job(SCENARIO, overrides, n, folder, timeouts={"peer_s": 60})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_kits_run_from_their_own_folders_and_gather_equals_the_simulation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    op = tmp_path / "operator"
    job = _operator_job(op)
    kits = tmp_path / "kits"
    assert main(["deploy", "kit", "--job", str(job), "--out", str(kits)]) == 0
    assert "no kit holds the CA key" in capsys.readouterr().err

    # --- what is in a kit, and what never is --------------------------------------------
    ca_key = (op / "certs" / "ca-key.pem").read_bytes()
    agent_keys = {i: (op / "certs" / f"agent-{i}-key.pem").read_bytes() for i in range(N)}
    assert sorted(p.name for p in kits.iterdir()) == [f"agent-{i}" for i in range(N)]
    for i in range(N):
        kit = kits / f"agent-{i}"
        names = sorted(str(p.relative_to(kit)) for p in _files(kit))
        assert names == sorted(
            [
                "README.md",
                "job.toml",
                "start.sh",
                "certs/ca.pem",
                f"certs/agent-{i}.pem",
                f"certs/agent-{i}-key.pem",
            ]
        )
        assert (kit / "job.toml").read_bytes() == job.read_bytes()
        assert (kit / "certs" / "ca.pem").read_bytes() == (op / "certs" / "ca.pem").read_bytes()
        key = kit / "certs" / f"agent-{i}-key.pem"
        assert key.read_bytes() == agent_keys[i]
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(kit.stat().st_mode) == 0o700
        assert os.access(kit / "start.sh", os.X_OK)
        readme = (kit / "README.md").read_text()
        assert f"agent {i}" in readme and "./start.sh" in readme and "deploy gather" in readme
        for path in _files(kit):
            data = path.read_bytes()
            assert ca_key not in data, f"{path} holds the CA key"
            for j, other in agent_keys.items():
                if j != i:
                    assert other not in data, f"{path} holds agent {j}'s key"
            if path != key:
                assert b"PRIVATE KEY" not in data, f"{path} holds a private key"

    # --- each agent started only from its own kit ---------------------------------------
    moved = tmp_path / "operator-elsewhere"
    op.rename(moved)  # nothing of the operator's folder is reachable while the agents run
    env = {
        **os.environ,
        "CIPHERFACT_PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    procs = []
    for i in range(N):
        kit = kits / f"agent-{i}"
        with (kit / "agent.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    ["./start.sh"], cwd=kit, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    codes = wait_all(procs, timeout=240)
    logs = {i: (kits / f"agent-{i}" / "agent.log").read_text()[-1500:] for i in range(N)}
    assert codes == [0] * N, logs
    for i in range(N):
        assert (kits / f"agent-{i}" / "agents" / f"agent-{i}" / "result.json").is_file()
        assert "(mTLS)" in logs[i]

    # --- the operator gathers the folders copied back (here: the kits themselves) -------
    gathered = tmp_path / "gathered"
    rc = main(
        [
            "deploy",
            "gather",
            "--job",
            str(moved / "job.toml"),
            "--results",
            str(kits),
            "--out",
            str(gathered),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert rc == 0 and printed["status"] == "completed", printed
    summary = json.loads((gathered / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["transport"] == "mTLS"
    sim_job = prepare_job(load_scenario(SCENARIO, OVERRIDES))
    *_, last = run_inmemory(sim_job)
    assert same_factors(gathered / "factors.npz", last.Ws, last.Hs) == []
    assert summary["bytes_total"] == last.stats.bytes_total
    metrics = [json.loads(x) for x in (gathered / "metrics.jsonl").read_text().splitlines()]
    assert [m["outer"] for m in metrics] == [0, 1]
    # the gathered folder holds results only, never a key
    for path in _files(gathered):
        assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_gather_takes_result_folders_copied_back_on_their_own(tmp_path: Path) -> None:
    """``results/agent-i/`` as copied from each machine; a missing agent is named."""
    op = tmp_path / "op"
    job = _operator_job(op)
    results = tmp_path / "collected"
    for i in range(N):  # what agents leave behind on a failure: result.json only
        folder = results / f"agent-{i}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"status": "failed: test", "wall_s": 1}))
    secret = tmp_path / "operator-secret.txt"
    secret.write_text("not for the results folder")
    (results / "agent-1" / "link.txt").symlink_to(secret)  # copied-back folders hold no links
    summary = gather_folders(job, results, tmp_path / "out")
    assert not (tmp_path / "out" / "agents" / "agent-1" / "link.txt").exists()
    assert (tmp_path / "out" / "agents" / "agent-1" / "result.json").is_file()
    assert summary["status"].startswith("failed: agent 0: failed: test")
    assert (
        json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == (summary["status"])
    )
    shutil.rmtree(results / "agent-2")
    with pytest.raises(KitError, match=r"no results for agent 2: no result\.json in"):
        gather_folders(job, results, tmp_path / "out2")


def test_kit_refuses_unsafe_or_broken_inputs(tmp_path: Path) -> None:
    op = tmp_path / "op"
    job = _operator_job(op, [*SMALL, "n_agents=3"], 3)
    certs = op / "certs"
    # an existing kit is never overwritten
    make_kits(job, tmp_path / "kits")
    with pytest.raises(KitError, match="already exists"):
        make_kits(job, tmp_path / "kits")
    # a CA file with the CA key appended is refused: kits carry certificates only
    ca = certs / "ca.pem"
    good_ca = ca.read_bytes()
    ca.write_bytes(good_ca + (certs / "ca-key.pem").read_bytes())
    with pytest.raises(KitError, match="holds a private key"):
        make_kits(job, tmp_path / "k2")
    ca.write_bytes(good_ca)
    # another agent's key in agent 1's place: the key does not match the certificate
    (certs / "agent-1-key.pem").write_bytes((certs / "agent-2-key.pem").read_bytes())
    with pytest.raises(ValueError, match="do not match"):
        make_kits(job, tmp_path / "k3")
    assert not (tmp_path / "k2").exists() and not (tmp_path / "k3").exists()  # no half kits
    # certificates outside the job file's folder cannot travel unchanged
    text = job.read_text().replace('ca = "certs/ca.pem"', f'ca = "{certs / "ca.pem"}"')
    outside = tmp_path / "elsewhere" / "job.toml"
    outside.parent.mkdir()
    outside.write_text(text.replace('"certs/agent-', f'"{certs}/agent-'))
    with pytest.raises(KitError, match="is not below the job file's folder"):
        make_kits(outside, tmp_path / "k4")
    # an insecure job has no identity to put in a kit
    insecure = op / "insecure.toml"
    insecure.write_text(job.read_text().replace("insecure = false", "insecure = true"))
    with pytest.raises(KitError, match="insecure"):
        make_kits(insecure, tmp_path / "k5")


def test_kit_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["deploy", "kit", "--job", str(missing), "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: job file {str(missing)!r} does not exist"]


def test_csr_kits_name_the_parties(tmp_path: Path) -> None:
    op = tmp_path / "op"
    overrides = ["data.n_users=2", "data.n_items=6", "data.density=0.5", "epochs=1"]
    job = write_local_job("csr-fhe-mf-synthetic", overrides, None, op)
    kits = make_kits(job, tmp_path / "kits")
    assert [k.agent_id for k in kits] == [0, 1, 2, 3]
    readmes = [(k.folder / "README.md").read_text() for k in kits]
    assert "recommender server (RS)" in readmes[0]
    assert "crypto service provider (CSP" in readmes[1]
    assert "user 0" in readmes[2] and "user 1" in readmes[3]


def test_gathered_factors_are_numbers_only(tmp_path: Path) -> None:
    """``allow_pickle=False`` everywhere a copied-back file is read: a pickled array in
    an agent's factors.npz is refused, not executed."""
    op = tmp_path / "op"
    job = _operator_job(op)
    results = tmp_path / "collected"
    for i in range(N):
        folder = results / f"agent-{i}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"status": "completed", "wall_s": 1}))
        np.savez(folder / "factors.npz", W=np.array([object()], dtype=object), H=np.zeros(1))
    with pytest.raises(ValueError, match="allow_pickle"):
        gather_folders(job, results, tmp_path / "out")


def test_documented_kit_and_gather_commands_parse_as_written() -> None:
    """The kit and gather command lines in the docs are the ones the test above runs."""
    import re
    import shlex

    from cipherfact.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    found = []
    for doc in ("docs/deploying.md", "README.md"):
        text = (root / doc).read_text()
        blocks = re.findall(r"^(cipherfact deploy (?:kit|gather) .*)$", text, re.MULTILINE)
        inline = re.findall(r"`(cipherfact\s+deploy\s+(?:kit|gather)\s[^`]*)`", text)
        found += [" ".join(c.split()) for c in blocks + inline]
    assert {c.split()[2] for c in found} == {"kit", "gather"}, found
    for command in found:
        words = shlex.split(command)[1:]
        args = build_parser(words).parse_args(words)
        assert args.job and args.out, command


def test_a_scenario_file_travels_in_the_kit(tmp_path: Path) -> None:
    import cipherfact.simulations as sims
    from cipherfact.deploy.jobfile import load_job

    op = tmp_path / "op"
    job = _operator_job(op, [*SMALL, "n_agents=3"], 3)
    bundled = Path(sims.__file__).parent / "scenarios" / "ppdnmf-synthetic.toml"
    (op / "scen").mkdir()
    shutil.copyfile(bundled, op / "scen" / "mine.toml")
    job.write_text(
        job.read_text().replace('scenario = "ppdnmf-synthetic"', 'scenario = "scen/mine.toml"')
    )
    kits = make_kits(job, tmp_path / "kits")
    for kit in kits:
        assert (kit.folder / "scen" / "mine.toml").read_bytes() == bundled.read_bytes()
        assert load_job(kit.folder / "job.toml").scenario == load_job(job).scenario
    job.write_text(job.read_text().replace('"scen/mine.toml"', f'"{bundled}"'))
    with pytest.raises(KitError, match="a kit carries a scenario file only by a relative path"):
        make_kits(job, tmp_path / "kits2")
