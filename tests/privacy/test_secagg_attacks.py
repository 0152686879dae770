"""Attacks on ppdnmf's secagg exchange, each from one party's (or coalition's) view.

A hub i may decrypt every share addressed to it; a coalition pools its
members' own mask secrets; an eavesdropper sees every payload on a link. The
claims (README, privacy model) these tests back:

* one share, decrypted by its hub, is uniform in the ring whatever W_j is;
* the hub's sum is exactly the sum of its neighbours' fixed-point W_j;
* i plus all of N_i but j recover W_j; with two members missing they do not;
* with crypto.scheme = "paillier" no payload decodes without its owner's key;
  with "none", an eavesdropper on all of a hub's links learns what the hub does.

Each claim is also run against a broken variant (masks switched off) where
the same attack must succeed, so that the tests can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from cipherfact.crypto import FixedPointCodec
from cipherfact.crypto.errors import KeyMismatchError
from cipherfact.crypto.masking import (
    ClearMaskedSum,
    MaskAgreement,
    combined_mask,
    mask_stream,
    pair_context,
)
from cipherfact.protocols.ppdnmf import STAGE_KEY, STAGE_PEERS, STAGE_SHARE
from cipherfact.protocols.ppdnmf import secagg as secagg_module

from .conftest import Transcript, make_job, record_run

CODEC = FixedPointCodec(frac_bits=15, int_bits=6, scalar_bits=1, max_terms=4)


def fixed(x: np.ndarray, frac: int) -> np.ndarray:
    return np.rint(np.ldexp(x, frac)).astype(np.int64)


def hub_sees_single_share(W_j: np.ndarray, rng: np.random.Generator, masked: bool) -> np.ndarray:
    """One hub with members j, k, l (fresh keys per trial): the uint64 words of j's share."""
    members = [MaskAgreement() for _ in range(3)]
    pub = [m.public_bytes() for m in members]
    seeds = [(k, members[0].shared_seed(pub[k], pair_context("job", 9, 0, k))) for k in (1, 2)]
    ring = ClearMaskedSum(CODEC)
    mask = combined_mask(0, seeds, 0, W_j.size, ring.modulus) if masked else [0] * W_j.size
    payload = ring.seal(W_j, mask)
    return ring.words(payload)


@pytest.mark.parametrize("masked", [True, False], ids=["secagg", "broken-no-masks"])
def test_one_share_is_independent_of_w_j(masked):
    """Shares for two different W_j are identically distributed (chi-square on 4 bits that
    tell the two encodings apart: bits 13..16)."""
    rng = np.random.default_rng(1)
    A, B = np.full(8, 0.25), np.full(8, 3.5)
    top = {}
    shift, nibble_mask = np.uint32(13), np.uint32(15)
    for name, W in (("A", A), ("B", B)):
        words = np.concatenate([hub_sees_single_share(W, rng, masked) for _ in range(400)])
        nibble = (words >> shift) & nibble_mask
        top[name] = np.bincount(nibble.astype(np.int64), minlength=16)
    table = np.array([top["A"], top["B"]]) + 1  # +1: no empty cells in the broken variant
    p_value = chi2_contingency(table).pvalue
    if masked:
        assert p_value > 1e-3, p_value  # no evidence that the two differ
    else:
        assert p_value < 1e-12, p_value  # the unmasked encodings differ at once


def share_words(t: Transcript, env) -> list[int]:
    """The ring elements the hub obtains from one share with its own key."""
    own = t.schemes[env.receiver]
    if t.job.scenario.crypto.scheme == "paillier":
        ct = own.from_bytes(env.payload)
        return [int(v) for v in own._decrypt_ints(ct.ints)]
    return [int(v) for v in t.roles[env.receiver]._own_sum.words(env.payload)]


@pytest.mark.parametrize("which", ["secagg_transcript", "secagg_clear_transcript"])
def test_hub_cannot_read_a_single_share_but_gets_the_exact_sum(which, request):
    t: Transcript = request.getfixturevalue(which)
    frac = t.job.codec.frac_bits
    shares = [e for e in t.envelopes if e.stage == STAGE_SHARE]
    assert len(shares) >= 200
    by_hub_round: dict[tuple[int, int], list] = {}
    for env in shares:
        by_hub_round.setdefault((env.receiver, env.round), []).append(env)
        # decoding one share as if it were unmasked gives nothing like W_j
        ring = t.roles[env.receiver]._own_sum
        try:
            guess = ring.open_sum([env.payload], t.job.config.rank * t.job.X.shape[0])
        except Exception:  # a Paillier residue rarely even decodes
            continue
        truth = t.W_at[(env.sender, env.round)].ravel()
        assert not np.allclose(guess, truth, atol=1e-2)
    for (hub, r), envs in by_hub_round.items():
        assert sorted(e.sender for e in envs) == list(t.job.graph.neighbors(hub))
        total = t.roles[hub]._own_sum.open_sum([e.payload for e in envs], t.W_at[(hub, r)].size)
        expect = sum(fixed(t.W_at[(e.sender, r)].ravel(), frac) for e in envs)
        assert np.array_equal(fixed(total, frac), expect)


def test_paillier_single_share_decrypts_to_a_uniform_residue(secagg_transcript):
    """i's own decryption of one share: uniform mod n (chi-square on 16 buckets)."""
    t = secagg_transcript
    buckets = np.zeros(16, dtype=np.int64)
    for env in (e for e in t.envelopes if e.stage == STAGE_SHARE):
        n = t.schemes[env.receiver].mask_modulus
        for value in share_words(t, env):
            buckets[value * 16 // n] += 1
    expected = np.full(16, buckets.sum() / 16)
    stat = float(np.sum((buckets - expected) ** 2 / expected))
    assert buckets.sum() >= 200 and stat < 50.0, buckets  # 15 dof: p ~ 1e-5 at 50


def unmask_with(t: Transcript, hub: int, sender: int, coalition: set[int], r: int):
    """What the coalition computes for ``sender``'s share to ``hub`` with the secrets it holds."""
    env = next(
        e
        for e in t.envelopes
        if e.stage == STAGE_SHARE and e.receiver == hub and e.sender == sender and e.round == r
    )
    ring = t.roles[hub]._own_sum
    count = ring.mask_count(t.W_at[(hub, r)].size)
    mask = [0] * count
    for k in sorted(coalition - {hub}):
        seed = dict(t.roles[k]._pair_seeds[hub])[sender]  # k's own secret with sender
        stream = [int(v) for v in mask_stream(seed, r, count, ring.modulus)]
        sign = 1 if sender < k else -1
        mask = [(m + sign * s) % ring.modulus for m, s in zip(mask, stream, strict=True)]
    words = share_words(t, env)
    clean = [(w - m) % ring.modulus for w, m in zip(words, mask, strict=True)]
    return clean, ring


def decode_words(clean: list[int], t: Transcript, hub: int) -> np.ndarray:
    """Words -> floats, as the hub's decoder would (packed slots or 64-bit integers)."""
    scheme = t.schemes[hub]
    frac = t.job.codec.frac_bits
    if t.job.scenario.crypto.scheme == "paillier":
        from cipherfact.crypto.codec import unpack_slots

        units = unpack_slots(clean, scheme.layout, t.W_at[(hub, 0)].size)
        return np.ldexp(np.array([u - scheme.codec.value_bound for u in units], float), -frac)
    ring = t.roles[hub]._own_sum
    return ring.decode_words(np.array(clean, dtype=np.uint64))


@pytest.mark.parametrize("which", ["secagg_transcript", "secagg_clear_transcript"])
def test_coalition_of_hub_and_all_other_members_recovers_w_j_and_no_smaller_one(which, request):
    t: Transcript = request.getfixturevalue(which)
    frac = t.job.codec.frac_bits
    hub = max(range(t.job.n_agents), key=t.job.graph.degree)
    members = list(t.job.graph.neighbors(hub))
    assert len(members) >= 3
    j, other = members[0], members[1]
    r = 5
    truth = fixed(t.W_at[(j, r)].ravel(), frac)
    full = {hub, *members} - {j}
    clean, _ = unmask_with(t, hub, j, full, r)
    assert np.array_equal(fixed(decode_words(clean, t, hub), frac), truth)  # documented leak
    partial = full - {other}
    clean, _ = unmask_with(t, hub, j, partial, r)
    guess = fixed(decode_words(clean, t, hub), frac)
    assert np.mean(guess == truth) < 0.05  # the one missing pair secret hides W_j


def test_eavesdropper_sees_no_payload_it_can_decrypt(secagg_transcript):
    """secagg + paillier: shares decode only under their hub's key; setup carries public keys."""
    t = secagg_transcript
    dh_keys = {}
    for env in t.envelopes:
        if env.stage == STAGE_KEY:
            dh, paillier = secagg_module.decode_key_message(env.payload)
            assert paillier == t.schemes[env.sender].public_bytes()  # public key only
            dh_keys[env.sender] = dh
    for env in t.envelopes:
        if env.stage == STAGE_PEERS:
            for k, key in secagg_module.decode_peers_message(env.payload):
                assert key == dh_keys[k]  # the relay forwards public keys only
        elif env.stage == STAGE_SHARE:
            for other, scheme in t.schemes.items():
                if other != env.receiver:
                    with pytest.raises(KeyMismatchError):
                        scheme.from_bytes(env.payload)


def test_clear_variant_eavesdropper_on_all_hub_links_learns_the_hub_sum(
    secagg_clear_transcript,
):
    """crypto.scheme = "none": masks hide each term from the hub, not the sum from a wiretap
    on all of the hub's incoming links (README: use TLS, as deployments do)."""
    t = secagg_clear_transcript
    frac = t.job.codec.frac_bits
    hub, r = 0, 3
    envs = [e for e in t.envelopes if e.stage == STAGE_SHARE and e.receiver == hub and e.round == r]
    ring = ClearMaskedSum(t.job.codec)  # the public format: all a wiretap needs
    total = ring.words(envs[0].payload)
    for e in envs[1:]:
        total = total + ring.words(e.payload)  # wraps in the ring
    seen = ring.decode_words(total)
    expect = sum(fixed(t.W_at[(e.sender, r)].ravel(), frac) for e in envs)
    assert np.array_equal(fixed(seen, frac), expect)


def test_masks_switched_off_let_the_hub_read_every_share(monkeypatch):
    """The broken variant of the protocol itself: without masks one share is W_j."""
    monkeypatch.setattr(
        secagg_module, "combined_mask", lambda sender, seeds, r, count, modulus: [0] * count
    )
    t = record_run(make_job("exchange=secagg", "crypto.scheme=none", "outer_iters=1"))
    frac = t.job.codec.frac_bits
    env = next(e for e in t.envelopes if e.stage == STAGE_SHARE and e.round == 2)
    ring = ClearMaskedSum(t.job.codec)
    seen = ring.decode_words(ring.words(env.payload))
    assert np.array_equal(fixed(seen, frac), fixed(t.W_at[(env.sender, 2)].ravel(), frac))
