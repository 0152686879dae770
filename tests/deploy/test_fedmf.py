"""FedMF deployed: the server and every user as processes over mTLS, equal to ``simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cipherfact.deploy.jobfile import JobFileError, load_job
from cipherfact.deploy.local import deploy_local, local_parties, write_local_job
from cipherfact.simulations.scenario import load_scenario

FEDMF = "fedmf-synthetic"
SMALL = [
    "data.n_users=3",
    "data.n_items=10",
    "data.density=0.5",
    "epochs=2",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
]


@pytest.mark.grpc
def test_fedmf_parties_as_processes_match_the_simulation_bit_for_bit(tmp_path: Path) -> None:
    from cipherfact.protocols.ratings.model import RatingsModel
    from cipherfact.simulations.simulate import SimOptions, simulate

    out = tmp_path / "grpc"
    summary = deploy_local(FEDMF, None, out, SMALL, timeouts={"peer_s": 30}, timeout_s=150)
    assert summary["status"] == "completed", summary["status"]
    assert summary["transport"] == "mTLS" and summary["processes"] == 4
    mem = simulate(
        load_scenario(FEDMF, SMALL), tmp_path / "mem", options=SimOptions(progress=False)
    )
    for key in ("train_rmse", "test_rmse", "plain_train_rmse", "plain_test_rmse"):
        assert summary[key] == mem[key], key
    rows, mem_rows = (
        [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        for folder in (out, tmp_path / "mem")
    )
    assert [r["epoch"] for r in rows] == [0, 1]
    for a, b in zip(rows, mem_rows, strict=True):
        for key in ("train_rmse", "test_rmse", "bytes"):
            assert a[key] == b[key], key
    model, mem_model = RatingsModel.load(out), RatingsModel.load(tmp_path / "mem")
    assert np.array_equal(model.U, mem_model.U) and np.array_equal(model.V, mem_model.V)
    # The epochs' messages are the simulation's; deployment adds the key handover
    # (2 users x certificate and box, each via the server) and the final model per user.
    stages = summary["traffic"]["messages_by_stage"]
    for stage, count in mem["traffic"]["messages_by_stage"].items():
        assert stages[stage] == count, stage
    assert (stages["key_cert"], stages["key_box"], stages["model"]) == (4, 4, 3)
    # One key: the server and every user name the same public fingerprint.
    results = [
        json.loads((out / "agents" / f"agent-{i}" / "result.json").read_text()) for i in range(4)
    ]
    assert len({r["key_fingerprint"] for r in results}) == 1
    assert not (out / "agents" / "agent-0" / "factors.npz").exists()  # the server holds no model
    # No secret key bytes (magic "CFSK") in any file the job left: logs, results, factors.
    for path in out.rglob("*"):
        if path.is_file():
            assert b"CFSK" not in path.read_bytes(), path


def test_fedmf_refuses_insecure_jobs_and_counts_its_parties(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"fedmf hands the users' shared key over .* insecure"):
        deploy_local(FEDMF, None, tmp_path / "a", SMALL, insecure=True)
    job = write_local_job(FEDMF, SMALL, None, tmp_path / "b", insecure=True)
    with pytest.raises(JobFileError, match="cannot run insecure"):
        load_job(job)
    assert local_parties(FEDMF, SMALL, None)[1] == 4
    with pytest.raises(ValueError, match=r"runs 4 processes \(3 users, so the server \(0\)"):
        local_parties(FEDMF, SMALL, 5)


def test_fedmf_users_take_their_ratings_from_the_scenario(tmp_path: Path) -> None:
    job = write_local_job(FEDMF, SMALL, None, tmp_path)
    job.write_text(job.read_text().replace("id = 2\n", 'id = 2\ndata_path = "mine.csv"\n'))
    with pytest.raises(JobFileError, match="agents' data_path cannot be used with fedmf"):
        load_job(job)


def _route(roles: list, tamper=None) -> None:  # type: ignore[no-untyped-def]
    """Drive the deployed roles in memory (no gRPC): the server begins when quiet."""
    queue = [e for r in roles for e in r.start()]
    while not all(r.done for r in roles):
        if not queue:
            assert roles[0].at_boundary, "stuck"
            queue += roles[0].begin_outer()
            continue
        env = queue.pop(0)
        env = tamper(env) if tamper is not None else env
        queue += roles[env.receiver].step(env)


def test_attack_a_relaying_server_that_swaps_a_key_box_stops_the_user(tmp_path: Path) -> None:
    """The deployed roles, driven in memory: honestly relayed, every user ends with the
    final model; a server that replaces user 1's box by one sealed with a key pair of
    its own (signed with its own certificate) is refused by that user."""
    from cipherfact.agents.envelope import Envelope
    from cipherfact.deploy.fedmf_node import FedMFNode, load_identity
    from cipherfact.protocols.base import ProtocolError
    from cipherfact.protocols.fedmf.keys import STAGE_KEYBOX, Identity, seal_key

    deploy = load_job(write_local_job(FEDMF, SMALL, None, tmp_path))

    def roles() -> list:  # type: ignore[type-arg]
        nodes = [FedMFNode(deploy, i) for i in range(4)]
        for node in nodes:
            node.out.mkdir(parents=True, exist_ok=True)
            node.prepare()
        return [node.role for node in nodes]

    honest = roles()
    _route(honest)
    assert all(r.V is not None for r in honest[1:])
    assert all(np.array_equal(r.V, honest[1].V) for r in honest[1:])

    me, trust = load_identity(deploy, 0)  # the server's own certificate and key
    posing = Identity(1, me.cert_pem, me.private_key)

    def swap(env: Envelope) -> Envelope:
        if env.stage != STAGE_KEYBOX or env.receiver != 2:
            return env
        target = load_identity(deploy, 2)[0].cert_pem  # certificates are public
        box = seal_key(
            b"CFSK-the-server-knows-this",
            b"its public key",
            job_id=env.job_id,
            leader=posing,
            recipient=2,
            recipient_cert_pem=target,
            trust=trust,
        )
        return Envelope(env.job_id, env.round, env.stage, env.sender, env.receiver, box)

    with pytest.raises(ProtocolError, match=r"agent 2: key box .* refused: .*not 'agent-1'"):
        _route(roles(), tamper=swap)
