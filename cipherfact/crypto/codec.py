"""Signed fixed-point codec and the slot layout it implies.

Floats become integers ``round(x * 2**frac_bits)``; a packed plaintext holds
many such integers side by side in fixed-width *slots*. The width is chosen
from the codec's budget so that every operation the budget allows stays inside
its slot:

    slot_bits = int_bits + frac_bits          # |fresh encoding| <= 2**(int+frac)
              + scalar_bits                   # product of |k| over a history
              + ceil(log2(max_terms))         # fresh encodings summed into a slot
              + guard_bits + 1                # guard, and the offset (sign) bit

Slots store ``u = v + t * M`` with ``M = 2**(int_bits + frac_bits)`` and a
public, tracked multiple ``t`` such that ``|v| <= t * M``; so ``0 <= u <= 2tM``
and sums of slots never borrow from, or carry into, a neighbour.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cipherfact.crypto.errors import BudgetExceededError

__all__ = ["FixedPointCodec", "Layout", "pack_slots", "unpack_slots"]


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


@dataclass(frozen=True)
class FixedPointCodec:
    """Signed fixed point with an explicit overflow budget (see module docstring)."""

    frac_bits: int = 24
    int_bits: int = 8
    scalar_bits: int = 16
    max_terms: int = 16
    guard_bits: int = 2

    def __post_init__(self) -> None:
        _check_int("frac_bits", self.frac_bits, 0, 60)
        _check_int("int_bits", self.int_bits, 0, 60)
        _check_int("scalar_bits", self.scalar_bits, 0, 48)
        _check_int("max_terms", self.max_terms, 1, 65535)
        _check_int("guard_bits", self.guard_bits, 0, 32)
        if self.int_bits + self.frac_bits < 1:
            raise ValueError(
                f"int_bits + frac_bits must be >= 1, got {self.int_bits} + {self.frac_bits}"
            )

    @property
    def value_bound(self) -> int:
        """M = 2**(int_bits + frac_bits): the bound on |a fresh encoded integer|."""
        return 1 << (self.int_bits + self.frac_bits)

    @property
    def term_bits(self) -> int:
        """ceil(log2(max_terms)): bits reserved for summing fresh encodings."""
        return math.ceil(math.log2(self.max_terms)) if self.max_terms > 1 else 0

    @property
    def slot_bits(self) -> int:
        """Width of one packed slot, in bits."""
        return (
            self.int_bits + self.frac_bits + self.scalar_bits + self.term_bits + self.guard_bits + 1
        )

    def encode(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        """Floats -> int64 ``round(x * 2**frac_bits)``; checks finiteness and range.

        Rounding is ``numpy.rint`` (half to even) of an exact power-of-two
        scaling, so every scheme sharing this codec gets the same integers.
        """
        arr = as_float_vector(x, name)
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must be finite; {name}[{i}] = {float(arr[i])!r}")
        limit = float(2**self.int_bits)
        over = np.abs(arr) >= limit
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise BudgetExceededError(
                f"{name}[{i}] = {float(arr[i])!r} is out of the codec range: |value| must be "
                f"< 2**int_bits = {limit:g}"
            )
        return np.rint(np.ldexp(arr, self.frac_bits)).astype(np.int64)

    def decode(self, ints: Sequence[int] | np.ndarray) -> np.ndarray:
        """Integers -> exactly ``int / 2**frac_bits`` as float64 (correctly rounded)."""
        out = np.fromiter((float(v) for v in ints), dtype=np.float64, count=len(ints))
        return np.ldexp(out, -self.frac_bits)

    def to_tuple(self) -> tuple[int, int, int, int, int]:
        """The parameters in a fixed order (used in byte headers)."""
        return (self.frac_bits, self.int_bits, self.scalar_bits, self.max_terms, self.guard_bits)


def as_float_vector(x: object, name: str) -> np.ndarray:
    """Validate and convert a caller's vector to a 1-D float64 array."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric vector, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    return arr.astype(np.float64, copy=False)


@dataclass(frozen=True)
class Layout:
    """How a vector is spread over packed integers: slot width and slots per integer."""

    slot_bits: int
    slots: int

    @classmethod
    def for_modulus(cls, codec: FixedPointCodec, modulus_bits: int, packing: bool) -> Layout:
        """Most slots that keep a packed integer below a modulus of ``modulus_bits`` bits."""
        width = codec.slot_bits
        capacity = modulus_bits - 1  # packed integer < 2**(bits-1) <= n
        if capacity < width:
            raise ValueError(
                f"modulus of {modulus_bits} bits cannot hold one {width}-bit slot; "
                "use a larger key or a smaller codec budget"
            )
        return cls(width, capacity // width if packing else 1)

    def count(self, length: int) -> int:
        """Packed integers needed for ``length`` values."""
        return -(-length // self.slots)

    @functools.cached_property
    def ones(self) -> int:
        """One packed integer with 1 in every slot: ``v * ones`` fills every slot with
        ``v`` (for ``0 <= v < 2**slot_bits``) in one multiplication."""
        return sum(1 << (self.slot_bits * i) for i in range(self.slots))


def pack_slots(units: Sequence[int] | np.ndarray, layout: Layout) -> list[int]:
    """Non-negative slot values (each < 2**slot_bits) -> packed integers, slot 0 lowest."""
    w, s = layout.slot_bits, layout.slots
    if w > 64:
        return pack_by_shifts(units, w, s)
    return _pack_bytes(units, w, s) if w % 8 == 0 else _pack_bits(units, w, s)


def pack_by_shifts(units: Sequence[int] | np.ndarray, w: int, s: int) -> list[int]:
    """``pack_slots`` with Python's integers, any slot width: shift in each value."""
    out = []
    for start in range(0, len(units), s):
        acc = 0
        for u in reversed(units[start : start + s]):
            acc = (acc << w) | int(u)
        out.append(acc)
    return out


def _pack_bytes(units: Sequence[int] | np.ndarray, w: int, s: int) -> list[int]:
    """``pack_slots`` for whole-byte slots of at most 64 bits (ppdnmf's pairwise 48):
    each value's low ``w // 8`` little-endian bytes laid end to end, so one
    ``int.from_bytes`` per packed integer; about a third of the time of
    ``_pack_bits`` (``benchmarks/pack_slots.py``)."""
    width = w // 8
    data = np.asarray(units, dtype="<u8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()
    step = width * s
    return [int.from_bytes(data[i : i + step], "little") for i in range(0, len(data), step)]


def _pack_bits(units: Sequence[int] | np.ndarray, w: int, s: int) -> list[int]:
    """``pack_slots`` for slots of at most 64 bits, with numpy: each value's low ``w``
    bits, little-endian, laid end to end, ``s`` values per integer: 0.58-0.72x the
    time of the shifts for a 150-value vector (``benchmarks/pack_slots.py``)."""
    values = np.asarray(units, dtype="<u8")
    bits = np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    flat = bits[:, :w].ravel()
    step = w * s
    return [
        int.from_bytes(np.packbits(flat[i : i + step], bitorder="little").tobytes(), "little")
        for i in range(0, flat.size, step)
    ]


def unpack_slots(packed: Sequence[int], layout: Layout, length: int) -> list[int]:
    """Inverse of ``pack_slots`` for the first ``length`` slots."""
    w, s = layout.slot_bits, layout.slots
    mask = (1 << w) - 1
    out: list[int] = []
    for value in packed:
        v = int(value)
        for _ in range(s):
            out.append(v & mask)
            v >>= w
    return out[:length]
