"""Public pieces of csr_fhe_mf: the per-rating slot layout, the linear step, payloads, masks.

Everything here is either public (the CSR structure, the update rule) or a
helper that every role shares, so the three roles and the plaintext twin run
literally the same arithmetic: the twin calls ``linear_step`` on true
gradients, the CSP on masked ones, and RS on its masks.

Slot layout (no rotations): rating s of the CSR order (user-major) occupies
slot s of every per-rating vector, split into chunks of ``slot_count``
slots. For factor dimension f, RS holds Enc(U[u(s), f]) and Enc(V[i(s), f])
over the slots, so pred = sum_f U_f * V_f is slot-wise.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass

import numpy as np

from cipherfact.crypto.ckks_params import NAMED_PARAMS, CkksParams, get_ckks_params
from cipherfact.crypto.errors import InsecureParameterError

__all__ = [
    "CSR_PARAM_SETS",
    "PlannedParams",
    "SlotLayout",
    "decode_parts",
    "encode_parts",
    "linear_step",
    "plan_csr_params",
    "secure_uniform",
]

# --------------------------------------------------------------------------- layout


@dataclass(frozen=True, eq=False)
class SlotLayout:
    """The public CSR structure in slot order: who and what each slot refers to."""

    slot_users: np.ndarray  # int64, user index of slot s
    slot_items: np.ndarray  # int64, item index of slot s
    n_users: int
    n_items: int
    slot_count: int

    def __post_init__(self) -> None:
        for name in ("slot_users", "slot_items"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TypeError(f"SlotLayout.{name} must be a 1-D integer array")
        if self.slot_users.size != self.slot_items.size or self.slot_users.size == 0:
            raise ValueError(
                f"SlotLayout needs equal, non-empty slot arrays, got {self.slot_users.size} "
                f"and {self.slot_items.size}"
            )
        if self.slot_users.min() < 0 or self.slot_users.max() >= self.n_users:
            raise ValueError(f"SlotLayout.slot_users outside 0..{self.n_users - 1}")
        if self.slot_items.min() < 0 or self.slot_items.max() >= self.n_items:
            raise ValueError(f"SlotLayout.slot_items outside 0..{self.n_items - 1}")
        if np.any(np.diff(self.slot_users) < 0):
            raise ValueError("SlotLayout.slot_users must be sorted (CSR, user-major order)")
        if self.slot_count < 1:
            raise ValueError(f"SlotLayout.slot_count must be >= 1, got {self.slot_count}")

    @property
    def nnz(self) -> int:
        """Slots in use (ratings, plus dummies when the pattern is hidden)."""
        return int(self.slot_users.size)

    @property
    def n_chunks(self) -> int:
        return -(-self.nnz // self.slot_count)

    def chunk_bounds(self, c: int) -> tuple[int, int]:
        """Slot range [start, stop) of chunk ``c``."""
        start = c * self.slot_count
        return start, min(start + self.slot_count, self.nnz)

    def chunk_sizes(self) -> list[int]:
        return [b - a for a, b in (self.chunk_bounds(c) for c in range(self.n_chunks))]

    @property
    def user_counts(self) -> np.ndarray:
        return np.bincount(self.slot_users, minlength=self.n_users)

    @property
    def item_counts(self) -> np.ndarray:
        return np.bincount(self.slot_items, minlength=self.n_items)

    def user_offsets(self) -> np.ndarray:
        """First slot of each user (CSR indptr without its last entry)."""
        return np.concatenate([[0], np.cumsum(self.user_counts)[:-1]]).astype(np.int64)

    def segment_sums(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-user and per-item sums of per-slot rows ``X`` (nnz x F)."""
        F = X.shape[1]
        by_user = np.stack(
            [
                np.bincount(self.slot_users, weights=X[:, f], minlength=self.n_users)
                for f in range(F)
            ],
            axis=1,
        )
        by_item = np.stack(
            [
                np.bincount(self.slot_items, weights=X[:, f], minlength=self.n_items)
                for f in range(F)
            ],
            axis=1,
        )
        return by_user, by_item

    def to_bytes(self) -> bytes:
        """Public wire form: counts and item indices (RS -> CSP)."""
        head = struct.pack(">QQQQ", self.n_users, self.n_items, self.slot_count, self.nnz)
        return (
            head
            + self.user_counts.astype(">u8").tobytes()
            + self.slot_items.astype(">u8").tobytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SlotLayout:
        """Inverse of ``to_bytes``; ``ValueError`` on malformed input."""
        if len(data) < 32:
            raise ValueError(f"slot layout bytes too short: {len(data)} < 32")
        n_users, n_items, slot_count, nnz = struct.unpack_from(">QQQQ", data)
        if not (1 <= n_users <= 1 << 32 and 1 <= n_items <= 1 << 32 and 1 <= nnz <= 1 << 34):
            raise ValueError(
                f"slot layout header out of range: users={n_users} items={n_items} nnz={nnz}"
            )
        if len(data) != 32 + 8 * (n_users + nnz):
            raise ValueError(
                f"slot layout bytes have length {len(data)}, expected {32 + 8 * (n_users + nnz)}"
            )
        counts = np.frombuffer(data, ">u8", n_users, 32).astype(np.int64)
        items = np.frombuffer(data, ">u8", nnz, 32 + 8 * n_users).astype(np.int64)
        if int(counts.sum()) != nnz:
            raise ValueError(f"slot layout counts sum to {int(counts.sum())}, header says {nnz}")
        users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
        return cls(users, items, int(n_users), int(n_items), int(slot_count))


def linear_step(
    layout: SlotLayout,
    U: np.ndarray,
    V: np.ndarray,
    gU: np.ndarray,
    gV: np.ndarray,
    lr: float,
    reg: float,
    user_div: np.ndarray | float | None = None,
    item_div: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One gradient step from per-slot gradients (the linear part of an epoch).

    ``gU[s] = -e_s V[i(s)]`` and ``gV[s] = -e_s U[u(s)]`` (signs as RS computes
    them). Each user/item row moves by ``lr`` times its slot gradients' sum
    divided by ``user_div``/``item_div`` (a column per row, or one public
    constant; default the row's slot count: its *mean* slot gradient, a
    Jacobi-scaled full batch GD) plus ridge term, both rows from the same
    residuals. Linear in (U, V, gU, gV) jointly, so it commutes with masks.
    """
    sum_u, _ = layout.segment_sums(gU)
    _, sum_v = layout.segment_sums(gV)
    nu = np.maximum(layout.user_counts, 1)[:, None] if user_div is None else user_div
    ni = np.maximum(layout.item_counts, 1)[:, None] if item_div is None else item_div
    return U - lr * (sum_u / nu + reg * U), V - lr * (sum_v / ni + reg * V)


# --------------------------------------------------------------------------- payloads

_PARTS_MAGIC = b"CFMP"
_PARTS_HEAD = struct.Struct(">4sI")
_PART_LEN = struct.Struct(">Q")
_MAX_PARTS = 1 << 20


def encode_parts(parts: list[bytes]) -> bytes:
    """Several byte strings in one payload (count, then length-prefixed parts)."""
    out = [_PARTS_HEAD.pack(_PARTS_MAGIC, len(parts))]
    for p in parts:
        out.append(_PART_LEN.pack(len(p)))
        out.append(bytes(p))
    return b"".join(out)


def decode_parts(data: bytes, what: str, expected: int | None = None) -> list[bytes]:
    """Inverse of ``encode_parts``; ``ValueError`` naming ``what`` on malformed input."""
    if len(data) < _PARTS_HEAD.size:
        raise ValueError(f"{what}: payload too short ({len(data)} bytes)")
    magic, count = _PARTS_HEAD.unpack_from(data)
    if magic != _PARTS_MAGIC:
        raise ValueError(f"{what}: bad payload magic {magic!r}, expected {_PARTS_MAGIC!r}")
    if count > _MAX_PARTS or (expected is not None and count != expected):
        raise ValueError(f"{what}: payload holds {count} parts, expected {expected}")
    offset, parts = _PARTS_HEAD.size, []
    for k in range(count):
        if offset + _PART_LEN.size > len(data):
            raise ValueError(f"{what}: payload truncated before part {k}")
        (n,) = _PART_LEN.unpack_from(data, offset)
        offset += _PART_LEN.size
        if offset + n > len(data):
            raise ValueError(f"{what}: payload truncated in part {k} ({n} bytes announced)")
        parts.append(data[offset : offset + n])
        offset += n
    if offset != len(data):
        raise ValueError(f"{what}: {len(data) - offset} trailing bytes after the last part")
    return parts


# --------------------------------------------------------------------------- masks


def secure_uniform(shape: tuple[int, ...], bound: float) -> np.ndarray:
    """Uniform floats in [-bound, bound) from the OS CSPRNG (masks hide data)."""
    n = int(np.prod(shape))
    raw = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64) >> np.uint64(11)
    unit = raw.astype(np.float64) * 2.0**-53  # 53 random bits -> [0, 1)
    return ((2.0 * unit - 1.0) * bound).reshape(shape)


# --------------------------------------------------------------------------- planner

#: Decrypted CKKS values carry an error of about |value| * 2**-PRECISION_BITS
#: (double-precision decoding; measured here for the sets below with masks up
#: to the headroom). The planner uses it to predict the error masks cause.
PRECISION_BITS = 35
#: A product of two ciphertexts from which plaintext masks of magnitude m were
#: removed carries an error of about m**2 * 2**-PRODUCT_PRECISION_BITS
#: (measured: m = 2**20 -> ~2e-4, m = 2**23 -> ~1.6e-2, at both 30- and 40-bit
#: scales); it bounds the masks on the factors RS gets back from the CSP.
PRODUCT_PRECISION_BITS = 52

#: Parameter sets the planner considers, cheapest first. Beyond the named sets,
#: 30-bit scales trade a little precision for 10 more bits of mask headroom.
CSR_PARAM_SETS: dict[str, CkksParams] = {
    "n8192-depth2": NAMED_PARAMS["n8192-depth2"],
    "n8192-depth2-s30": CkksParams(8192, (60, 30, 30, 60), 30),
    "n8192-depth3": NAMED_PARAMS["n8192-depth3"],
    "n8192-depth3-s30": CkksParams(8192, (60, 30, 30, 30, 60), 30),
    "n16384-depth4": NAMED_PARAMS["n16384-depth4"],
}


@dataclass(frozen=True)
class PlannedParams:
    """A checked choice: the parameter set and what it implies."""

    name: str
    params: CkksParams
    depth: int
    value_bits: int
    mask_bits: int
    predicted_error: float
    factor_bits: int = 2
    factor_mask_bits: int = 16

    @property
    def factor_masked_bound(self) -> float:
        """Largest |factor + mask| the CSP may hold: factor bound * (2**factor_mask_bits + 1)."""
        return 2.0**self.factor_bits * (2.0**self.factor_mask_bits + 1.0)

    @property
    def masked_bound(self) -> float:
        """Largest |value + mask| the CSP may see: value bound * (2**mask_bits + 1)."""
        return 2.0**self.value_bits * (2.0**self.mask_bits + 1.0)


def plan_csr_params(
    depth: int,
    value_bound: float,
    mask_bits: int,
    params: str = "auto",
    max_error: float = 1e-2,
    factor_bound: float = 4.0,
    factor_mask_bits: int = 16,
) -> PlannedParams:
    """Pick (or check) a CKKS set that fits ``depth`` and values masked by ``mask_bits``.

    A value |v| <= value_bound hidden by a uniform mask of width
    value_bound * 2**mask_bits (statistical distance <= 2**-mask_bits) reaches
    value_bound * (2**mask_bits + 1); it must stay below the set's
    ``max_abs_value`` at the last level, and the decoding error it causes
    (about magnitude * 2**-35) must stay below ``max_error``. The factors the
    CSP returns are masked with ``factor_mask_bits`` over ``factor_bound``; RS
    removes those masks before multiplying, which costs an error of about
    (factor_bound * 2**factor_mask_bits)**2 * 2**-52, also checked.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if isinstance(mask_bits, bool) or not isinstance(mask_bits, int) or not 0 <= mask_bits <= 60:
        raise ValueError(f"mask_bits must be an int in [0, 60], got {mask_bits!r}")
    if not (math.isfinite(value_bound) and value_bound > 0):
        raise ValueError(f"value_bound must be finite and > 0, got {value_bound!r}")
    if not (math.isfinite(max_error) and max_error > 0):
        raise ValueError(f"max_error must be finite and > 0, got {max_error!r}")
    if (
        isinstance(factor_mask_bits, bool)
        or not isinstance(factor_mask_bits, int)
        or not 0 <= factor_mask_bits <= 60
    ):
        raise ValueError(f"factor_mask_bits must be an int in [0, 60], got {factor_mask_bits!r}")
    if not (math.isfinite(factor_bound) and factor_bound > 0):
        raise ValueError(f"factor_bound must be finite and > 0, got {factor_bound!r}")
    factor_bits = max(0, math.ceil(math.log2(factor_bound)))
    product_error = (2.0 ** (factor_bits + factor_mask_bits)) ** 2 * 2.0**-PRODUCT_PRECISION_BITS
    if product_error > max_error:
        most = (PRODUCT_PRECISION_BITS + math.floor(math.log2(max_error))) // 2 - factor_bits
        raise InsecureParameterError(
            f"factor_mask_bits={factor_mask_bits} with factors up to 2**{factor_bits} makes "
            f"products err by about {product_error:.1e} > max_error={max_error:g}; use "
            f"factor_mask_bits <= {max(most, 0)} or allow a larger max_error"
        )
    value_bits = max(0, math.ceil(math.log2(value_bound)))
    magnitude = 2.0**value_bits * (2.0**mask_bits + 1.0)
    error = magnitude * 2.0**-PRECISION_BITS
    if error > max_error:
        most = PRECISION_BITS + math.floor(math.log2(max_error)) - value_bits - 1
        raise InsecureParameterError(
            f"mask_bits={mask_bits} with values up to 2**{value_bits} decrypts with error about "
            f"{error:.1e} > max_error={max_error:g}; use mask_bits <= {max(most, 0)} or allow "
            "a larger max_error"
        )
    if params != "auto":
        if params in CSR_PARAM_SETS:
            chosen = {params: CSR_PARAM_SETS[params]}
        else:
            try:
                chosen = {params: get_ckks_params(params)}
            except ValueError:
                raise ValueError(
                    f"unknown CKKS parameter set {params!r}; known: "
                    f"{sorted(set(CSR_PARAM_SETS) | set(NAMED_PARAMS))} or 'auto'"
                ) from None
    else:
        chosen = CSR_PARAM_SETS
    for name, p in chosen.items():
        if p.max_depth >= depth and magnitude < p.max_abs_value:
            return PlannedParams(
                name,
                p,
                depth,
                value_bits,
                mask_bits,
                max(error, product_error),
                factor_bits,
                factor_mask_bits,
            )
    if params != "auto":
        p = chosen[params]
        if p.max_depth < depth:
            raise InsecureParameterError(
                f"CKKS set {params!r} supports depth {p.max_depth}, this job needs depth {depth}"
            )
        raise InsecureParameterError(
            f"CKKS set {params!r} holds |values| < 2**{p.headroom_bits - 1}; masked values "
            f"reach 2**{value_bits} * (2**{mask_bits} + 1): lower mask_bits or value_bound"
        )
    fitting = [p for p in chosen.values() if p.max_depth >= depth]
    widest = max(p.headroom_bits for p in fitting) - 1 if fitting else 0
    raise InsecureParameterError(
        f"no CKKS set with depth >= {depth} holds values up to 2**{value_bits} masked with "
        f"{mask_bits} bits (largest holds 2**{widest}); use mask_bits <= "
        f"{max(widest - value_bits - 1, 0)} or a smaller value_bound"
    )
