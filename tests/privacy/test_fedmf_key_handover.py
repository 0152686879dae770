"""FedMF's key boxes: the relaying server can neither read the shared key nor substitute one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import generate_scheme
from cipherfact.crypto.codec import FixedPointCodec
from cipherfact.crypto.registry import load_secret_scheme
from cipherfact.deploy.tls import TlsFiles, agent_identity, write_job_certs
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.fedmf.keys import (
    STAGE_CERT,
    STAGE_KEYBOX,
    Identity,
    KeyBoxError,
    KeyFollower,
    KeyLeader,
    KeyRelay,
    Trust,
    box_recipient,
    open_key,
    seal_key,
)

JOB = "fedmf-keys-test"
SERVER, LEADER = 0, 1
SECRET, PUBLIC = b"CFSK-not-a-real-secret-key" * 3, b"CFPK-public-key"


def _identity(files: TlsFiles, agent_id: int) -> Identity:
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    return Identity(agent_id, files.cert.read_bytes(), key)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Identity], Trust, list[Identity]]:
    """Identities of agents 0..3 of one job, its trust, and agents of another CA's job."""
    files = write_job_certs(tmp_path_factory.mktemp("certs"), 4)
    other = write_job_certs(tmp_path_factory.mktemp("other"), 4)
    trust = Trust(Path(files[0].ca).read_bytes(), agent_identity)
    return (
        [_identity(f, i) for i, f in enumerate(files)],
        trust,
        [_identity(f, i) for i, f in enumerate(other)],
    )


def _seal(leader: Identity, to: Identity, trust: Trust, secret: bytes = SECRET) -> bytes:
    return seal_key(
        secret,
        PUBLIC,
        job_id=JOB,
        leader=leader,
        recipient=to.agent_id,
        recipient_cert_pem=to.cert_pem,
        trust=trust,
    )


def _open(box: bytes, me: Identity, trust: Trust, job_id: str = JOB) -> tuple[bytes, bytes]:
    return open_key(box, job_id=job_id, leader_id=LEADER, me=me, trust=trust)


def test_a_box_opens_for_its_recipient_only_and_is_fresh_each_time(job) -> None:
    ids, trust, _ = job
    box = _seal(ids[LEADER], ids[2], trust)
    assert _open(box, ids[2], trust) == (SECRET, PUBLIC)
    assert box_recipient(box) == 2
    assert SECRET not in box and _seal(ids[LEADER], ids[2], trust) != box  # ephemeral + nonce
    with pytest.raises(KeyBoxError, match="recipient 2, expected 3"):
        _open(box, ids[3], trust)
    with pytest.raises(KeyBoxError, match="job 'fedmf-keys-test', expected 'other-job'"):
        _open(box, ids[2], trust, job_id="other-job")


def test_attack_relaying_server_cannot_read_the_key(job) -> None:
    """The server holds the box, the recipient's certificate and its own key: posing as
    the recipient (its certificate, the server's key) the box does not decrypt."""
    ids, trust, _ = job
    box = _seal(ids[LEADER], ids[2], trust)
    with pytest.raises(KeyBoxError, match="recipient 2, expected 0"):
        _open(box, ids[SERVER], trust)
    posing = Identity(2, ids[2].cert_pem, ids[SERVER].private_key)
    with pytest.raises(KeyBoxError, match="does not decrypt with this agent's certificate key"):
        _open(box, posing, trust)


def test_attack_server_substituted_key_is_refused(job) -> None:
    """The server seals a key pair of its own to user 2. Signed with its own certificate
    (agent-0), with the leader's certificate attached but its own signature, or with a
    leader certificate from another CA, user 2 refuses it."""
    ids, trust, other = job
    mine = b"CFSK-the-server-knows-this"
    own_cert = Identity(LEADER, ids[SERVER].cert_pem, ids[SERVER].private_key)
    with pytest.raises(KeyBoxError, match="names \\['agent-0'\\], not 'agent-1'"):
        _open(_seal(own_cert, ids[2], trust, mine), ids[2], trust)
    leader_cert = Identity(LEADER, ids[LEADER].cert_pem, ids[SERVER].private_key)
    with pytest.raises(KeyBoxError, match="signature is not the key leader's"):
        _open(_seal(leader_cert, ids[2], trust, mine), ids[2], trust)
    foreign = other[LEADER]  # a certificate for agent-1 from another CA, and its key
    forged = _seal(foreign, ids[2], trust, mine)
    with pytest.raises(KeyBoxError, match="certificate for agent-1 is not issued by the job CA"):
        _open(forged, ids[2], trust)


def test_attack_tampered_or_reused_box_is_refused(job) -> None:
    ids, trust, _ = job
    box = json.loads(_seal(ids[LEADER], ids[2], trust))
    swapped = dict(box, public_key="AAAA")  # another public key with the leader's signature
    with pytest.raises(KeyBoxError, match="public key does not match its signed digest"):
        _open(json.dumps(swapped).encode(), ids[2], trust)
    ct = box["ciphertext"]
    flipped = dict(box, ciphertext=("B" if ct[0] == "A" else "A") + ct[1:])
    with pytest.raises(KeyBoxError, match="signature is not the key leader's"):
        _open(json.dumps(flipped).encode(), ids[2], trust)
    # the box for user 2, re-addressed to user 3 (header edited): refused
    header = json.loads(box["header"])
    header["recipient"] = 3
    readdressed = dict(box, header=json.dumps(header))
    with pytest.raises(KeyBoxError, match="sealed to another certificate than this agent's"):
        _open(json.dumps(readdressed).encode(), ids[3], trust)
    box_for_3 = json.loads(_seal(ids[LEADER], ids[3], trust))
    header["recipient_cert"] = json.loads(box_for_3["header"])["recipient_cert"]
    readdressed = dict(box, header=json.dumps(header))
    with pytest.raises(KeyBoxError, match="signature is not the key leader's"):
        _open(json.dumps(readdressed).encode(), ids[3], trust)
    with pytest.raises(KeyBoxError, match="is not JSON"):
        _open(b"\x00garbage", ids[2], trust)


def test_identity_never_pickles_or_shows_its_key(job) -> None:
    ids, _, _ = job
    assert "private_key" not in repr(ids[2])
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(ids[2])


def _route(envs: list[Envelope], parties: dict[int, object]) -> list[Envelope]:
    """Deliver until quiet; returns every envelope the server saw."""
    seen = []
    queue = list(envs)
    while queue:
        env = queue.pop(0)
        if env.receiver == SERVER:
            seen.append(env)
        out = parties[env.receiver].step(env)  # type: ignore[attr-defined]
        if isinstance(out, list):
            queue += out
        else:
            parties[env.receiver].result = out  # type: ignore[attr-defined]
    return seen


def test_exchange_through_the_relay_hands_every_user_the_key_and_the_server_none(job) -> None:
    ids, trust, _ = job
    codec = FixedPointCodec(frac_bits=20, int_bits=8, scalar_bits=1, max_terms=8)
    key = generate_scheme("paillier", codec=codec, key_bits=512, insecure_test_keys=True)
    secret = key.export_secret_key_bytes()  # type: ignore[attr-defined]
    followers = [2, 3]
    relay = KeyRelay(JOB, SERVER, LEADER, followers)
    leader = KeyLeader(
        JOB,
        ids[LEADER],
        trust,
        SERVER,
        followers,
        key.export_secret_key_bytes,  # type: ignore[attr-defined]
        key.public_bytes(),
    )
    users = {i: KeyFollower(JOB, ids[i], trust, SERVER, LEADER) for i in followers}
    seen = _route([e for u in users.values() for e in u.start()], {0: relay, 1: leader, **users})
    assert relay.complete and leader.sealed == {2, 3}
    assert [e.stage for e in seen] == [STAGE_CERT] * 2 + [STAGE_KEYBOX] * 2
    assert all(secret not in bytes(e.payload) for e in seen)
    for u in users.values():
        got, public = u.result  # type: ignore[attr-defined]
        assert public == key.public_bytes()
        opened = load_secret_scheme(got, codec=codec, insecure_test_keys=True)
        assert opened.fingerprint == key.fingerprint and opened.has_secret_key
    # the relay passes on one certificate and one box per user, and only the leader's boxes
    with pytest.raises(ProtocolError, match="duplicate certificate"):
        relay.step(users[2].start()[0])
    stray = Envelope(JOB, -1, STAGE_KEYBOX, 3, SERVER, bytes(seen[-1].payload))
    with pytest.raises(ProtocolError, match="unexpected key box"):
        relay.step(stray)
    again = Envelope(JOB, -1, STAGE_KEYBOX, SERVER, 2, bytes(seen[-1].payload))
    with pytest.raises(ProtocolError, match="unexpected 'key_box'"):
        users[2].step(again)  # a follower opens one box only
