"""Peer key floor: a neighbour cannot downgrade an honest agent to a small Paillier key.

The attack: a malicious neighbour sends a 256-bit key flagged as a *test* key
(or an unflagged key below the job's size) to an honest agent of a job with
``crypto.key_bits = 2048`` and no test keys. Every receiver -- the simulation
loader (``peer_loader``), the protocol state machine, the deployment's format
check and the FedMF server's loader -- must refuse it with a one-line error
naming the size found and the size required, unless the receiver itself was
started with ``crypto.insecure_test_keys = true``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import (
    FixedPointCodec,
    PaillierScheme,
    check_peer_key,
    generate_scheme,
    load_public_scheme,
)
from cipherfact.crypto.errors import InsecureKeyError, InsecureParameterError
from cipherfact.crypto.keys import MIN_SECURE_KEY_BITS
from cipherfact.deploy.node import PayloadFormat
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf.job import (
    PPDNMFJob,
    build_role,
    peer_loader,
    prepare_job,
)
from cipherfact.simulations.scenario import ScenarioError, load_scenario

CODEC = FixedPointCodec(frac_bits=24, int_bits=8, scalar_bits=16, max_terms=16, guard_bits=2)
SMALL = ["n_agents=5", "rank=3", "data.rows=12", "data.cols=40", "outer_iters=1", "inner_iters=1"]
HONEST = 0


def job_with(*overrides: str) -> PPDNMFJob:
    return prepare_job(load_scenario("ppdnmf-synthetic", [*SMALL, *overrides]))


def strict_job(key_bits: int = 2048, exchange: str = "pairwise") -> PPDNMFJob:
    """The honest agent's job: full-size keys, test keys NOT allowed."""
    return job_with(
        f"exchange={exchange}", f"crypto.key_bits={key_bits}", "crypto.insecure_test_keys=false"
    )


def lenient_job(exchange: str = "pairwise") -> PPDNMFJob:
    """Same job, but the receiver itself was started with test keys."""
    return job_with(
        f"exchange={exchange}", "crypto.key_bits=2048", "crypto.insecure_test_keys=true"
    )


def refusal(found: int, required: int) -> str:
    """The error names the size found and the size required."""
    return rf"{found} bits.*{required}"


@pytest.fixture(scope="session")
def honest_key() -> PaillierScheme:
    scheme = generate_scheme("paillier", codec=CODEC, key_bits=2048)
    assert isinstance(scheme, PaillierScheme)
    return scheme


@pytest.fixture(scope="session")
def proper_scheme() -> PaillierScheme:
    """A neighbour's full-size (2048-bit) key pair."""
    scheme = generate_scheme("paillier", codec=CODEC, key_bits=2048)
    assert isinstance(scheme, PaillierScheme)
    return scheme


@pytest.fixture(scope="session")
def weak_scheme_256() -> PaillierScheme:
    """The attacker's 256-bit key pair (a test key)."""
    scheme = generate_scheme("paillier", codec=CODEC, key_bits=256, insecure_test_keys=True)
    assert isinstance(scheme, PaillierScheme)
    return scheme


@pytest.fixture(scope="session")
def weak_scheme_1024() -> PaillierScheme:
    scheme = generate_scheme("paillier", codec=CODEC, key_bits=1024, insecure_test_keys=True)
    assert isinstance(scheme, PaillierScheme)
    return scheme


@pytest.fixture(scope="session")
def proper_key(proper_scheme: PaillierScheme) -> bytes:
    return proper_scheme.public_bytes()


@pytest.fixture(scope="session")
def weak_key_256(weak_scheme_256: PaillierScheme) -> bytes:
    """The attacker's 256-bit key, flagged as a test key in its public bytes."""
    data = weak_scheme_256.public_bytes()
    assert data[6] == 1  # flags: test key
    return data


@pytest.fixture(scope="session")
def unflagged_key_1024(weak_scheme_1024: PaillierScheme) -> bytes:
    """A 1024-bit key whose sender cleared the test-key flag."""
    data = bytearray(weak_scheme_1024.public_bytes())
    data[6] = 0
    return bytes(data)


def evil(job: PPDNMFJob) -> int:
    """The malicious neighbour: any neighbour of the honest agent."""
    return job.graph.neighbors(HONEST)[0]


def key_envelope(job: PPDNMFJob, payload: bytes) -> Envelope:
    return Envelope(job.config.job_id, -1, "key", evil(job), HONEST, payload)


# ---- the one rule ------------------------------------------------------------------


def test_check_peer_key_rule(honest_key: PaillierScheme) -> None:
    check_peer_key(honest_key.public(), 2048, allow_test_keys=False)
    with pytest.raises(InsecureKeyError, match=refusal(2048, 3072)):
        check_peer_key(honest_key.public(), 3072, allow_test_keys=False)
    check_peer_key(honest_key.public(), 3072, allow_test_keys=True)
    # the plain twin has no modulus to size
    check_peer_key(generate_scheme("plain", codec=CODEC, key_bits=256), 2048, False)


def test_load_public_scheme_min_key_bits(weak_key_256: bytes, proper_key: bytes) -> None:
    # without a floor the flagged test key still loads (no receiver policy asked for)
    assert load_public_scheme("paillier", weak_key_256, codec=CODEC).key_bits == 256  # type: ignore[attr-defined]
    with pytest.raises(InsecureKeyError, match=refusal(256, 2048)) as info:
        load_public_scheme("paillier", weak_key_256, codec=CODEC, min_key_bits=2048)
    assert "\n" not in str(info.value)
    loaded = load_public_scheme(
        "paillier", weak_key_256, codec=CODEC, min_key_bits=2048, insecure_test_keys=True
    )
    assert loaded.key_bits == 256  # type: ignore[attr-defined]
    assert load_public_scheme("paillier", proper_key, codec=CODEC, min_key_bits=2048)


# ---- the attack, through each receiver ---------------------------------------------


def test_peer_loader_refuses_a_256_bit_test_key(weak_key_256: bytes) -> None:
    with pytest.raises(InsecureKeyError, match=refusal(256, 2048)) as info:
        peer_loader(strict_job())(weak_key_256)
    assert "\n" not in str(info.value)


def test_peer_loader_refuses_an_unflagged_1024_bit_key(unflagged_key_1024: bytes) -> None:
    with pytest.raises(InsecureParameterError, match=refusal(1024, 2048)):
        peer_loader(strict_job())(unflagged_key_1024)


def test_peer_loader_refuses_a_full_size_key_below_the_jobs_size(proper_key: bytes) -> None:
    """Not only test keys: a 2048-bit key is too small for a 3072-bit job."""
    with pytest.raises(InsecureKeyError, match=refusal(2048, 3072)):
        peer_loader(strict_job(3072))(proper_key)


def test_peer_loader_accepts_small_keys_when_the_receiver_allows_test_keys(
    weak_key_256: bytes, unflagged_key_1024: bytes
) -> None:
    load = peer_loader(lenient_job())
    assert load(weak_key_256).key_bits == 256  # type: ignore[attr-defined]
    assert load(unflagged_key_1024).key_bits == 1024  # type: ignore[attr-defined]


def test_peer_loader_accepts_a_proper_size_key(proper_key: bytes) -> None:
    peer = peer_loader(strict_job())(proper_key)
    assert peer.key_bits == 2048  # type: ignore[attr-defined]
    assert not peer.has_secret_key


def attack_envelope(job: PPDNMFJob, evil_scheme: PaillierScheme, key: bytes) -> Envelope:
    """The key envelope the malicious neighbour's own role sends the honest agent, in the
    job's exchange format, carrying ``key`` in place of its scheme's public key bytes."""
    role = build_role(job, evil(job), evil_scheme)
    env = next(e for e in role.start() if e.receiver == HONEST and e.stage == "key")
    original = evil_scheme.public_bytes()
    assert original in env.payload
    return replace(env, payload=env.payload.replace(original, key))


BAD_KEYS = [
    ("weak_scheme_256", "weak_key_256", 256),
    ("weak_scheme_1024", "unflagged_key_1024", 1024),
]


@pytest.mark.parametrize("exchange", ["pairwise", "secagg"])
@pytest.mark.parametrize(("evil_scheme", "bad", "found"), BAD_KEYS)
def test_honest_agent_step_refuses_a_small_key(
    exchange: str,
    evil_scheme: str,
    bad: str,
    found: int,
    honest_key: PaillierScheme,
    request: pytest.FixtureRequest,
) -> None:
    job = strict_job(exchange=exchange)
    env = attack_envelope(job, request.getfixturevalue(evil_scheme), request.getfixturevalue(bad))
    agent = build_role(job, HONEST, honest_key)
    with pytest.raises(ProtocolError, match=refusal(found, 2048)) as info:
        agent.step(env)
    assert f"from agent {evil(job)}" in str(info.value)
    assert "\n" not in str(info.value)
    assert not agent.keys_ready


@pytest.mark.parametrize("exchange", ["pairwise", "secagg"])
def test_honest_agent_step_accepts_proper_key_and_lenient_small_key(
    exchange: str,
    honest_key: PaillierScheme,
    proper_scheme: PaillierScheme,
    weak_scheme_256: PaillierScheme,
) -> None:
    job = strict_job(exchange=exchange)
    agent = build_role(job, HONEST, honest_key)
    agent.step(attack_envelope(job, proper_scheme, proper_scheme.public_bytes()))
    # the same 256-bit key the strict agent refuses is accepted by a test-keys receiver
    lenient = lenient_job(exchange=exchange)
    agent = build_role(lenient, HONEST, honest_key)
    agent.step(attack_envelope(lenient, weak_scheme_256, weak_scheme_256.public_bytes()))


@pytest.mark.parametrize("bad", ["weak_key_256", "unflagged_key_1024"])
def test_deploy_format_check_refuses_a_small_key(
    bad: str, honest_key: PaillierScheme, request: pytest.FixtureRequest
) -> None:
    job = strict_job()
    payload: bytes = request.getfixturevalue(bad)
    check = PayloadFormat(job, honest_key)
    found = 256 if bad == "weak_key_256" else 1024
    with pytest.raises(ValueError, match=refusal(found, 2048)) as info:
        check(key_envelope(job, payload))
    assert str(info.value).startswith("not a valid key payload")
    assert "\n" not in str(info.value)


def test_deploy_format_check_accepts_proper_key_and_lenient_small_key(
    honest_key: PaillierScheme, proper_key: bytes, weak_key_256: bytes
) -> None:
    job = strict_job()
    PayloadFormat(job, honest_key)(key_envelope(job, proper_key))
    lenient = lenient_job()
    PayloadFormat(lenient, honest_key)(key_envelope(lenient, weak_key_256))


FEDMF_TINY = ["data.n_users=20", "data.n_items=40", "epochs=1", "crypto.key_bits=2048"]


def fedmf_servers(*overrides: str) -> list[Any]:
    """The FedMF server as the in-memory job builds it and as the Ray server actor does."""
    from cipherfact.protocols.ratings.app import FedMFServerRole
    from cipherfact.protocols.ratings.job import build_fedmf, load_split

    scenario = load_scenario("fedmf-synthetic", [*FEDMF_TINY, *overrides])
    in_memory = build_fedmf(scenario, load_split(scenario.data, scenario.seed)).roles[0]
    ray_actor = FedMFServerRole(scenario)([0]).roles[0]
    return [in_memory, ray_actor]


def fedmf_key_envelope(server: Any, payload: bytes) -> Envelope:
    return Envelope(server.config.job_id, -1, "key", 1, 0, payload)


@pytest.mark.parametrize("bad", ["weak_key_256", "unflagged_key_1024"])
def test_fedmf_server_refuses_a_small_shared_key(bad: str, request: pytest.FixtureRequest) -> None:
    payload: bytes = request.getfixturevalue(bad)
    found = 256 if bad == "weak_key_256" else 1024
    for server in fedmf_servers("crypto.insecure_test_keys=false"):
        with pytest.raises(ProtocolError, match=refusal(found, 2048)):
            server.step(fedmf_key_envelope(server, payload))
        assert server.scheme is None


def test_fedmf_server_accepts_test_key_only_when_it_allows_test_keys(
    weak_key_256: bytes,
) -> None:
    for server in fedmf_servers("crypto.insecure_test_keys=true"):
        assert server.step(fedmf_key_envelope(server, weak_key_256)) == []
        assert server.scheme.key_bits == 256


def test_prepare_job_floor_uses_the_crypto_constant() -> None:
    with pytest.raises(ScenarioError, match=re.escape(f"below {MIN_SECURE_KEY_BITS}")):
        job_with("crypto.key_bits=1024", "crypto.insecure_test_keys=false")
