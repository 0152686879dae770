"""csr_fhe_mf: CKKS matrix factorization on CSR ratings with users, RS and CSP.

Roles (Kim et al. 2016; Chowdhury, Bauer & Zhou 2025), RS and CSP not colluding:

* users encrypt their rating values once, in the per-rating slot layout
  (``layout.py``), upload them to the recommender server RS and may
  go offline; item indices travel in the clear (the CSR structure is public);
* RS trains on ciphertexts only: per epoch and chunk of slots,
  ne = sum_f U_f * V_f - r (depth 1; with ``hide_pattern`` ne = w * pred - w r,
  depth 2), gU_f = ne * V_f, gV_f = ne * U_f (depth 2, or 3);
* CSP holds the CKKS secret key. Once per epoch RS adds fresh uniform masks
  of ``mask_bits`` statistical bits to the gradients and sends them; the CSP
  decrypts masked values only, applies the linear steps (segment sums along
  the CSR structure, the gradient step, re-expansion to the slot layout) to
  its *masked* factors A = (U, V) + M, and returns fresh encryptions. RS
  applies the same linear step to its masks M and subtracts them
  homomorphically. The round trip replaces bootstrapping: every epoch starts
  from depth-0 ciphertexts.

Keys: the CSP sends RS its evaluation context (public + relinearization
keys) and every user the public encryption key alone. Wire (issue 18): the
CSP's refreshed factors go out as seeded symmetric encryptions, and users drop
the primes RS will not use before uploading (``CsrFheMFConfig.upload_depths``).

Checkpoints (``checkpoint_state``/``restore_state``, at an epoch boundary) hold
numbers only, each party's own, never a key: the CSP its masked factors A, RS
its masks M, users nothing (they upload again). A resumed run makes a fresh
CKKS key and redoes the setup; when the layout arrives, the CSP sends
Enc(A) in the slot layout (stage ``resume``, the payload of an epoch's
refresh) and RS subtracts its masks as after any epoch, so training goes on
from the same (U, V), to CKKS noise.

The initial factors are public (drawn from ``init_seed``), so the CSP's
masked factors start at A = (U0, V0) and after that only ever move by masked
gradients. Work is proportional to the number of stored slots, never users x
items.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.ckks import CkksScheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.protocols.csr_fhe_mf.layout import (
    PlannedParams,
    SlotLayout,
    decode_parts,
    encode_parts,
    linear_step,
    plan_csr_params,
    secure_uniform,
)

__all__ = [
    "CSP_ID",
    "RS_ID",
    "CryptoServiceProvider",
    "CsrFheMFConfig",
    "CsrUser",
    "RecommenderServer",
    "run_twin",
    "twin_slots",
    "user_entries",
    "user_id",
]

RS_ID: AgentId = 0
CSP_ID: AgentId = 1
SETUP_ROUND = -1
STAGE_CONTEXT = "context"
STAGE_STRUCTURE = "structure"
STAGE_LAYOUT = "layout"
STAGE_RATINGS = "ratings"
STAGE_MASKED = "masked"
STAGE_REFRESHED = "refreshed"
STAGE_RESUME = "resume"  # on resume only: the CSP's Enc(A), as a refresh

PublicLoader = Callable[[bytes], Scheme]
_LAYOUT_MSG = struct.Struct(">QQQ")
_CHUNK_REF = struct.Struct(">I")


def user_id(u: int) -> AgentId:
    """Agent id of user index ``u`` (RS is 0, CSP is 1)."""
    return u + 2


@dataclass(frozen=True)
class CsrFheMFConfig:
    """Public parameters of a csr_fhe_mf job; every party holds the same copy."""

    job_id: str
    n_users: int
    n_items: int
    n_factors: int = 4
    epochs: int = 20
    lr: float = 1.0
    reg: float = 0.05
    init_scale: float = 0.3
    init_seed: int = 0
    rating_offset: float = 3.0
    mask_bits: int = 20
    value_bound: float = 16.0
    factor_mask_bits: int = 16
    factor_bound: float = 4.0
    max_error: float = 1e-2
    ckks_params: str = "auto"
    hide_pattern: bool = False
    pad_to: int = 0
    #: 0: each item's gradient sum is divided by its number of slots (the
    #: per-item Jacobi step of the clear CSR structure). > 0: by this public
    #: constant instead. ``hide_pattern`` needs > 0: a per-item count would either
    #: count the secret dummies (padding would change the result) or reveal how
    #: many of an item's shown entries are real (``_divisors``).
    item_norm: float = 0.0
    #: wire levers (issue 18): the CSP sends its refreshed factors as seeded
    #: symmetric encryptions (half the bytes); users send each uploaded vector
    #: with the primes dropped that RS never uses (it is first added at depth 1,
    #: or 2). Neither changes a value; both only change the bytes.
    seeded_refresh: bool = True
    mod_switch_uploads: bool = True

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_factors", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.reg >= 0:
            raise ValueError(f"reg must be >= 0, got {self.reg!r}")
        if self.hide_pattern and not 1 <= self.pad_to <= self.n_items:
            raise ValueError(
                f"pad_to must be in [1, n_items={self.n_items}] with hide_pattern, "
                f"got {self.pad_to}"
            )
        if not (np.isfinite(self.item_norm) and self.item_norm >= 0):
            raise ValueError(f"item_norm must be finite and >= 0, got {self.item_norm!r}")
        if self.hide_pattern and not self.item_norm > 0:
            raise ValueError(
                "hide_pattern needs item_norm > 0 (a public divisor of every item's gradient "
                "sum): per-item slot counts include the secret dummies, and real counts "
                f"would reveal which shown entries are real; got item_norm={self.item_norm!r}"
            )
        self.plan()  # refuse impossible CKKS/mask combinations up front

    @property
    def depth(self) -> int:
        """Multiplicative depth of one epoch: 2, or 3 with the encrypted weights."""
        return 3 if self.hide_pattern else 2

    @property
    def upload_depths(self) -> tuple[int, ...]:
        """Depth at which each vector a user uploads is sent (``user_entries`` order).

        -r, or with ``hide_pattern`` -w*r, w, -w*r/n_u, w/n_u. RS first uses -w*r
        in ne = pred + (-w*r), after one product (two with the weights), and w in
        w * pred, after one; a prime it would never use is not sent
        (``mod_switch_uploads``).
        """
        depths = (2, 1, 2, 1) if self.hide_pattern else (1,)
        return depths if self.mod_switch_uploads else (0,) * len(depths)

    def plan(self) -> PlannedParams:
        return plan_csr_params(
            self.depth,
            self.value_bound,
            self.mask_bits,
            self.ckks_params,
            self.max_error,
            self.factor_bound,
            self.factor_mask_bits,
        )

    def initial_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Public starting U, V (data-independent, from ``init_seed``)."""
        rng = np.random.default_rng([self.init_seed, 0x4D46])
        U = self.init_scale * rng.standard_normal((self.n_users, self.n_factors))
        V = self.init_scale * rng.standard_normal((self.n_items, self.n_factors))
        return U, V


def _divisors(
    layout: SlotLayout, config: CsrFheMFConfig
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """What each user's and item's gradient sum is divided by in ``linear_step``.

    Without ``hide_pattern``: each user's number of ratings (public in the clear
    CSR structure), and each item's, or the public ``item_norm``. With it, no
    count of the padded structure may enter, or the secret dummies would change
    the step: each user folds 1/(its real count) into what it uploads (w/n_u,
    -w*r/n_u: it alone knows n_u), so its sum is divided by 1 here; an item's
    real count is known to nobody, so its sum is divided by ``item_norm``. The
    same data padded or not then gives the same step, up to CKKS noise.
    """
    if config.hide_pattern:
        return 1.0, config.item_norm
    users = np.maximum(layout.user_counts, 1)[:, None].astype(np.float64)
    if config.item_norm > 0:
        return users, config.item_norm
    return users, np.maximum(layout.item_counts, 1)[:, None].astype(np.float64)


def _secret_dummies(free: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct items of ``free`` (unrated items), drawn from the OS CSPRNG.

    This draw must never be seeded, neither from the scenario seed nor from
    anything else RS could know or guess: RS sees every user's padded item list
    in the clear, so with a known seed it replays the draw, strips the dummies
    and learns exactly which items the user rated -- the pattern ``hide_pattern``
    exists to hide (issue 12; tests/privacy/test_hide_pattern_dummies.py). No
    caller can pass a generator in. Nothing needs to replay the draw: dummies carry
    weight 0 and no count of the padded structure enters the step (``_divisors``),
    so they change no number; the plaintext twin reads the padded structure from
    the layout RS and CSP received (``twin_slots``).
    """
    picked = secrets.SystemRandom().sample(range(free.size), k)
    return free[np.array(picked, dtype=np.int64)]


def user_entries(
    items: np.ndarray,
    values: np.ndarray,
    config: CsrFheMFConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A user's slots: (item indices sorted, -w*(r - offset), w).

    With ``hide_pattern`` the user adds ``pad_to - n`` dummy items it has not
    rated (weight 0), chosen with secret OS randomness (``_secret_dummies``), so
    every user shows exactly ``pad_to`` entries.
    """
    items = np.asarray(items, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if items.ndim != 1 or items.shape != values.shape or items.size == 0:
        raise ValueError(
            f"a user's items and values must be equal-length non-empty 1-D arrays, got "
            f"{items.shape} and {values.shape}"
        )
    if items.min() < 0 or items.max() >= config.n_items or np.unique(items).size != items.size:
        raise ValueError(f"a user's items must be distinct indices in 0..{config.n_items - 1}")
    if not np.all(np.isfinite(values)):
        raise ValueError("a user's rating values must be finite")
    weights = np.ones(items.size)
    if config.hide_pattern:
        if items.size > config.pad_to:
            raise ValueError(f"a user has {items.size} ratings, more than pad_to={config.pad_to}")
        free = np.setdiff1d(np.arange(config.n_items), items)
        dummies = _secret_dummies(free, config.pad_to - items.size)
        items = np.concatenate([items, dummies])
        values = np.concatenate([values, np.full(dummies.size, config.rating_offset)])
        weights = np.concatenate([weights, np.zeros(dummies.size)])
    order = np.argsort(items, kind="stable")
    neg_r = -(values[order] - config.rating_offset) * weights[order]
    return items[order], neg_r, weights[order]


def _restored_epoch(state: Mapping[str, Any], role: str, config: CsrFheMFConfig) -> int:
    """The epoch of a checkpoint written by ``role`` (ValueError otherwise)."""
    if str(state.get("role")) != role:
        raise ValueError(f"{role}: not a {role} checkpoint (role {state.get('role')!r})")
    epoch = int(state["epoch"])
    if not 1 <= epoch <= config.epochs:
        raise ValueError(f"{role}: checkpoint epoch {epoch} is outside 1..{config.epochs}")
    return epoch


def _restored_factors(
    state: Mapping[str, Any], names: tuple[str, str], config: CsrFheMFConfig, role: str
) -> tuple[np.ndarray, np.ndarray]:
    shapes = ((config.n_users, config.n_factors), (config.n_items, config.n_factors))
    out = []
    for name, shape in zip(names, shapes, strict=True):
        value = np.asarray(state[name], dtype=np.float64)
        if value.shape != shape or not np.all(np.isfinite(value)):
            raise ValueError(f"{role}: checkpoint {name} must be finite of shape {shape}")
        out.append(value.copy())
    return out[0], out[1]


def _floats(blob: bytes, shape: tuple[int, int], what: str) -> np.ndarray:
    """Big-endian float64 bytes -> finite array of ``shape``, or ValueError naming ``what``."""
    if len(blob) != 8 * shape[0] * shape[1]:
        raise ValueError(f"{what}: {len(blob)} bytes, expected {8 * shape[0] * shape[1]}")
    out = np.frombuffer(blob, ">f8").astype(np.float64).reshape(shape)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what}: values must be finite")
    return out


def _decode(scheme: Scheme, blob: bytes, who: str, size: int, depth: int) -> Ciphertext:
    """Ciphertext bytes -> ciphertext of ``size`` values at ``depth``, or ProtocolError."""
    try:
        ct = scheme.from_bytes(blob)
    except (CryptoError, ValueError, TypeError) as exc:
        raise ProtocolError(f"{who}: bad ciphertext: {exc}") from exc
    if ct.size != size:
        raise ProtocolError(f"{who}: ciphertext holds {ct.size} values, expected {size}")
    got = getattr(ct, "depth", 0)
    if got != depth:
        raise ProtocolError(f"{who}: ciphertext at depth {got}, expected depth {depth}")
    return ct


def _encrypt_bytes(scheme: Scheme, values: np.ndarray, depth: int, seeded: bool) -> bytes:
    """A fresh encryption's bytes at ``depth`` (seeded where the key holder may)."""
    if isinstance(scheme, CkksScheme):
        return scheme.encrypt_bytes(values, depth=depth, seeded=seeded)
    return scheme.to_bytes(scheme.encrypt(values))  # pragma: no cover - CKKS only


class _Role(StateMachine):
    """Routing checks and envelope helpers shared by the three roles."""

    agent_id: AgentId
    config: CsrFheMFConfig

    def _check(self, env: Envelope, allowed: dict[str, tuple[AgentId, ...] | None]) -> None:
        if env.job_id != self.config.job_id:
            raise ProtocolError(
                f"agent {self.agent_id}: envelope for job {env.job_id!r} from agent "
                f"{env.sender}, expected {self.config.job_id!r}"
            )
        if env.receiver != self.agent_id:
            raise ProtocolError(
                f"agent {self.agent_id}: envelope from agent {env.sender} addressed to "
                f"agent {env.receiver}"
            )
        if env.stage not in allowed:
            raise ProtocolError(
                f"agent {self.agent_id}: unexpected stage {env.stage!r} from agent "
                f"{env.sender} (expected one of {sorted(allowed)})"
            )
        senders = allowed[env.stage]
        if senders is not None and env.sender not in senders:
            raise ProtocolError(
                f"agent {self.agent_id}: stage {env.stage!r} from agent {env.sender}, "
                f"expected it from agent(s) {list(senders)}"
            )

    def _env(self, round_index: int, stage: str, receiver: AgentId, payload: bytes) -> Envelope:
        return Envelope(self.config.job_id, round_index, stage, self.agent_id, receiver, payload)


class CsrUser(_Role):
    """A user: sends its structure, encrypts its ratings once, then is done."""

    def __init__(
        self,
        u: int,
        items: np.ndarray,
        values: np.ndarray,
        config: CsrFheMFConfig,
        load_public: PublicLoader,
        *,
        profiler: Profiler | None = None,
    ) -> None:
        self.u = u
        self.agent_id = user_id(u)
        self.config = config
        self.profiler = profiler or Profiler()
        self._load_public = load_public
        self._items, self._neg_r, self._w = user_entries(items, values, config)
        self._n_real = int(np.asarray(items).size)
        self._context: bytes | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def structure(self) -> np.ndarray:
        """The item indices this user sends RS in the clear (padded with ``hide_pattern``)."""
        return self._items.copy()

    @property
    def has_context(self) -> bool:
        """Whether the CSP's public context has arrived (next: RS's layout)."""
        return self._context is not None

    def checkpoint_state(self) -> dict[str, Any]:
        """Nothing but the role: a resumed run's user uploads again, under the new key."""
        return {"role": "user"}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        if str(state.get("role")) != "user":
            raise ValueError(f"user {self.u}: not a user checkpoint")

    def start(self) -> list[Envelope]:
        return []

    def step(self, env: Envelope) -> list[Envelope]:
        self._check(env, {STAGE_CONTEXT: (CSP_ID,), STAGE_LAYOUT: (RS_ID,)})
        if env.stage == STAGE_CONTEXT:
            if self._context is not None:
                raise ProtocolError(f"user {self.u}: duplicate context from agent {env.sender}")
            # Loaded only when the layout comes, used once, then dropped: a loaded
            # context costs ~10 MB, and a simulation holds every user at once.
            self._context = bytes(env.payload)
            payload = self._items.astype(">u8").tobytes()
            return [self._env(SETUP_ROUND, STAGE_STRUCTURE, RS_ID, payload)]
        return self._upload(env)

    def _upload(self, env: Envelope) -> list[Envelope]:
        """Encrypt -w*r (and w) into every chunk the user's slots touch."""
        if self._context is None or self._done:
            raise ProtocolError(
                f"user {self.u}: layout from agent {env.sender} "
                + ("before the CKKS context" if self._context is None else "after the upload")
            )
        if len(env.payload) != _LAYOUT_MSG.size:
            raise ProtocolError(f"user {self.u}: malformed layout from agent {env.sender}")
        offset, nnz, slots = _LAYOUT_MSG.unpack(env.payload)
        n = self._items.size
        if offset + n > nnz or slots != self.config.plan().params.slot_count:
            raise ProtocolError(
                f"user {self.u}: layout from agent {env.sender} (offset {offset}, nnz {nnz}, "
                f"slots {slots}) does not fit {n} entries"
            )
        try:
            scheme = self._load_public(self._context)
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(
                f"user {self.u}: bad CKKS context from agent {CSP_ID}: {exc}"
            ) from exc
        parts: list[bytes] = []
        with self.profiler.section("crypto"):
            for c in range(offset // slots, (offset + n - 1) // slots + 1):
                start, stop = c * slots, min((c + 1) * slots, nnz)
                lo, hi = max(offset, start), min(offset + n, stop)
                cts = [self._neg_r]
                if self.config.hide_pattern:
                    # the user's own normalization 1/n_u, folded in: nobody else knows n_u
                    n_u = float(self._n_real)
                    cts += [self._w, self._neg_r / n_u, self._w / n_u]
                parts.append(_CHUNK_REF.pack(c))
                for values, depth in zip(cts, self.config.upload_depths, strict=True):
                    vec = np.zeros(stop - start)
                    vec[lo - start : hi - start] = values[lo - offset : hi - offset]
                    parts.append(_encrypt_bytes(scheme, vec, depth, seeded=False))
        self._done = True
        self._context = b""  # keeps has_context; the key is not needed any more
        return [self._env(SETUP_ROUND, STAGE_RATINGS, RS_ID, encode_parts(parts))]


class CryptoServiceProvider(_Role):
    """CSP: holds the secret key; sees masked gradients and masked factors only."""

    def __init__(
        self, config: CsrFheMFConfig, scheme: Scheme, profiler: Profiler | None = None
    ) -> None:
        if not scheme.has_secret_key:
            raise ValueError(f"the CSP needs the CKKS secret key, got {scheme!r}")
        self.agent_id = CSP_ID
        self.config = config
        self.scheme = scheme
        self.profiler = profiler or Profiler()
        self.planned = config.plan()
        self.layout: SlotLayout | None = None
        self._A_U, self._A_V = config.initial_factors()
        self.epoch = 0
        self._resuming = False  # restored: send Enc(A) once the layout is known
        #: every decrypted (masked) value, when ``record_view`` is set (privacy tests)
        self.record_view = False
        self.view: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    def masked_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """The CSP's state (U + M_U, V + M_V); measurement hooks combine it with RS's masks."""
        return self._A_U.copy(), self._A_V.copy()

    def checkpoint_state(self) -> dict[str, Any]:
        """The masked factors A and the epoch (never the key; see the module doc)."""
        return {
            "role": "csp",
            "epoch": self.epoch,
            "A_U": self._A_U.copy(),
            "A_V": self._A_V.copy(),
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Resume at an epoch boundary (before ``start``): Enc(A) goes to RS once
        the structure is known."""
        if self.layout is not None:
            raise ValueError("csp: cannot restore a run that has started")
        self.epoch = _restored_epoch(state, "csp", self.config)
        self._A_U, self._A_V = _restored_factors(state, ("A_U", "A_V"), self.config, "csp")
        self._resuming = True

    def start(self) -> list[Envelope]:
        """RS gets the evaluation context (it multiplies); users get the encryption
        key alone (they only encrypt), a quarter of the bytes and no key they do
        not need."""
        evaluation = self.scheme.public_bytes()
        encryption = (
            self.scheme.encryption_bytes() if isinstance(self.scheme, CkksScheme) else evaluation
        )
        out = [self._env(SETUP_ROUND, STAGE_CONTEXT, RS_ID, evaluation)]
        out += [
            self._env(SETUP_ROUND, STAGE_CONTEXT, user_id(u), encryption)
            for u in range(self.config.n_users)
        ]
        return out

    def step(self, env: Envelope) -> list[Envelope]:
        self._check(env, {STAGE_LAYOUT: (RS_ID,), STAGE_MASKED: (RS_ID,)})
        if env.stage == STAGE_LAYOUT:
            if self.layout is not None:
                raise ProtocolError("CSP: duplicate layout from agent 0")
            try:
                layout = SlotLayout.from_bytes(env.payload)
            except (ValueError, TypeError) as exc:
                raise ProtocolError(f"CSP: bad layout from agent {env.sender}: {exc}") from exc
            cfg = self.config
            if (layout.n_users, layout.n_items) != (cfg.n_users, cfg.n_items) or (
                layout.slot_count != self.planned.params.slot_count
            ):
                raise ProtocolError(
                    f"CSP: layout from agent {env.sender} has {layout.n_users} users, "
                    f"{layout.n_items} items, {layout.slot_count} slots; expected "
                    f"{cfg.n_users}, {cfg.n_items}, {self.planned.params.slot_count}"
                )
            self.layout = layout
            if not self._resuming:
                return []
            self._resuming = False
            return [self._env(SETUP_ROUND, STAGE_RESUME, RS_ID, self._encrypted_factors())]
        return self._refresh(env)

    def _refresh(self, env: Envelope) -> list[Envelope]:
        layout = self.layout
        if layout is None or env.round != self.epoch or self.done:
            raise ProtocolError(
                f"CSP: masked values for round {env.round} from agent {env.sender}; expected "
                f"round {self.epoch}" + ("" if layout is not None else " after the layout")
            )
        F, sizes = self.config.n_factors, layout.chunk_sizes()
        who = f"CSP: masked values for round {env.round} from agent {env.sender}"
        try:
            blobs = decode_parts(env.payload, who, 2 * F * len(sizes) + 2)
            C_U = _floats(blobs[-2], (layout.n_users, F), f"{who}: user mask correction")
            C_V = _floats(blobs[-1], (layout.n_items, F), f"{who}: item mask correction")
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        X = np.empty((2, layout.nnz, F))
        with self.profiler.section("crypto"):
            k = 0
            for g in range(2):
                for f in range(F):
                    for c, size in enumerate(sizes):
                        ct = _decode(self.scheme, blobs[k], who, size, self.config.depth)
                        start, stop = layout.chunk_bounds(c)
                        X[g, start:stop, f] = self.scheme.decrypt(ct)
                        k += 1
        bound = self.planned.masked_bound * (1 + 1e-6)
        peak = float(np.max(np.abs(X)))
        if peak > bound:
            raise ProtocolError(
                f"{who}: a masked value reaches {peak:.3g} > {bound:.3g} (value_bound * "
                "(2**mask_bits + 1)): the gradients exceed value_bound, so the mask would not "
                "hide them; raise value_bound or lower lr"
            )
        if self.record_view:
            self.view.append(X.copy())
        with self.profiler.section("compute"):
            A_U, A_V = linear_step(
                layout,
                self._A_U,
                self._A_V,
                X[0],
                X[1],
                self.config.lr,
                self.config.reg,
                *_divisors(layout, self.config),
            )
            # RS swaps the accumulated gradient masks for fresh, smaller factor masks.
            self._A_U, self._A_V = A_U - C_U, A_V - C_V
        fbound = self.planned.factor_masked_bound * (1 + 1e-6)
        fpeak = max(float(np.max(np.abs(self._A_U))), float(np.max(np.abs(self._A_V))))
        if fpeak > fbound:
            raise ProtocolError(
                f"{who}: a masked factor reaches {fpeak:.3g} > {fbound:.3g} (factor_bound * "
                "(2**factor_mask_bits + 1)): the factors exceed factor_bound"
            )
        payload = self._encrypted_factors()
        self.epoch += 1
        return [self._env(env.round, STAGE_REFRESHED, RS_ID, payload)]

    def _encrypted_factors(self) -> bytes:
        """Fresh encryptions of A = (U, V) + M in the slot layout (a refresh's payload)."""
        layout = self.layout
        if layout is None:  # unreachable: called once the structure is known
            raise ProtocolError("CSP: no structure yet")
        with self.profiler.section("compute"):
            expanded = [self._A_U[layout.slot_users], self._A_V[layout.slot_items]]
        parts = []
        with self.profiler.section("crypto"):
            for M in expanded:
                for f in range(self.config.n_factors):
                    for c in range(layout.n_chunks):
                        start, stop = layout.chunk_bounds(c)
                        parts.append(
                            _encrypt_bytes(
                                self.scheme, M[start:stop, f], 0, self.config.seeded_refresh
                            )
                        )
        return encode_parts(parts)


class RecommenderServer(_Role):
    """RS: assembles the encrypted CSR values and trains on ciphertexts only."""

    def __init__(
        self, config: CsrFheMFConfig, load_public: PublicLoader, profiler: Profiler | None = None
    ) -> None:
        self.agent_id = RS_ID
        self.config = config
        self.profiler = profiler or Profiler()
        self.planned = config.plan()
        self._load_public = load_public
        self.scheme: CkksScheme | None = None
        self._structures: dict[int, np.ndarray] = {}
        self.layout: SlotLayout | None = None
        self._pending: list[Envelope] = []
        self._uploaded: set[int] = set()
        #: per chunk, the sums of the users' uploads (``CsrFheMFConfig.upload_depths``)
        self._up: list[list[Ciphertext | None]] = []
        self._EU: list[list[Ciphertext]] = []
        self._EV: list[list[Ciphertext]] = []
        F = config.n_factors
        self._M_U = np.zeros((config.n_users, F))
        self._M_V = np.zeros((config.n_items, F))
        self.epoch = 0
        self._waiting = False
        #: restored: the factors come from the CSP (stage resume), not from U0, V0
        self._restored = False
        self._awaiting_factors = False
        self.ready = False

    # -- engine hooks -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def at_boundary(self) -> bool:
        return self.ready and not self._waiting and not self.done

    def factor_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """RS's current masks (M_U, M_V); measurement hooks subtract them from the CSP's state."""
        return self._M_U.copy(), self._M_V.copy()

    def checkpoint_state(self) -> dict[str, Any]:
        """RS's masks M and the epoch. Its ciphertexts are not kept: they are under a
        key a resumed run will not have (see the module doc)."""
        if not (self.at_boundary or self.done):
            raise ProtocolError(f"RS: checkpoints are taken between epochs (epoch {self.epoch})")
        return {"role": "rs", "epoch": self.epoch, "M_U": self._M_U.copy(), "M_V": self._M_V.copy()}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Resume at an epoch boundary (before ``start``): the setup runs again, and
        the factors come from the CSP's ``resume`` message."""
        if self.scheme is not None or self.layout is not None:
            raise ValueError("rs: cannot restore a run that has started")
        self.epoch = _restored_epoch(state, "rs", self.config)
        self._M_U, self._M_V = _restored_factors(state, ("M_U", "M_V"), self.config, "rs")
        self._restored = self._awaiting_factors = True

    def start(self) -> list[Envelope]:
        return []

    def step(self, env: Envelope) -> list[Envelope]:
        users = tuple(user_id(u) for u in range(self.config.n_users))
        self._check(
            env,
            {
                STAGE_CONTEXT: (CSP_ID,),
                STAGE_STRUCTURE: users,
                STAGE_RATINGS: users,
                STAGE_REFRESHED: (CSP_ID,),
                STAGE_RESUME: (CSP_ID,),
            },
        )
        if env.stage == STAGE_CONTEXT:
            return self._on_context(env)
        if env.stage == STAGE_STRUCTURE:
            return self._on_structure(env)
        if env.stage == STAGE_RATINGS:
            if self.scheme is None:
                self._pending.append(env)
                return []
            return self._on_ratings(env)
        if env.stage == STAGE_RESUME:
            return self._on_resume(env)
        return self._on_refreshed(env)

    # -- setup ---------------------------------------------------------------------

    def _on_context(self, env: Envelope) -> list[Envelope]:
        if self.scheme is not None:
            raise ProtocolError(f"RS: duplicate context from agent {env.sender}")
        try:
            scheme = self._load_public(env.payload)
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(f"RS: bad CKKS context from agent {env.sender}: {exc}") from exc
        if not isinstance(scheme, CkksScheme):
            raise ProtocolError(
                f"RS: context from agent {env.sender} is {type(scheme).__name__}, not CKKS"
            )
        if not scheme.can_evaluate:
            raise ProtocolError(
                f"RS: CKKS context from agent {env.sender} holds no relinearization keys; "
                "RS multiplies ciphertexts and needs the evaluation context"
            )
        slots = scheme.params.slot_count
        if slots != self.planned.params.slot_count:
            raise ProtocolError(
                f"RS: CKKS context from agent {env.sender} has {slots} slots, the planned set "
                f"{self.planned.name!r} has {self.planned.params.slot_count}"
            )
        self.scheme = scheme
        out: list[Envelope] = []
        pending, self._pending = self._pending, []
        for p in pending:
            out += self._on_ratings(p)
        return out

    def _on_structure(self, env: Envelope) -> list[Envelope]:
        u = env.sender - 2
        who = f"RS: structure from agent {env.sender}"
        if u in self._structures:
            raise ProtocolError(f"{who}: duplicate")
        data = env.payload
        if not data or len(data) % 8:
            raise ProtocolError(f"{who}: {len(data)} bytes is not a list of item indices")
        items = np.frombuffer(data, ">u8").astype(np.int64)
        cfg = self.config
        if items.max() >= cfg.n_items or np.any(np.diff(items) <= 0):
            raise ProtocolError(
                f"{who}: item indices must be increasing and below n_items={cfg.n_items}"
            )
        if cfg.hide_pattern and items.size != cfg.pad_to:
            raise ProtocolError(f"{who}: {items.size} entries, expected pad_to={cfg.pad_to}")
        self._structures[u] = items
        if len(self._structures) < cfg.n_users:
            return []
        counts = np.array([self._structures[v].size for v in range(cfg.n_users)])
        layout = SlotLayout(
            np.repeat(np.arange(cfg.n_users, dtype=np.int64), counts),
            np.concatenate([self._structures[v] for v in range(cfg.n_users)]),
            cfg.n_users,
            cfg.n_items,
            self.planned.params.slot_count,
        )
        self.layout = layout
        self._up = [[None] * layout.n_chunks for _ in self.config.upload_depths]
        offsets = layout.user_offsets()
        # The CSP's copy of the layout goes out with the users' layout messages: one
        # stage, so network emulation charges them as the one wave they are (after
        # the users' structure messages they answer, not alongside them).
        out = [self._env(SETUP_ROUND, STAGE_LAYOUT, CSP_ID, layout.to_bytes())]
        for v in range(cfg.n_users):
            msg = _LAYOUT_MSG.pack(int(offsets[v]), layout.nnz, layout.slot_count)
            out.append(self._env(SETUP_ROUND, STAGE_LAYOUT, user_id(v), msg))
        return out

    def _on_ratings(self, env: Envelope) -> list[Envelope]:
        u = env.sender - 2
        who = f"RS: ratings from agent {env.sender}"
        layout, scheme = self.layout, self.scheme
        if layout is None or scheme is None or u in self._uploaded:
            raise ProtocolError(f"{who}: unexpected (duplicate, or before the layout was sent)")
        depths = self.config.upload_depths
        per = 1 + len(depths)
        offset = int(layout.user_offsets()[u])
        count = int(layout.user_counts[u])
        first, last = offset // layout.slot_count, (offset + count - 1) // layout.slot_count
        try:
            parts = decode_parts(env.payload, who, per * (last - first + 1))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        with self.profiler.section("crypto"):
            for k in range(0, len(parts), per):
                if len(parts[k]) != _CHUNK_REF.size:
                    raise ProtocolError(f"{who}: malformed chunk reference")
                (c,) = _CHUNK_REF.unpack(parts[k])
                if c != first + k // per:
                    raise ProtocolError(f"{who}: chunk {c}, expected chunk {first + k // per}")
                size = layout.chunk_sizes()[c]
                for j, depth in enumerate(depths):
                    ct = _decode(scheme, parts[k + 1 + j], who, size, depth)
                    self._up[j][c] = self._acc(self._up[j][c], ct)
        self._uploaded.add(u)
        if len(self._uploaded) == self.config.n_users:
            if not self._restored:
                self._encrypt_initial_factors()
            self.ready = not self._awaiting_factors
        return []

    def _on_resume(self, env: Envelope) -> list[Envelope]:
        """A resumed run's factors: the CSP's Enc(A) minus RS's restored masks."""
        who = f"RS: resumed factors from agent {env.sender}"
        if not self._awaiting_factors or env.round != SETUP_ROUND:
            raise ProtocolError(f"{who} for round {env.round}: unexpected (RS did not resume)")
        self._EU, self._EV = self._unmask(env.payload, who)
        self._awaiting_factors = False
        self.ready = len(self._uploaded) == self.config.n_users
        return []

    def _acc(self, total: Ciphertext | None, ct: Ciphertext) -> Ciphertext:
        if self.scheme is None:  # unreachable: checked by the caller
            raise ProtocolError("RS: no CKKS context")
        return ct if total is None else self.scheme.add(total, ct)

    def _encrypt_initial_factors(self) -> None:
        """Enc of the public U0, V0 in the slot layout (no secret involved)."""
        U, V = self.config.initial_factors()
        layout, scheme = self.layout, self.scheme
        if layout is None or scheme is None:  # unreachable: only called when ready
            raise ProtocolError("RS: not set up")
        out: list[list[list[Ciphertext]]] = []
        for M, idx in ((U, layout.slot_users), (V, layout.slot_items)):
            out.append(
                [
                    [
                        scheme.encrypt(M[idx[a:b], f])
                        for a, b in map(layout.chunk_bounds, range(layout.n_chunks))
                    ]
                    for f in range(self.config.n_factors)
                ]
            )
        self._EU, self._EV = out[0], out[1]

    # -- epochs ----------------------------------------------------------------------

    def begin_outer(self) -> list[Envelope]:
        """Compute masked gradients for this epoch and send them to the CSP."""
        if not self.at_boundary:
            raise ProtocolError(
                f"RS: cannot begin epoch {self.epoch} (ready={self.ready}, "
                f"waiting={self._waiting}, done={self.done})"
            )
        layout, scheme, cfg = self.layout, self.scheme, self.config
        if layout is None or scheme is None:  # unreachable: at_boundary implies both
            raise ProtocolError("RS: not set up")
        F = cfg.n_factors
        bound = 2.0**self.planned.value_bits * 2.0**cfg.mask_bits
        masks = secure_uniform((2, layout.nnz, F), bound)
        grads: list[list[list[bytes]]] = [[[] for _ in range(F)] for _ in range(2)]
        with self.profiler.section("crypto"):
            for c in range(layout.n_chunks):
                a, b = layout.chunk_bounds(c)
                up = [ct for column in self._up if (ct := column[c]) is not None]
                if len(up) != len(self._up):  # unreachable: every chunk got an upload
                    raise ProtocolError(f"RS: chunk {c} has no ratings")
                pred = scheme.sum([scheme.mul(self._EU[f][c], self._EV[f][c]) for f in range(F)])
                if cfg.hide_pattern:
                    neg_r, w, neg_r_u, w_u = up
                    # items: w * (pred - r); users: the same scaled by the user's 1/n_u
                    ne_i = scheme.add(scheme.mul(w, pred), neg_r)
                    ne_u = scheme.add(scheme.mul(w_u, pred), neg_r_u)
                else:
                    ne_i = ne_u = scheme.add(pred, up[0])
                for f in range(F):
                    for g, ne, other in ((0, ne_u, self._EV[f][c]), (1, ne_i, self._EU[f][c])):
                        masked = scheme.add_plain(scheme.mul(ne, other), masks[g, a:b, f])
                        grads[g][f].append(scheme.to_bytes(masked))
        with self.profiler.section("compute"):
            M_U, M_V = linear_step(
                layout,
                self._M_U,
                self._M_V,
                masks[0],
                masks[1],
                cfg.lr,
                cfg.reg,
                *_divisors(layout, cfg),
            )
            fbound = 2.0**self.planned.factor_bits * 2.0**cfg.factor_mask_bits
            self._M_U = secure_uniform(M_U.shape, fbound)
            self._M_V = secure_uniform(M_V.shape, fbound)
        parts = [blob for g in range(2) for f in range(F) for blob in grads[g][f]]
        # corrections: the CSP's new state is (U, V) + fresh masks, not + M_U, M_V
        parts += [
            (M_U - self._M_U).astype(">f8").tobytes(),
            (M_V - self._M_V).astype(">f8").tobytes(),
        ]
        self._waiting = True
        return [self._env(self.epoch, STAGE_MASKED, CSP_ID, encode_parts(parts))]

    def _on_refreshed(self, env: Envelope) -> list[Envelope]:
        layout, scheme = self.layout, self.scheme
        who = f"RS: refreshed factors for round {env.round} from agent {env.sender}"
        if not self._waiting or env.round != self.epoch or layout is None or scheme is None:
            raise ProtocolError(f"{who}: unexpected (RS is at epoch {self.epoch})")
        self._EU, self._EV = self._unmask(env.payload, who)
        self._waiting = False
        self.epoch += 1
        return []

    def _unmask(
        self, payload: bytes, who: str
    ) -> tuple[list[list[Ciphertext]], list[list[Ciphertext]]]:
        """Enc(A) in the slot layout minus Enc(M): Enc(U), Enc(V) per factor and chunk."""
        layout, scheme = self.layout, self.scheme
        if layout is None or scheme is None:
            raise ProtocolError(f"{who}: unexpected before the context and the structure")
        F, sizes = self.config.n_factors, layout.chunk_sizes()
        try:
            blobs = decode_parts(payload, who, 2 * F * len(sizes))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        new: list[list[list[Ciphertext]]] = [[], []]
        k = 0
        with self.profiler.section("crypto"):
            for g, (M, idx) in enumerate(
                ((self._M_U, layout.slot_users), (self._M_V, layout.slot_items))
            ):
                for f in range(F):
                    row: list[Ciphertext] = []
                    for c, size in enumerate(sizes):
                        a, b = layout.chunk_bounds(c)
                        ct = _decode(scheme, blobs[k], who, size, 0)
                        # Subtract an *encryption* of the mask: TenSEAL's add_plain of
                        # large values breaks later products of correlated ciphertexts.
                        row.append(scheme.add(ct, scheme.encrypt(-M[idx[a:b], f])))
                        k += 1
                    new[g].append(row)
        return new[0], new[1]


def twin_slots(
    layout: SlotLayout,
    users: np.ndarray,
    items: np.ndarray,
    values: np.ndarray,
    config: CsrFheMFConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slot (neg_r, weights) of ``layout`` for the ratings (users, items, values).

    What the users uploaded, rebuilt from the public structure instead of by
    replaying their dummy draws (which are secret): a slot that is a rating gets
    weight 1, a dummy slot weight 0, exactly as ``user_entries`` builds them.
    The twin needs the real structure because the slot order follows it.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keys = users * config.n_items + items
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    slot_keys = layout.slot_users * config.n_items + layout.slot_items
    if keys.size == 0:
        raise ValueError("twin_slots needs at least one rating")
    pos = np.minimum(np.searchsorted(keys, slot_keys), keys.size - 1)
    rated = keys[pos] == slot_keys
    if int(rated.sum()) != keys.size:
        raise ValueError(
            f"the layout holds {int(rated.sum())} of the {keys.size} ratings; it is not "
            "these users' structure"
        )
    if not config.hide_pattern and not rated.all():
        raise ValueError("without hide_pattern every slot must be a rating")
    slot_values = np.where(rated, values[order][pos], config.rating_offset)
    weights = rated.astype(np.float64)
    return -(slot_values - config.rating_offset) * weights, weights


def run_twin(
    layout: SlotLayout,
    neg_r: np.ndarray,
    weights: np.ndarray,
    config: CsrFheMFConfig,
    on_epoch: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The same algorithm without encryption: same layout, same updates, no masks.

    ``neg_r``/``weights`` are per slot in layout order (``twin_slots``, or
    ``user_entries`` output concatenated over users). ``on_epoch(epoch, U, V)`` is
    called after each epoch.
    """
    if neg_r.shape != (layout.nnz,) or weights.shape != (layout.nnz,):
        raise ValueError(
            f"neg_r and weights must have shape ({layout.nnz},), got {neg_r.shape} and "
            f"{weights.shape}"
        )
    U, V = config.initial_factors()
    divisors = _divisors(layout, config)
    if config.hide_pattern:
        # each user's real count, as the user folds it into its uploads
        real = np.bincount(layout.slot_users, weights=weights, minlength=layout.n_users)
        n_u = np.maximum(real, 1.0)[layout.slot_users]
        neg_r_u, w_u = neg_r / n_u, weights / n_u
    for epoch in range(config.epochs):
        pred = np.einsum("sf,sf->s", U[layout.slot_users], V[layout.slot_items])
        if config.hide_pattern:
            ne_i, ne_u = weights * pred + neg_r, w_u * pred + neg_r_u
        else:
            ne_i = ne_u = pred + neg_r
        gU = ne_u[:, None] * V[layout.slot_items]
        gV = ne_i[:, None] * U[layout.slot_users]
        U, V = linear_step(layout, U, V, gU, gV, config.lr, config.reg, *divisors)
        if on_epoch is not None:
            on_epoch(epoch, U, V)
    return U, V
