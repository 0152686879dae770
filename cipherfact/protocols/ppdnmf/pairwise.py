"""ppdnmf's pairwise exchange (after Ruan, Gao & Wang 2019), with noised replies.

For one round k, per agent i and neighbour j:

1. "offer": i encrypts -W_i under its own key (fresh randomness every round)
   and sends the same ciphertext to each neighbour;
2. "reply": j adds W_j in plaintext, multiplies by its private weight a_ji in
   [2^(b-1), 2^b), adds fresh noise eta (uniform integers in
   [-2^(b+lambda), 2^(b+lambda)) at the codec's fixed point, lambda =
   ``reply_noise_bits``), re-randomizes under i's key and sends it back;
3. i multiplies each reply by its own a_ij, sums them homomorphically and
   decrypts once: d_i = sum_j rho_ij (W_j - W_i) + noise, rho_ij = c a_ij a_ji / 4^b.

What i learns. i holds the key, so it can decrypt each reply on its own:
v = a_ji (W_j - W_i) 2^F + eta per slot (F = the codec's fraction bits,
lambda finer than the scenario's). Without eta (the paper's construction,
``reply_noise_bits = 0``) the gcd of the slots is a_ji and W_j follows
bit-exactly; eta makes every residue mod every candidate weight uniform, so
the gcd attack succeeds at chance. What remains, per reply: the direction of
W_j - W_i (one unknown scale a_ji for all slots), its size within a factor
of 2, plus noise of amplitude 2^(b+lambda-F) / a_ji per slot; and since
W_j >= 0 is public, every slot where i's W_i exceeds the noise bound and
W_j = 0 bounds a_ji from below. ``tests/privacy/test_pairwise_attacks.py``
measures both. Use the ``secagg`` exchange where a neighbour must learn
nothing about any single W_j.

Neighbours are never more than one round apart (i finishes round k only after
every neighbour has answered round k), so an agent keeps W for its current and
previous round and buffers offers for the next one. Messages for any other
round, stage or sender raise ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.crypto.packed import PackedScheme
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf.agent import PPDNMFAgent
from cipherfact.protocols.ppdnmf.config import (
    SETUP_ROUND,
    STAGE_KEY,
    STAGE_OFFER,
    STAGE_REPLY,
    reply_noise,
    round_weights,
)


class PairwiseAgent(PPDNMFAgent):
    """One agent running the pairwise exchange (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peers: dict[AgentId, Scheme] = {}
        self._offered = False  # whether our offers for `round` are out
        self._replies: dict[AgentId, Ciphertext] = {}
        self._answered: set[tuple[int, AgentId]] = set()
        self._buffered: list[Envelope] = []
        self._weight_cache: dict[int, dict[AgentId, int]] = {}

    @property
    def keys_ready(self) -> bool:
        return len(self._peers) == len(self.neighbors)

    def _setup_missing(self) -> str:
        return f"public keys missing from {sorted(set(self.neighbors) - set(self._peers))}"

    # -- state machine -----------------------------------------------------

    def start(self) -> list[Envelope]:
        payload = self.scheme.public_bytes()
        return [self._envelope(SETUP_ROUND, STAGE_KEY, j, payload) for j in self.neighbors]

    def step(self, env: Envelope) -> list[Envelope]:
        self._check_routing(env)
        if env.stage == STAGE_KEY:
            return self._on_key(env)
        if env.stage == STAGE_OFFER:
            return self._on_offer(env)
        if env.stage == STAGE_REPLY:
            return self._on_reply(env)
        raise ProtocolError(
            f"agent {self.agent_id}: unknown stage {env.stage!r} from agent {env.sender} "
            f"(expected one of {STAGE_KEY!r}, {STAGE_OFFER!r}, {STAGE_REPLY!r})"
        )

    # -- handlers ------------------------------------------------------------

    def _on_key(self, env: Envelope) -> list[Envelope]:
        if env.round != SETUP_ROUND:
            raise ProtocolError(
                f"agent {self.agent_id}: key from agent {env.sender} for round {env.round}, "
                f"expected round {SETUP_ROUND}"
            )
        if env.sender in self._peers:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate public key from agent {env.sender}"
            )
        try:
            peer = self._load_peer(env.payload)
        except CryptoError as exc:
            raise ProtocolError(
                f"agent {self.agent_id}: bad public key from agent {env.sender}: {exc}"
            ) from exc
        self._peers[env.sender] = peer
        if self.keys_ready and self.auto_advance:
            return self.begin_outer()
        return []

    def _on_offer(self, env: Envelope) -> list[Envelope]:
        r = env.round
        low, high = max(self.round - 1, 0), min(self.round + 1, self.config.total_rounds - 1)
        if not low <= r <= high or (r == self.round - 1 and self._W_prev is None):
            raise ProtocolError(
                f"agent {self.agent_id}: offer for round {r} from agent {env.sender}; "
                f"expected a round in {low}..{high}"
            )
        if (r, env.sender) in self._answered:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate offer for round {r} from agent {env.sender}"
            )
        if env.sender not in self._peers:
            raise ProtocolError(
                f"agent {self.agent_id}: offer from agent {env.sender} before its public key"
            )
        if r == self.round + 1:
            self._buffered.append(env)
            return []
        W_then = self.W if r == self.round else self._W_prev
        if W_then is None:  # unreachable: round k-1 offers need W_prev (checked above)
            raise ProtocolError(f"agent {self.agent_id}: no W kept for round {r}")
        return [self._reply(env, W_then)]

    def _reply(self, env: Envelope, W_then: np.ndarray) -> Envelope:
        """Step 2: Enc_i(-W_i) -> rerand(a_ji (Enc_i(-W_i) + W_j) + eta) under i's key."""
        peer = self._peers[env.sender]
        weight = self._weights(env.round)[env.sender]
        with self.profiler.section("crypto"):
            try:
                offer = peer.from_bytes(env.payload)
            except CryptoError as exc:
                raise ProtocolError(
                    f"agent {self.agent_id}: bad offer for round {env.round} from agent "
                    f"{env.sender}: {exc}"
                ) from exc
            if offer.size != W_then.size:
                raise ProtocolError(
                    f"agent {self.agent_id}: offer for round {env.round} from agent {env.sender} "
                    f"has {offer.size} values, expected {W_then.size}"
                )
            # k_max: the ciphertext's public metadata must not reveal the private weight.
            k_max = self.config.weight_max
            noise = (
                self._noise(env.round, env.sender, peer) if self.config.reply_noise_bits else None
            )
            if isinstance(peer, PackedScheme):  # one pass: c**a (1 + (a W_j + eta) n)
                reply: Ciphertext = peer.scale_shift(
                    offer, weight, W_then.ravel(), noise, k_max=k_max
                )
            else:
                reply = peer.mul_scalar(peer.add_plain(offer, W_then.ravel()), weight, k_max=k_max)
                if noise is not None:
                    reply = peer.add_plain(reply, noise)
            payload = peer.to_bytes(peer.rerandomize(reply))
        self._answered.add((env.round, env.sender))
        return self._envelope(env.round, STAGE_REPLY, env.sender, payload)

    def _noise(self, round_index: int, receiver: AgentId, peer: Scheme) -> np.ndarray:
        """eta as floats that the codec encodes back to exactly the drawn integers."""
        frac_bits = peer.codec.frac_bits  # type: ignore[attr-defined]
        ints = reply_noise(
            self._private_seed,
            round_index,
            receiver,
            self.W.size,
            self.config.noise_amplitude_bits,
        )
        return np.ldexp(ints.astype(np.float64), -frac_bits)

    def _on_reply(self, env: Envelope) -> list[Envelope]:
        if env.round != self.round or not self._offered:
            raise ProtocolError(
                f"agent {self.agent_id}: reply for round {env.round} from agent {env.sender}; "
                f"expected round {self.round}" + ("" if self._offered else " after our offer")
            )
        if env.sender in self._replies:
            raise ProtocolError(
                f"agent {self.agent_id}: duplicate reply for round {env.round} from agent "
                f"{env.sender}"
            )
        with self.profiler.section("crypto"):
            try:
                reply = self.scheme.from_bytes(env.payload)
            except CryptoError as exc:
                raise ProtocolError(
                    f"agent {self.agent_id}: bad reply for round {env.round} from agent "
                    f"{env.sender}: {exc}"
                ) from exc
        if reply.size != self.W.size:
            raise ProtocolError(
                f"agent {self.agent_id}: reply for round {env.round} from agent {env.sender} has "
                f"{reply.size} values, expected {self.W.size}"
            )
        self._replies[env.sender] = reply
        if len(self._replies) < len(self.neighbors):
            return []
        return self._finish_round()

    # -- the round's local work -------------------------------------------------

    def _finish_round(self) -> list[Envelope]:
        """Step 3, then the ADMM update."""
        weights = self._weights(self.round)
        replies = [self._replies[j] for j in self.neighbors]
        ks, k_max = [weights[j] for j in self.neighbors], self.config.weight_max
        with self.profiler.section("crypto"):
            if isinstance(self.scheme, PackedScheme):  # one squaring chain for all replies
                total: Ciphertext = self.scheme.weighted_sum(replies, ks, k_max=k_max)
            else:
                weighted = zip(replies, ks, strict=True)
                total = self.scheme.sum(
                    [self.scheme.mul_scalar(c, k, k_max=k_max) for c, k in weighted]
                )
        return self._decrypt_then(total, self._finish_sum)

    def _finish_sum(self, opened: Callable[[], np.ndarray]) -> list[Envelope]:
        """d_i from the decrypted weighted sum, then the ADMM update."""
        with self.profiler.section("crypto"):
            d = opened().reshape(self.W.shape) * self.config.weight_scale()
        self._replies.clear()
        self._offered = False
        self._answered = {(r, s) for (r, s) in self._answered if r >= self.round}
        return self._advance(d)

    def _open_round(self) -> list[Envelope]:
        return self._send_offers() + self._drain_buffer()

    def _at_boundary(self) -> list[Envelope]:
        # Answer offers for the new round even before a driver begins it.
        return self._drain_buffer()

    def _send_offers(self) -> list[Envelope]:
        """Step 1: one fresh encryption of -W_i per round, the same bytes to every neighbour.

        A fresh encryption is freshly randomized, and the neighbours learn from
        identical bytes only what the protocol already tells them (that i sent
        them the same offer); re-randomizing per neighbour would triple the cost
        of this step for no gain.
        """
        with self.profiler.section("crypto"):
            payload = self.scheme.to_bytes(self.scheme.encrypt(-self.W.ravel()))
        self._offered = True
        return [self._envelope(self.round, STAGE_OFFER, j, payload) for j in self.neighbors]

    def _drain_buffer(self) -> list[Envelope]:
        pending, self._buffered = self._buffered, []
        out: list[Envelope] = []
        for env in pending:
            out += self._on_offer(env)
        return out

    def _weights(self, round_index: int) -> dict[AgentId, int]:
        """This round's private weights (drawn once per round, used for every neighbour)."""
        cached = self._weight_cache.get(round_index)
        if cached is None:
            cached = round_weights(
                self._private_seed, round_index, self.neighbors, self.config.weight_bits
            )
            # neighbours are at most one round apart: keep rounds k-1..k+1 only
            self._weight_cache = {
                r: w for r, w in self._weight_cache.items() if abs(r - round_index) <= 1
            }
            self._weight_cache[round_index] = cached
        return cached
