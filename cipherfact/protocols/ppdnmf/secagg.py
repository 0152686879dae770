"""ppdnmf's secure-aggregation exchange: each agent learns only the sum of its
neighbours' iterates (after Bonawitz et al. 2017, one aggregation per hub).

Setup (round -1):

1. "key": every agent sends each neighbour a fresh X25519 public key (and,
   with ``crypto.scheme = "paillier"``, its Paillier public key);
2. "peers": hub i relays to each neighbour j the X25519 keys of its other
   neighbours; j derives, for every other member k of N_i, the secret
   s^i_jk = HKDF(X25519(j, k), job | i | {j, k}). The relay is trusted to be
   honest-but-curious: it forwards the keys it received.

Round t ("share"): neighbour j sends hub i
    W_j + m^i_j(t),  m^i_j(t) = sum_{k in N_i \\ {j}} sign(j, k) PRG(s^i_jk, t)
in the ring of ``cipherfact.crypto.masking`` (Z_n under i's Paillier key, or
Z_{2^64} unencrypted); the masks cancel in the sum over N_i, so i obtains
exactly S_i = sum_{j in N_i} W_j and computes d_i = c (S_i - deg_i W_i) itself
with the public penalty c (rho_ij = c on every edge).

What i learns: S_i every round, nothing about any single W_j (each message
alone is uniform in the ring: ``tests/privacy/test_secagg_attacks.py``).
Coalitions: i together with all of N_i but j learns W_j (they know every mask
of j's message); any smaller coalition of i's neighbours learns nothing more
than the sum. Every agent needs at least 2 neighbours.

One message per directed edge per round, no offer; neighbours are never more
than one round apart (j's round t+1 share needs i's round t share), so an
agent buffers shares for the next round only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.errors import CryptoError, DecodeError
from cipherfact.crypto.masking import (
    ClearMaskedSum,
    MaskAgreement,
    MaskedSum,
    PaillierMaskedSum,
    combined_mask,
    pair_context,
)
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.ppdnmf.agent import PPDNMFAgent
from cipherfact.protocols.ppdnmf.config import (
    SETUP_ROUND,
    STAGE_KEY,
    STAGE_PEERS,
    STAGE_SHARE,
)

_KEY_HEAD = struct.Struct(">BB32s")  # version, encrypted flag, X25519 public key
_PEER = struct.Struct(">I32s")
_PEERS_HEAD = struct.Struct(">BH")  # version, count


def encode_key_message(dh_public: bytes, scheme_public: bytes | None) -> bytes:
    """``key`` payload: the mask key, then the Paillier public key if encrypted."""
    return _KEY_HEAD.pack(1, scheme_public is not None, dh_public) + (scheme_public or b"")


def decode_key_message(data: bytes) -> tuple[bytes, bytes | None]:
    data = bytes(data)
    if len(data) < _KEY_HEAD.size:
        raise DecodeError(f"secagg key message truncated: {len(data)} bytes")
    version, encrypted, dh = _KEY_HEAD.unpack_from(data)
    if version != 1 or encrypted not in (0, 1):
        raise DecodeError(f"secagg key message version {version}/flag {encrypted} unsupported")
    rest = data[_KEY_HEAD.size :]
    if not encrypted and rest:
        raise DecodeError("secagg key message carries a public key it does not announce")
    return dh, (rest if encrypted else None)


def encode_peers_message(peers: list[tuple[AgentId, bytes]]) -> bytes:
    return _PEERS_HEAD.pack(1, len(peers)) + b"".join(_PEER.pack(k, key) for k, key in peers)


def decode_peers_message(data: bytes) -> list[tuple[AgentId, bytes]]:
    data = bytes(data)
    if len(data) < _PEERS_HEAD.size:
        raise DecodeError(f"secagg peers message truncated: {len(data)} bytes")
    version, count = _PEERS_HEAD.unpack_from(data)
    if version != 1 or len(data) != _PEERS_HEAD.size + count * _PEER.size:
        raise DecodeError(f"secagg peers message: version {version}, {len(data)} bytes for {count}")
    out = [_PEER.unpack_from(data, _PEERS_HEAD.size + i * _PEER.size) for i in range(count)]
    ids = [k for k, _ in out]
    if len(set(ids)) != len(ids):
        raise DecodeError(f"secagg peers message lists an agent twice: {sorted(ids)}")
    return [(int(k), bytes(key)) for k, key in out]


class SecAggAgent(PPDNMFAgent):
    """One agent running the secure-aggregation exchange (module docstring)."""

    min_neighbors = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encrypted = isinstance(self.scheme, PaillierScheme)
        self._agreement = MaskAgreement()
        self._own_sum: MaskedSum = (
            PaillierMaskedSum(self.scheme)  # type: ignore[arg-type]
            if self._encrypted
            else ClearMaskedSum(self.scheme.codec)  # type: ignore[attr-defined]
        )
        self._member_keys: dict[AgentId, bytes] = {}  # our neighbours' mask keys (as hub)
        self._sealers: dict[AgentId, MaskedSum] = {}  # how to seal for each hub
        self._pair_seeds: dict[AgentId, list[tuple[AgentId, bytes]]] = {}  # hub -> (k, s^hub_jk)
        self._shares: dict[int, dict[AgentId, bytes]] = {}
        self._sent_round = -1  # the last round whose shares are out
        self._opening = False  # the round's sum is being decrypted (maybe in a host batch)

    # -- setup -------------------------------------------------------------

    @property
    def keys_ready(self) -> bool:
        n = len(self.neighbors)
        return len(self._pair_seeds) == n and len(self._sealers) == n

    def _setup_missing(self) -> str:
        keys = sorted(set(self.neighbors) - set(self._member_keys))
        relays = sorted(set(self.neighbors) - set(self._pair_seeds))
        return f"keys missing from {keys}, peer lists missing from {relays}"

    def start(self) -> list[Envelope]:
        own = self.scheme.public_bytes() if self._encrypted else None
        payload = encode_key_message(self._agreement.public_bytes(), own)
        return [self._envelope(SETUP_ROUND, STAGE_KEY, j, payload) for j in self.neighbors]

    def step(self, env: Envelope) -> list[Envelope]:
        self._check_routing(env)
        if env.stage == STAGE_KEY:
            return self._on_key(env)
        if env.stage == STAGE_PEERS:
            return self._on_peers(env)
        if env.stage == STAGE_SHARE:
            return self._on_share(env)
        raise ProtocolError(
            f"agent {self.agent_id}: unknown stage {env.stage!r} from agent {env.sender} "
            f"(expected one of {STAGE_KEY!r}, {STAGE_PEERS!r}, {STAGE_SHARE!r})"
        )

    def _setup_error(self, env: Envelope, what: str) -> ProtocolError:
        return ProtocolError(f"agent {self.agent_id}: {what} from agent {env.sender}")

    def _on_key(self, env: Envelope) -> list[Envelope]:
        if env.round != SETUP_ROUND:
            raise self._setup_error(env, f"key for round {env.round}, expected {SETUP_ROUND}")
        if env.sender in self._member_keys:
            raise self._setup_error(env, "duplicate key")
        try:
            dh, scheme_bytes = decode_key_message(env.payload)
            if (scheme_bytes is not None) != self._encrypted:
                raise DecodeError(
                    "the key message's encryption does not match this job's crypto.scheme"
                )
            sealer: MaskedSum
            if scheme_bytes is None:
                sealer = self._own_sum  # same codec, no key: masks alone
            else:
                peer = self._load_peer(scheme_bytes)
                if not isinstance(peer, PaillierScheme):
                    raise DecodeError(f"expected a Paillier public key, got {peer!r}")
                sealer = PaillierMaskedSum(peer)
        except CryptoError as exc:
            raise self._setup_error(env, f"bad key: {exc}") from exc
        self._member_keys[env.sender] = dh
        self._sealers[env.sender] = sealer
        if len(self._member_keys) < len(self.neighbors):
            return []
        # Hub role: relay each member's view of the other members' mask keys.
        out = []
        for j in self.neighbors:
            others = [(k, self._member_keys[k]) for k in self.neighbors if k != j]
            out.append(self._envelope(SETUP_ROUND, STAGE_PEERS, j, encode_peers_message(others)))
        return out + self._maybe_begin()

    def _on_peers(self, env: Envelope) -> list[Envelope]:
        hub = env.sender
        if env.round != SETUP_ROUND:
            raise self._setup_error(env, f"peer list for round {env.round}, expected {SETUP_ROUND}")
        if hub in self._pair_seeds:
            raise self._setup_error(env, "duplicate peer list")
        try:
            members = decode_peers_message(env.payload)
            if not members or any(k in (self.agent_id, hub) for k, _ in members):
                raise DecodeError(
                    f"peer list {[k for k, _ in members]} must name the hub's other members"
                )
            job = self.config.job_id
            seeds = [
                (k, self._agreement.shared_seed(key, pair_context(job, hub, self.agent_id, k)))
                for k, key in members
            ]
        except CryptoError as exc:
            raise self._setup_error(env, f"bad peer list: {exc}") from exc
        self._pair_seeds[hub] = seeds
        return self._maybe_begin()

    def _maybe_begin(self) -> list[Envelope]:
        if self.keys_ready and self.auto_advance:
            return self.begin_outer()
        return []

    # -- rounds ------------------------------------------------------------

    def _on_share(self, env: Envelope) -> list[Envelope]:
        # A neighbour whose own setup finished first may already send round 0: kept
        # until ours is done too (its payload is checked under our own key now).
        r = env.round
        if r not in (self.round, self.round + 1) or r >= self.config.total_rounds:
            raise self._setup_error(
                env, f"share for round {r}; expected round {self.round} or {self.round + 1}"
            )
        got = self._shares.setdefault(r, {})
        if env.sender in got:
            raise self._setup_error(env, f"duplicate share for round {r}")
        with self.profiler.section("crypto"):
            try:
                self._own_sum.check(env.payload, self.W.size)
            except CryptoError as exc:
                raise self._setup_error(env, f"bad share for round {r}: {exc}") from exc
        got[env.sender] = bytes(env.payload)
        return self._maybe_finish()

    def _open_round(self) -> list[Envelope]:
        """Send this round's shares (W plus masks, one per hub), then finish if all are in."""
        out = []
        flat = self.W.ravel()
        with self.profiler.section("crypto"):
            for hub in self.neighbors:
                sealer = self._sealers[hub]
                mask = combined_mask(
                    self.agent_id,
                    self._pair_seeds[hub],
                    self.round,
                    sealer.mask_count(flat.size),
                    sealer.modulus,
                )
                out.append(self._envelope(self.round, STAGE_SHARE, hub, sealer.seal(flat, mask)))
        self._sent_round = self.round
        return out + self._maybe_finish()

    def _maybe_finish(self) -> list[Envelope]:
        got = self._shares.get(self.round, {})
        if self._sent_round != self.round or len(got) < len(self.neighbors) or self._opening:
            return []
        payloads = [got[j] for j in self.neighbors]
        sealed = isinstance(self._own_sum, PaillierMaskedSum)
        with self.profiler.section("crypto"):
            try:
                if isinstance(self._own_sum, PaillierMaskedSum):
                    ct = self._own_sum.sealed_sum(payloads, self.W.size)
                else:
                    total = self._own_sum.open_sum(payloads, self.W.size)
            except CryptoError as exc:
                raise self._sum_error(exc) from exc
        if sealed:
            self._opening = True  # the round's shares stay until then, to refuse duplicates
            return self._decrypt_then(ct, self._finish_sum)
        return self._finish_sum(lambda: total)

    def _sum_error(self, exc: CryptoError) -> ProtocolError:
        return ProtocolError(
            f"agent {self.agent_id}: the shares of round {self.round} do not sum "
            f"(a neighbour's masks do not cancel): {exc}"
        )

    def _finish_sum(self, opened: Callable[[], np.ndarray]) -> list[Envelope]:
        """d_i from the opened sum S_i, then the ADMM update."""
        with self.profiler.section("crypto"):
            try:
                total = opened()
            except CryptoError as exc:
                raise self._sum_error(exc) from exc
        self._opening = False
        del self._shares[self.round]
        with self.profiler.section("compute"):
            S = total.reshape(self.W.shape)
            d = self.config.penalty * (S - len(self.neighbors) * self.W)
        return self._advance(d)

    def restore_state(self, state: Any) -> None:
        super().restore_state(state)
        self._sent_round = self.round - 1
