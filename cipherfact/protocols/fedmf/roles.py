"""fedmf: the FedMF baseline (Chai, Wang, Chen, Yang, arXiv:1906.05108), reproduced faithfully.

The server keeps the item matrix V encrypted under one Paillier key pair that
all users share (distributed to the users out of band; the server holds only
the public key). Per epoch, users take turns in id order; for user u:

1. the server sends Enc(V) (every item);
2. the user decrypts V and, for each rated item j in turn,
   e = r_uj - u . v_j;  u <- u - lr (-2 e v_j + 2 reg_u u);
   g_j = lr (-2 e u + 2 reg_v v_j)   (with the already-updated u);
3. the user encrypts the gradients -- every item ("full", zero for unrated
   items, so the server cannot tell which were rated) or rated items only
   ("part") -- and uploads them; the server sets Enc(v_j) <- Enc(v_j) - Enc(g_j).

Checkpoints (``checkpoint_state``/``restore_state``, at an epoch boundary)
hold numbers only, never a key: a resumed run makes a fresh key pair, so the
server's Enc(V) (under the old key) is worthless and not kept. The last user
in turn order keeps V instead -- every user decrypts V each epoch, so this is
no more than a user knows -- computed from its last turn exactly as the
server's homomorphic update leaves it (fixed-point integers, ``_v_after``);
on resume it sends Enc(V) under the new key (stage ``restore``) and the
server continues from it, so the factors are bit-identical to an
uninterrupted run's.

Items are stored in blocks: with ``naive`` packing off, one value per
ciphertext (as the original, which used phe); with this project's packed
Paillier a block holds as many items as one packed integer has room for, and
"part" uploads the blocks that contain a rated item.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.codec import FixedPointCodec
from cipherfact.crypto.errors import CryptoError
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.protocols.csr_fhe_mf.layout import decode_parts, encode_parts

__all__ = [
    "SERVER_ID",
    "FedMFConfig",
    "FedMFServer",
    "FedMFUser",
    "fedmf_codec",
    "fedmf_reference",
    "last_user",
    "user_update",
]

SERVER_ID: AgentId = 0
SETUP_ROUND = -1
STAGE_KEY = "key"
STAGE_ITEMS = "items"
STAGE_GRADS = "grads"
STAGE_RESTORE = "restore"  # on resume only: the last user's Enc(V) under the fresh key
#: stages that go one user at a time (the server waits for each turn): network
#: emulation charges them per user, not as one parallel wave
TURN_STAGES = (STAGE_ITEMS, STAGE_GRADS)
MODES = ("full", "part")
_INDEX = struct.Struct(">I")


@dataclass(frozen=True)
class FedMFConfig:
    """Public parameters; defaults are the original's (Chai et al.) except dim and epochs."""

    job_id: str
    n_users: int
    n_items: int
    n_factors: int = 4
    epochs: int = 5
    mode: str = "full"
    lr: float = 1e-3
    reg_u: float = 1e-4
    reg_v: float = 1e-4
    init_value: float = 0.01
    rating_offset: float = 0.0
    frac_bits: int = 20
    int_bits: int = 8

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_factors", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not (self.reg_u >= 0 and self.reg_v >= 0):
            raise ValueError(f"reg_u and reg_v must be >= 0, got {self.reg_u}, {self.reg_v}")

    @property
    def updates_per_item(self) -> int:
        """Most encrypted gradients summed into one stored item over the run."""
        return self.epochs * self.n_users


def user_id(u: int) -> AgentId:
    """Agent id of user index ``u`` (the server is 0)."""
    return u + 1


def last_user(config: FedMFConfig) -> int:
    """The user whose turn ends an epoch: it keeps V for checkpoints."""
    return config.n_users - 1


def _check_epoch(state: Mapping[str, Any], config: FedMFConfig, who: str) -> int:
    epoch = int(state["epoch"])
    if not 1 <= epoch <= config.epochs:
        raise ValueError(f"{who}: checkpoint epoch {epoch} is outside 1..{config.epochs}")
    return epoch


def fedmf_codec(config: FedMFConfig) -> FixedPointCodec:
    """Fixed point sized for the server's running sums: 1 + epochs * users terms per slot."""
    terms = min(1 + config.updates_per_item, 65535)
    if 1 + config.updates_per_item > 65535:
        raise ValueError(
            f"epochs * n_users = {config.updates_per_item} exceeds the codec's 65534 additions"
        )
    return FixedPointCodec(
        frac_bits=config.frac_bits, int_bits=config.int_bits, scalar_bits=1, max_terms=terms
    )


def user_update(
    u_vec: np.ndarray,
    V: np.ndarray,
    items: np.ndarray,
    values: np.ndarray,
    config: FedMFConfig,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """FedMF's local step: sequential over the user's rated items (see module docstring)."""
    u = u_vec.copy()
    grads: dict[int, np.ndarray] = {}
    for j, r in zip(items.tolist(), values.tolist(), strict=True):
        e = (r - config.rating_offset) - float(u @ V[j])
        u = u - config.lr * (-2.0 * e * V[j] + 2.0 * config.reg_u * u)
        grads[j] = config.lr * (-2.0 * e * u + 2.0 * config.reg_v * V[j])
    return u, grads


class _Blocks:
    """Which items each stored ciphertext holds."""

    def __init__(self, config: FedMFConfig, slots: int) -> None:
        self.per = max(1, slots // config.n_factors)
        self.count = -(-config.n_items // self.per)
        self.n_items, self.F = config.n_items, config.n_factors

    def items(self, b: int) -> range:
        return range(b * self.per, min((b + 1) * self.per, self.n_items))

    def size(self, b: int) -> int:
        return len(self.items(b)) * self.F


class FedMFServer(StateMachine):
    """The server: Enc(V) in blocks, updated by the users' encrypted gradients."""

    def __init__(
        self,
        config: FedMFConfig,
        load_public: object,
        profiler: Profiler | None = None,
    ) -> None:
        if not callable(load_public):
            raise TypeError("load_public must be callable(bytes) -> Scheme")
        self.agent_id = SERVER_ID
        self.config = config
        self.profiler = profiler or Profiler()
        self._load_public = load_public
        self.scheme: Scheme | None = None
        self.blocks: _Blocks | None = None
        self.encrypted_v: list[Ciphertext] = []
        self.epoch = 0
        self._turn: int | None = None  # user index whose gradients we wait for
        #: resumed: Enc(V) comes from the last user (stage ``restore``), not from init
        self._restoring = False
        self._pending: list[Envelope] = []  # a restore that came before the key

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def at_boundary(self) -> bool:
        return (
            self.scheme is not None and not self._restoring and self._turn is None and not self.done
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """The epoch only: Enc(V) is under a key a resumed run will not have (the
        last user keeps V; see the module doc)."""
        if not (self.at_boundary or self.done):
            raise ProtocolError(
                f"server: checkpoints are taken between epochs (epoch {self.epoch})"
            )
        return {"role": "server", "epoch": self.epoch}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Resume after ``state["epoch"]`` epochs (before ``start``): Enc(V) is then
        taken from the last user's ``restore`` message instead of the initial value."""
        if str(state.get("role")) != "server" or self.scheme is not None:
            raise ValueError("server: not a server checkpoint, or the run has started")
        self.epoch = _check_epoch(state, self.config, "server")
        self._restoring = True

    def start(self) -> list[Envelope]:
        return []

    def begin_outer(self) -> list[Envelope]:
        if not self.at_boundary:
            raise ProtocolError(f"server: cannot begin epoch {self.epoch}")
        return self._send_items(0)

    def step(self, env: Envelope) -> list[Envelope]:
        cfg = self.config
        if env.job_id != cfg.job_id or env.receiver != self.agent_id:
            raise ProtocolError(
                f"server: envelope from agent {env.sender} for job {env.job_id!r} / agent "
                f"{env.receiver}, expected job {cfg.job_id!r} / agent {self.agent_id}"
            )
        if not 1 <= env.sender <= cfg.n_users:
            raise ProtocolError(f"server: message from unknown agent {env.sender}")
        if env.stage == STAGE_KEY:
            return self._on_key(env)
        if env.stage == STAGE_GRADS:
            return self._on_grads(env)
        if env.stage == STAGE_RESTORE and self._restoring:
            if self.scheme is None:
                self._pending.append(env)
                return []
            return self._on_restore(env)
        raise ProtocolError(
            f"server: unexpected stage {env.stage!r} from agent {env.sender} "
            f"(expected {STAGE_KEY!r} or {STAGE_GRADS!r})"
        )

    def _on_key(self, env: Envelope) -> list[Envelope]:
        if self.scheme is not None:
            raise ProtocolError(f"server: duplicate public key from agent {env.sender}")
        try:
            scheme = self._load_public(env.payload)
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(f"server: bad public key from agent {env.sender}: {exc}") from exc
        self.scheme = scheme
        self.blocks = _Blocks(self.config, scheme.layout.slots)
        if self._restoring:
            pending, self._pending = self._pending, []
            return [out for p in pending for out in self._on_restore(p)]
        with self.profiler.section("crypto"):
            self.encrypted_v = [
                scheme.encrypt(np.full(self.blocks.size(b), self.config.init_value))
                for b in range(self.blocks.count)
            ]
        return []

    def _on_restore(self, env: Envelope) -> list[Envelope]:
        """Enc(V) of a resumed run, from the last user, under the fresh key."""
        who = f"server: restored items from agent {env.sender}"
        scheme, blocks = self.scheme, self.blocks
        if scheme is None or blocks is None:  # unreachable: buffered until the key
            raise ProtocolError(f"{who}: no public key")
        if env.sender != user_id(last_user(self.config)) or env.round != SETUP_ROUND:
            raise ProtocolError(
                f"{who} for round {env.round}: expected them from agent "
                f"{user_id(last_user(self.config))} in the setup round"
            )
        try:
            parts = decode_parts(env.payload, who, blocks.count)
            cts = [scheme.from_bytes(blob) for blob in parts]
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(f"{who}: {exc}") from exc
        for b, ct in enumerate(cts):
            if ct.size != blocks.size(b):
                raise ProtocolError(f"{who}: block {b} holds {ct.size} values")
        self.encrypted_v = cts
        self._restoring = False
        return []

    def _send_items(self, u: int) -> list[Envelope]:
        if self.scheme is None:  # unreachable: at_boundary checked
            raise ProtocolError("server: no public key")
        with self.profiler.section("crypto"):
            payload = encode_parts([self.scheme.to_bytes(c) for c in self.encrypted_v])
        self._turn = u
        return [Envelope(self.config.job_id, self.epoch, STAGE_ITEMS, 0, user_id(u), payload)]

    def _on_grads(self, env: Envelope) -> list[Envelope]:
        who = f"server: gradients for round {env.round} from agent {env.sender}"
        scheme, blocks = self.scheme, self.blocks
        if self._turn is None or env.sender != user_id(self._turn) or env.round != self.epoch:
            raise ProtocolError(
                f"{who}: unexpected (waiting for user {self._turn}, epoch {self.epoch})"
            )
        if scheme is None or blocks is None:  # unreachable: _turn set after the key
            raise ProtocolError(f"{who}: no public key")
        try:
            parts = decode_parts(env.payload, who)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        if not parts or len(parts[0]) % _INDEX.size:
            raise ProtocolError(f"{who}: missing block index list")
        index = [v[0] for v in _INDEX.iter_unpack(parts[0])]
        if len(index) != len(parts) - 1 or len(set(index)) != len(index):
            raise ProtocolError(f"{who}: {len(index)} block indices for {len(parts) - 1} blocks")
        if self.config.mode == "full" and sorted(index) != list(range(blocks.count)):
            raise ProtocolError(f"{who}: mode 'full' needs every one of {blocks.count} blocks")
        with self.profiler.section("crypto"):
            for b, blob in zip(index, parts[1:], strict=True):
                if b >= blocks.count:
                    raise ProtocolError(f"{who}: block {b} out of range 0..{blocks.count - 1}")
                try:
                    g = scheme.from_bytes(blob)
                except (CryptoError, ValueError, TypeError) as exc:
                    raise ProtocolError(f"{who}: bad ciphertext for block {b}: {exc}") from exc
                if g.size != blocks.size(b):
                    raise ProtocolError(
                        f"{who}: block {b} holds {g.size} values, expected {blocks.size(b)}"
                    )
                try:
                    self.encrypted_v[b] = scheme.add(self.encrypted_v[b], scheme.mul_scalar(g, -1))
                except (CryptoError, ValueError) as exc:
                    raise ProtocolError(f"{who}: cannot apply block {b}: {exc}") from exc
        nxt = self._turn + 1
        if nxt < self.config.n_users:
            return self._send_items(nxt)
        self._turn = None
        self.epoch += 1
        return []


class FedMFUser(StateMachine):
    """A user: holds u (private), the shared key pair, and its ratings."""

    def __init__(
        self,
        u: int,
        items: np.ndarray,
        values: np.ndarray,
        config: FedMFConfig,
        scheme: Scheme,
        *,
        send_key: bool = False,
        profiler: Profiler | None = None,
    ) -> None:
        if not scheme.has_secret_key:
            raise ValueError(f"FedMF users share the secret key; user {u} got {scheme!r}")
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 1 or items.size != np.asarray(values).size or items.size == 0:
            raise ValueError(f"user {u}: items and values must be equal-length, non-empty")
        if items.min() < 0 or items.max() >= config.n_items:
            raise ValueError(f"user {u}: item indices must be in 0..{config.n_items - 1}")
        order = np.argsort(items, kind="stable")
        self.u = u
        self.agent_id = user_id(u)
        self.config = config
        self.scheme = scheme
        self.profiler = profiler or Profiler()
        self._items = items[order]
        self._values = np.asarray(values, dtype=np.float64)[order]
        self._send_key = send_key
        self.blocks = _Blocks(config, scheme.layout.slots)  # type: ignore[attr-defined]
        self.vector = np.full(config.n_factors, config.init_value)
        self.rounds_done = 0
        #: the last user's latest turn (V decrypted, gradients sent): V after the
        #: epoch, for checkpoints; restored V to send on resume
        self._last_turn: tuple[np.ndarray, np.ndarray] | None = None
        self._restore_v: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.rounds_done >= self.config.epochs

    @property
    def at_boundary(self) -> bool:
        return True

    def begin_outer(self) -> list[Envelope]:
        return []

    def _v_after(self) -> np.ndarray:
        """V as the server holds it after this (last) user's turn: Enc(V) - Enc(G)
        decrypts to the integers encode(V) - encode(G), so this is exact."""
        if self._last_turn is None:
            raise ProtocolError(f"user {self.u}: no turn taken yet, V is unknown")
        V, G = self._last_turn
        codec = fedmf_codec(self.config)
        ints = codec.encode(V.ravel(), "V") - codec.encode(G.ravel(), "gradients")
        return codec.decode(ints).reshape(V.shape)

    def checkpoint_state(self) -> dict[str, Any]:
        """u and the epoch count; the last user also V (see the module doc). Never
        the key."""
        state: dict[str, Any] = {
            "role": "user",
            "vector": self.vector.copy(),
            "epoch": self.rounds_done,
        }
        if self.u == last_user(self.config):
            state["V"] = self._v_after() if self._restore_v is None else self._restore_v
        return state

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Resume after ``state["epoch"]`` epochs (before ``start``)."""
        who = f"user {self.u}"
        if str(state.get("role")) != "user":
            raise ValueError(f"{who}: not a user checkpoint")
        vector = np.asarray(state["vector"], dtype=np.float64)
        if vector.shape != self.vector.shape:
            raise ValueError(f"{who}: checkpoint vector has shape {vector.shape}")
        restore_v = None
        if self.u == last_user(self.config):
            restore_v = np.asarray(state["V"], dtype=np.float64)
            if restore_v.shape != (self.config.n_items, self.config.n_factors):
                raise ValueError(f"{who}: checkpoint V has shape {restore_v.shape}")
        self.rounds_done = _check_epoch(state, self.config, who)
        self.vector = vector.copy()
        self._restore_v = restore_v

    def start(self) -> list[Envelope]:
        out = []
        if self._send_key:
            payload = self.scheme.public_bytes()
            out.append(
                Envelope(self.config.job_id, SETUP_ROUND, STAGE_KEY, self.agent_id, 0, payload)
            )
        if self._restore_v is not None:  # resumed: Enc(V) under the fresh key
            with self.profiler.section("crypto"):
                parts = [
                    self.scheme.to_bytes(
                        self.scheme.encrypt(self._restore_v[r.start : r.stop].ravel())
                    )
                    for r in map(self.blocks.items, range(self.blocks.count))
                ]
            out.append(
                Envelope(
                    self.config.job_id,
                    SETUP_ROUND,
                    STAGE_RESTORE,
                    self.agent_id,
                    SERVER_ID,
                    encode_parts(parts),
                )
            )
        return out

    def step(self, env: Envelope) -> list[Envelope]:
        who = f"user {self.u}: {env.stage!r} for round {env.round} from agent {env.sender}"
        if env.job_id != self.config.job_id or env.receiver != self.agent_id:
            raise ProtocolError(f"{who}: wrong job {env.job_id!r} or receiver {env.receiver}")
        if env.sender != SERVER_ID or env.stage != STAGE_ITEMS:
            raise ProtocolError(f"{who}: expected {STAGE_ITEMS!r} from the server (agent 0)")
        if env.round != self.rounds_done:
            raise ProtocolError(f"{who}: expected round {self.rounds_done}")
        blocks, F = self.blocks, self.config.n_factors
        try:
            parts = decode_parts(env.payload, who, blocks.count)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        V = np.empty((self.config.n_items, F))
        with self.profiler.section("crypto"):
            for b, blob in enumerate(parts):
                try:
                    c = self.scheme.from_bytes(blob)
                    values = self.scheme.decrypt(c)
                except (CryptoError, ValueError, TypeError) as exc:
                    raise ProtocolError(f"{who}: bad ciphertext for block {b}: {exc}") from exc
                if values.size != blocks.size(b):
                    raise ProtocolError(f"{who}: block {b} holds {values.size} values")
                rng = blocks.items(b)
                V[rng.start : rng.stop] = values.reshape(-1, F)
        with self.profiler.section("compute"):
            self.vector, grads = user_update(self.vector, V, self._items, self._values, self.config)
            G = np.zeros_like(V)
            for j, g in grads.items():
                G[j] = g
            if self.config.mode == "full":
                send = list(range(blocks.count))
            else:
                send = sorted({int(j) // blocks.per for j in grads})
        with self.profiler.section("crypto"):
            cts = []
            for b in send:
                rng = blocks.items(b)
                cts.append(
                    self.scheme.to_bytes(self.scheme.encrypt(G[rng.start : rng.stop].ravel()))
                )
        index = b"".join(_INDEX.pack(b) for b in send)
        self.rounds_done += 1
        if self.u == last_user(self.config):
            self._last_turn, self._restore_v = (V, G), None
        payload = encode_parts([index, *cts])
        return [Envelope(self.config.job_id, env.round, STAGE_GRADS, self.agent_id, 0, payload)]


def fedmf_reference(
    users: np.ndarray, items: np.ndarray, values: np.ndarray, config: FedMFConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """FedMF in float64 without encryption: (U, V) after each epoch."""
    U = np.full((config.n_users, config.n_factors), config.init_value)
    V = np.full((config.n_items, config.n_factors), config.init_value)
    out = []
    for _ in range(config.epochs):
        for u in range(config.n_users):
            mask = users == u
            order = np.argsort(items[mask], kind="stable")
            U[u], grads = user_update(U[u], V, items[mask][order], values[mask][order], config)
            for j, g in grads.items():
                V[j] = V[j] - g
        out.append((U.copy(), V.copy()))
    return out
