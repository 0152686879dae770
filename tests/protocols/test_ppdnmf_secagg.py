"""ppdnmf's secagg exchange: masks, message checks, graph requirements.

What a party learns is attacked in tests/privacy/test_secagg_attacks.py; here
the arithmetic and the protocol's refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import FixedPointCodec, generate_scheme
from cipherfact.crypto.errors import DecodeError
from cipherfact.crypto.masking import (
    ClearMaskedSum,
    MaskAgreement,
    PaillierMaskedSum,
    combined_mask,
    mask_stream,
    pair_context,
)
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf import STAGE_KEY, STAGE_PEERS, STAGE_SHARE, SecAggAgent
from cipherfact.protocols.ppdnmf.job import (
    build_roles,
    check_graph,
    generate_keys,
    prepare_job,
)
from cipherfact.protocols.ppdnmf.secagg import (
    decode_key_message,
    decode_peers_message,
    encode_key_message,
    encode_peers_message,
)
from cipherfact.simulations.scenario import ScenarioError, load_scenario
from cipherfact.simulations.topology import Graph

CODEC = FixedPointCodec(frac_bits=15, int_bits=6, scalar_bits=1, max_terms=4)
SMALL = [
    "n_agents=5",
    "rank=3",
    "data.rows=12",
    "data.cols=40",
    "outer_iters=2",
    "inner_iters=3",
    "exchange=secagg",
    "crypto.scheme=none",
    "topology.min_degree=2",
]


def hub_seeds(members: list[int], hub: int = 7) -> dict[int, list[tuple[int, bytes]]]:
    """Every member's (other, seed) list for one hub, from fresh X25519 keys."""
    keys = {m: MaskAgreement() for m in members}
    pubs = {m: k.public_bytes() for m, k in keys.items()}
    return {
        m: [
            (k, keys[m].shared_seed(pubs[k], pair_context("job", hub, m, k)))
            for k in members
            if k != m
        ]
        for m in members
    }


def test_both_ends_of_a_pair_derive_the_same_seed_and_contexts_separate_them():
    a, b = MaskAgreement(), MaskAgreement()
    ctx = pair_context("job", 3, 1, 2)
    assert a.shared_seed(b.public_bytes(), ctx) == b.shared_seed(a.public_bytes(), ctx)
    assert a.shared_seed(b.public_bytes(), ctx) != a.shared_seed(
        b.public_bytes(), pair_context("job", 4, 1, 2)
    )
    with pytest.raises(DecodeError, match="32 bytes"):
        a.shared_seed(b"short", ctx)
    with pytest.raises(DecodeError, match="bad mask public key"):
        a.shared_seed(bytes(32), ctx)  # the all-zero (low-order) point


@pytest.mark.parametrize("modulus", [1 << 32, 1 << 64, (1 << 127) - 1])
def test_masks_cancel_exactly_over_a_hub(modulus):
    members = [0, 2, 5, 9]
    seeds = hub_seeds(members)
    total = [0] * 6
    for m in members:
        mask = [int(x) for x in combined_mask(m, seeds[m], 11, 6, modulus)]
        assert all(0 <= x < modulus for x in mask) and any(mask)
        total = [(t + x) % modulus for t, x in zip(total, mask, strict=True)]
    assert total == [0] * 6
    # another round gives other masks
    seed = seeds[0][0][1]
    assert list(mask_stream(seed, 11, 6, modulus)) != list(mask_stream(seed, 12, 6, modulus))


def test_clear_and_paillier_masked_sums_decode_to_the_same_floats():
    rng = np.random.default_rng(0)
    members = [0, 1, 2]
    seeds = hub_seeds(members)
    Ws = [rng.uniform(0, 3, 100) for _ in members]
    paillier = generate_scheme("paillier", codec=CODEC, key_bits=512, insecure_test_keys=True)
    rings = [ClearMaskedSum(CODEC), PaillierMaskedSum(paillier)]
    sums = []
    for ring in rings:
        sealed = [
            ring.seal(W, combined_mask(m, seeds[m], 0, ring.mask_count(100), ring.modulus))
            for m, W in zip(members, Ws, strict=True)
        ]
        sums.append(ring.open_sum(sealed, 100))
    assert sums[0].tobytes() == sums[1].tobytes()
    exact = np.ldexp(sum(np.rint(np.ldexp(W, 15)) for W in Ws), -15)
    assert np.array_equal(sums[0], exact)


def test_clear_masked_sum_refuses_malformed_messages():
    ring = ClearMaskedSum(CODEC)
    good = ring.seal(np.ones(4), [0] * 4)
    ring.check(good, 4)
    with pytest.raises(DecodeError, match="truncated"):
        ring.check(good[:5])
    with pytest.raises(DecodeError, match="bytes for 4 values"):
        ring.check(good[:-1])
    with pytest.raises(DecodeError, match="not a masked message"):
        ring.check(b"XXXX" + good[4:])
    wide = ClearMaskedSum(FixedPointCodec(frac_bits=40, int_bits=6, scalar_bits=1, max_terms=4))
    assert (ring.word_bytes, wide.word_bytes) == (4, 8)
    with pytest.raises(DecodeError, match=r"4-byte words \(expected 8\)"):
        wide.check(good)
    with pytest.raises(DecodeError, match="expected 5"):
        ring.check(good, 5)
    with pytest.raises(DecodeError, match="exceed the codec's max_terms"):
        ring.open_sum([good] * 5, 4)


def test_setup_messages_round_trip_and_refuse_garbage():
    key = encode_key_message(b"k" * 32, b"paillier-bytes")
    assert decode_key_message(key) == (b"k" * 32, b"paillier-bytes")
    assert decode_key_message(encode_key_message(b"k" * 32, None)) == (b"k" * 32, None)
    with pytest.raises(DecodeError, match="does not announce"):
        decode_key_message(encode_key_message(b"k" * 32, None) + b"extra")
    peers = [(3, b"a" * 32), (8, b"b" * 32)]
    assert decode_peers_message(encode_peers_message(peers)) == peers
    with pytest.raises(DecodeError, match="lists an agent twice"):
        decode_peers_message(encode_peers_message([(3, b"a" * 32), (3, b"b" * 32)]))
    with pytest.raises(DecodeError, match="bytes for 2"):
        decode_peers_message(encode_peers_message(peers)[:-1])


def test_a_graph_with_a_degree_one_agent_is_refused_before_any_key():
    # the paper's graph (seed 0) without the guarantee: agent 8 has one neighbour
    scenario = load_scenario("ppdnmf-synthetic", ["topology.min_degree=1"])
    with pytest.raises(ScenarioError, match=r"at least 2 neighbours; agent\(s\) \[8\] have"):
        prepare_job(scenario)
    with pytest.raises(ScenarioError, match=r"agent\(s\) \[0, 2\]"):
        check_graph(scenario, Graph.from_edges(3, [(0, 1), (1, 2)]))
    check_graph(
        load_scenario("ppdnmf-synthetic", ["exchange=pairwise"]),
        Graph.from_edges(3, [(0, 1), (1, 2)]),
    )  # pairwise needs one neighbour


def test_bundled_scenarios_meet_the_degree_requirement():
    for name in ("ppdnmf-synthetic", "ppdnmf-digits"):
        job = prepare_job(load_scenario(name, ["data.max_cols=200"] if "digits" in name else []))
        assert job.config.exchange == "secagg"
        assert min(job.graph.degree(i) for i in range(job.n_agents)) >= 2


def test_agent_rejects_unexpected_messages():
    job = prepare_job(load_scenario("ppdnmf-synthetic", SMALL))
    schemes = generate_keys(job)
    roles = build_roles(job, schemes)
    agent = roles[0]
    assert isinstance(agent, SecAggAgent)
    j = agent.neighbors[0]
    job_id = job.config.job_id

    def env(round_, stage, sender, payload):
        return Envelope(job_id, round_, stage, sender, 0, payload)

    starts = {i: {e.receiver: e for e in r.start()} for i, r in roles.items()}
    with pytest.raises(ProtocolError, match="bad share for round 0"):
        agent.step(env(0, STAGE_SHARE, j, b"x"))  # checked under our own key, setup or not
    with pytest.raises(ProtocolError, match="bad key"):
        agent.step(env(-1, STAGE_KEY, j, b"garbage"))
    with pytest.raises(ProtocolError, match="key for round 2"):
        agent.step(env(2, STAGE_KEY, j, starts[j][0].payload))
    relayed = []
    for k in agent.neighbors:
        relayed += agent.step(starts[k][0])
    assert {e.stage for e in relayed} == {STAGE_PEERS}
    assert {e.receiver for e in relayed} == set(agent.neighbors)
    with pytest.raises(ProtocolError, match="duplicate key"):
        agent.step(starts[j][0])
    with pytest.raises(ProtocolError, match="must name the hub's other members"):
        agent.step(env(-1, STAGE_PEERS, j, encode_peers_message([(0, b"a" * 32)])))
    # a real relay from each neighbour completes the setup
    for hub in agent.neighbors:
        for k in roles[hub].neighbors:
            out = roles[hub].step(starts[k][hub]) if k != hub else []
            for e in out:
                if e.receiver == 0:
                    agent.step(e)
    assert agent.keys_ready
    with pytest.raises(ProtocolError, match="duplicate peer list"):
        agent.step(env(-1, STAGE_PEERS, j, encode_peers_message([(99, b"a" * 32)])))
    shares = agent.begin_outer()
    assert [e.stage for e in shares] == [STAGE_SHARE] * len(agent.neighbors)
    with pytest.raises(ProtocolError, match="share for round 5; expected round 0 or 1"):
        agent.step(env(5, STAGE_SHARE, j, shares[0].payload))
    with pytest.raises(ProtocolError, match="bad share for round 0"):
        agent.step(env(0, STAGE_SHARE, j, b"not a share"))
    agent.step(env(0, STAGE_SHARE, j, shares[0].payload))
    with pytest.raises(ProtocolError, match="duplicate share for round 0"):
        agent.step(env(0, STAGE_SHARE, j, shares[0].payload))


def test_shares_whose_masks_do_not_cancel_are_refused_not_summed():
    """A neighbour that sends a share with wrong masks breaks the sum: the hub says so
    (with Paillier the slot bounds catch it) rather than using wrong numbers."""
    scenario = load_scenario(
        "ppdnmf-synthetic",
        [
            *SMALL[:-2],
            "topology.min_degree=2",
            "crypto.key_bits=512",
            "crypto.insecure_test_keys=true",
            "crypto.scheme=paillier",
        ],
    )
    job = prepare_job(scenario)
    roles = build_roles(job, generate_keys(job))
    pending = [e for r in roles.values() for e in r.start()]
    while pending:
        e = pending.pop(0)
        pending += roles[e.receiver].step(e)
    hub = roles[0]
    out = [e for r in roles.values() for e in r.begin_outer()]
    for e in (e for e in out if e.receiver == 0):
        if e.sender == hub.neighbors[0]:
            sealer = roles[e.sender]._sealers[0]
            bad = sealer.seal(roles[e.sender].W.ravel(), [12345] * sealer.mask_count(hub.W.size))
            e = Envelope(e.job_id, e.round, e.stage, e.sender, e.receiver, bad)
        try:
            hub.step(e)
        except ProtocolError as exc:
            assert "do not sum" in str(exc)
            return
    pytest.fail("the hub summed shares whose masks do not cancel")


@pytest.mark.parametrize("exchange", ["secagg", "pairwise"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_delivery_order_gives_the_same_factors(exchange, seed):
    """Agents that advance by themselves (a deployment) under a random delivery order that
    keeps each link FIFO: shares may reach a hub before its own setup is done."""
    overrides = [*SMALL, f"exchange={exchange}"]
    job = prepare_job(load_scenario("ppdnmf-synthetic", overrides))
    reference = build_roles(job, generate_keys(job), auto_advance=True)
    rng = np.random.default_rng(seed)
    for roles in (reference, build_roles(job, generate_keys(job), auto_advance=True)):
        links: dict[tuple[int, int], list[Envelope]] = {}
        for role in roles.values():
            for e in role.start():
                links.setdefault((e.sender, e.receiver), []).append(e)
        while any(links.values()):
            busy = [k for k, q in links.items() if q]
            # the reference run delivers in a fixed order, the other in a random one
            key = busy[0] if roles is reference else busy[rng.integers(len(busy))]
            e = links[key].pop(0)
            for out in roles[e.receiver].step(e):
                links.setdefault((out.sender, out.receiver), []).append(out)
        assert all(r.done for r in roles.values())
    other = roles
    for i in range(job.n_agents):
        assert np.array_equal(reference[i].W, other[i].W)
        assert np.array_equal(reference[i].H, other[i].H)
