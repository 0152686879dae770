"""ppdnmf end to end: accuracy, twin property, privacy and protocol checks."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import load_public_scheme
from cipherfact.crypto.errors import KeyMismatchError, MissingSecretKeyError
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf import STAGE_KEY, STAGE_OFFER, STAGE_REPLY, PPDNMFConfig
from cipherfact.protocols.ppdnmf.job import (
    build_roles,
    generate_keys,
    prepare_job,
    references,
    run_inmemory,
)
from cipherfact.simulations.scenario import load_scenario

SMALL = [
    "n_agents=5",
    "rank=3",
    "data.rows=12",
    "data.cols=40",
    "outer_iters=3",
    "inner_iters=4",
    "crypto.key_bits=512",
    "crypto.insecure_test_keys=true",
    "crypto.processes=1",
    "exchange=pairwise",  # the offer/reply checks below; secagg: test_ppdnmf_secagg.py
]


def small_job(*overrides: str):
    return prepare_job(load_scenario("ppdnmf-synthetic", [*SMALL, *overrides]))


def final_roles(job, **kwargs):
    """Final factors per agent, as objects with .W and .H."""
    last = None
    for result in run_inmemory(job, **kwargs):
        last = result
    return [SimpleNamespace(W=W, H=H) for W, H in zip(last.Ws, last.Hs, strict=True)]


@pytest.fixture(scope="module")
def recorded_paillier_run():
    """A small paillier run with every envelope recorded."""
    job = small_job()
    envelopes: list[Envelope] = []
    schemes = generate_keys(job)
    roles = final_roles(job, observer=envelopes.append, schemes=schemes)
    return job, schemes, roles, envelopes


@pytest.mark.parametrize("exchange", ["pairwise", "secagg"])
def test_twin_paillier_and_plain_give_bit_identical_factors(exchange):
    # paillier decrypts through the shared 2-process pool, plain needs none
    ex = f"exchange={exchange}"
    job_p = small_job("crypto.processes=2", ex)
    job_q = small_job("crypto.scheme=none", ex)
    roles_p, roles_q = final_roles(job_p), final_roles(job_q)
    for i in range(job_p.n_agents):
        assert roles_p[i].W.tobytes() == roles_q[i].W.tobytes()
        assert roles_p[i].H.tobytes() == roles_q[i].H.tobytes()
    # and the run actually moved away from the start
    assert not np.array_equal(roles_p[0].W, job_p.config.initial_w(job_p.X.shape[0]))


@pytest.mark.parametrize(
    "overrides",
    [
        # the paper's synthetic setup at reduced size (plain twin: same numbers as paillier)
        [
            "n_agents=6",
            "data.rows=20",
            "data.cols=90",
            "rank=4",
            "outer_iters=60",
            "inner_iters=15",
            "crypto.scheme=plain",
        ],
        # the digits data set, first 240 images, rank 6
        [
            "data.kind='digits'",
            "data.max_cols=240",
            "n_agents=6",
            "rank=6",
            "outer_iters=40",
            "inner_iters=15",
            "crypto.scheme=plain",
        ],
    ],
    ids=["synthetic", "digits"],
)
@pytest.mark.parametrize("exchange", ["pairwise", "secagg"])
def test_accuracy_within_one_percent_of_centralized(overrides, exchange):
    job = prepare_job(load_scenario("ppdnmf-synthetic", [*overrides, f"exchange={exchange}"]))
    last = None
    for result in run_inmemory(job):
        last = result.metrics
    central, plain = references(job)
    assert last is not None
    assert last.rel_error <= 1.01 * central.rel_error, (last.rel_error, central.rel_error)
    # the protocol tracks the crypto-free algorithm closely (fixed point is the only difference)
    assert abs(last.rel_error - plain.rel_error) <= 1e-3 * plain.rel_error
    assert last.consensus_spread < 5e-2


def test_no_payload_is_readable_by_anyone_but_its_key_owner(recorded_paillier_run):
    job, schemes, roles, envelopes = recorded_paillier_run
    stages = {e.stage for e in envelopes}
    assert stages == {STAGE_KEY, STAGE_OFFER, STAGE_REPLY}
    secrets_raw = []
    for i in range(job.n_agents):
        for arr in (job.blocks[i], roles[i].W, roles[i].H):
            secrets_raw.append(np.ascontiguousarray(arr).tobytes()[:64])
    for env in envelopes:
        for raw in secrets_raw:
            assert raw not in env.payload
        if env.stage == STAGE_KEY:
            continue
        # offers are under the sender's key, replies under the receiver's key
        owner = env.sender if env.stage == STAGE_OFFER else env.receiver
        for other in range(job.n_agents):
            if other == owner:
                continue
            with pytest.raises(KeyMismatchError):
                schemes[other].from_bytes(env.payload)
        schemes[owner].decrypt(schemes[owner].from_bytes(env.payload))  # the owner can


def test_key_stage_carries_public_keys_only(recorded_paillier_run):
    job, schemes, _roles, envelopes = recorded_paillier_run
    for env in (e for e in envelopes if e.stage == STAGE_KEY):
        public = load_public_scheme("paillier", env.payload, codec=job.codec)
        assert public.fingerprint == schemes[env.sender].fingerprint
        assert not public.has_secret_key
        with pytest.raises(MissingSecretKeyError):
            public.decrypt(public.encrypt(np.zeros(3)))


def test_every_ciphertext_is_fresh(recorded_paillier_run):
    """Same seed, same plaintexts: a second run must still send different bytes."""
    job, schemes, _roles, envelopes = recorded_paillier_run
    again: list[Envelope] = []
    final_roles(job, observer=again.append, schemes=schemes)
    first = {(e.round, e.stage, e.sender, e.receiver): e.payload for e in envelopes}
    for env in again:
        if env.stage == STAGE_KEY:
            continue
        assert env.payload != first[(env.round, env.stage, env.sender, env.receiver)]
    # within one run, an agent's offers differ from round to round, and replies all differ
    replies = [e.payload for e in envelopes if e.stage == STAGE_REPLY]
    assert len(set(replies)) == len(replies)
    offers_by_round = {}
    for e in envelopes:
        if e.stage == STAGE_OFFER and e.sender == 0:
            offers_by_round.setdefault(e.round, e.payload)
    assert len(set(offers_by_round.values())) == len(offers_by_round)


def test_reply_metadata_does_not_reveal_the_private_weight(recorded_paillier_run):
    """Replies' public metadata is the same whatever weight each replier drew."""
    _job, schemes, _roles, envelopes = recorded_paillier_run
    replies = [e for e in envelopes if e.stage == STAGE_REPLY]
    meta = set()
    for env in replies:
        ct = schemes[env.receiver].from_bytes(env.payload)
        meta.add((ct.terms, ct.scale, ct.offset, len(env.payload)))
    assert len(replies) > 20 and len(meta) == 1


def test_protocol_rejects_unexpected_messages():
    job = small_job("crypto.scheme=plain")
    schemes = generate_keys(job)
    roles = build_roles(job, schemes)
    agent = roles[0]
    stranger = next(i for i in range(job.n_agents) if i not in agent.neighbors and i != 0)
    neighbour = agent.neighbors[0]
    job_id = job.config.job_id

    def env(round_, stage, sender, payload=b"x", job=job_id):
        return Envelope(job, round_, stage, sender, 0, payload)

    with pytest.raises(ProtocolError, match="expected 'ppdnmf"):
        agent.step(env(-1, STAGE_KEY, neighbour, job="other-job"))
    with pytest.raises(ProtocolError, match=f"from agent {stranger}, which is not a neighbour"):
        agent.step(env(-1, STAGE_KEY, stranger))
    with pytest.raises(ProtocolError, match="unknown stage 'gossip'"):
        agent.step(env(0, "gossip", neighbour))
    with pytest.raises(ProtocolError, match="bad public key"):
        agent.step(env(-1, STAGE_KEY, neighbour, b"garbage"))
    for j in agent.neighbors:
        agent.step(env(-1, STAGE_KEY, j, schemes[j].public_bytes()))
    with pytest.raises(ProtocolError, match="duplicate public key"):
        agent.step(env(-1, STAGE_KEY, neighbour, schemes[neighbour].public_bytes()))
    with pytest.raises(ProtocolError, match=r"offer for round 5 .* expected a round in 0..1"):
        agent.step(env(5, STAGE_OFFER, neighbour))
    with pytest.raises(ProtocolError, match=r"reply for round 0 .* after our offer"):
        agent.step(env(0, STAGE_REPLY, neighbour))
    with pytest.raises(ProtocolError, match="bad offer for round 0"):
        agent.step(env(0, STAGE_OFFER, neighbour, b"not a ciphertext"))
    agent.begin_outer()
    with pytest.raises(ProtocolError, match=r"reply for round 1 .* expected round 0"):
        agent.step(env(1, STAGE_REPLY, neighbour))
    # a ciphertext under the wrong key (the neighbour's own) is refused as a reply
    wrong = schemes[neighbour].to_bytes(schemes[neighbour].encrypt(-agent.W.ravel()))
    with pytest.raises(ProtocolError, match="bad reply for round 0"):
        agent.step(env(0, STAGE_REPLY, neighbour, wrong))


def test_agent_answers_a_duplicate_offer_only_once():
    job = small_job("crypto.scheme=plain")
    schemes = generate_keys(job)
    roles = build_roles(job, schemes)
    agent = roles[0]
    neighbour = agent.neighbors[0]
    for j in agent.neighbors:
        agent.step(Envelope(job.config.job_id, -1, STAGE_KEY, j, 0, schemes[j].public_bytes()))
    offer = roles[neighbour].scheme.to_bytes(
        roles[neighbour].scheme.encrypt(-roles[neighbour].W.ravel())
    )
    out = agent.step(Envelope(job.config.job_id, 0, STAGE_OFFER, neighbour, 0, offer))
    assert [e.stage for e in out] == [STAGE_REPLY] and out[0].receiver == neighbour
    with pytest.raises(ProtocolError, match="duplicate offer for round 0"):
        agent.step(Envelope(job.config.job_id, 0, STAGE_OFFER, neighbour, 0, offer))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rank", 0, "rank must be a positive integer"),
        ("outer_iters", 0, "outer_iters must be a positive integer"),
        ("weight_bits", 0, r"weight_bits must be in \[1, 16\]"),
        ("penalty", -1.0, "penalty must be > 0"),
    ],
)
def test_config_validation(field, value, message):
    base = PPDNMFConfig(job_id="j", rank=2)
    with pytest.raises(ValueError, match=message):
        replace(base, **{field: value})


@pytest.mark.parametrize("amplitude_bits", [1, 7, 14, 23, 40])
def test_reply_noise_is_the_shake_stream_read_value_by_value(amplitude_bits: int) -> None:
    """The vectorized reader gives exactly the documented draws: each value is its
    ``width`` big-endian bytes of the SHAKE-256 stream, mod 2^(amplitude_bits + 1),
    shifted to [-2^amplitude_bits, 2^amplitude_bits)."""
    import hashlib
    import struct

    from cipherfact.protocols.ppdnmf.config import reply_noise

    for seed, round_index, receiver, size in ((2**64 - 1, 0, 3, 1), (12345, 2999, 0, 150)):
        got = reply_noise(seed, round_index, receiver, size, amplitude_bits)
        width = (amplitude_bits + 1 + 7) // 8 + 1
        key = struct.pack(">QqQ", seed, round_index, receiver)
        stream = hashlib.shake_256(b"cipherfact-reply-noise|" + key).digest(width * size)
        mod = 1 << (amplitude_bits + 1)
        want = [
            int.from_bytes(stream[i * width : (i + 1) * width], "big") % mod - (1 << amplitude_bits)
            for i in range(size)
        ]
        assert got.dtype == np.int64 and got.tolist() == want
        assert got.min() >= -(1 << amplitude_bits) and got.max() < (1 << amplitude_bits)
