"""Fixed-point codec: rounding, range checks, slot width and packing."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.crypto import BudgetExceededError, FixedPointCodec, Layout
from cipherfact.crypto.codec import pack_slots, unpack_slots

from .conftest import CODEC


def test_slot_width_formula() -> None:
    # 8 + 24 + 16 + ceil(log2 16) + 2 + 1 offset bit
    assert CODEC.slot_bits == 55
    assert FixedPointCodec(max_terms=17).slot_bits == 56
    assert FixedPointCodec(max_terms=1, guard_bits=0).slot_bits == 49
    assert CODEC.value_bound == 2**32


def test_layout_fits_modulus() -> None:
    assert Layout.for_modulus(CODEC, 2048, packing=True) == Layout(55, 37)
    assert Layout.for_modulus(CODEC, 1024, packing=True) == Layout(55, 18)
    assert Layout.for_modulus(CODEC, 2048, packing=False) == Layout(55, 1)
    with pytest.raises(ValueError, match="cannot hold one 55-bit slot"):
        Layout.for_modulus(CODEC, 40, packing=True)


def test_encode_is_round_of_scaled_value() -> None:
    x = np.array([0.0, 1.0, -1.5, 2.0**-25, 3 * 2.0**-25, 255.5])
    got = CODEC.encode(x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [0, 2**24, -3 * 2**23, 0, 2, 255 * 2**24 + 2**23])


def test_decode_is_exact_quotient() -> None:
    ints = [2**24, -(2**23), 3, 2**60 + 1]
    got = CODEC.decode(ints)
    assert got.tolist() == [v / 2**24 for v in ints]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match=r"x must be finite; x\[1\] = "):
        CODEC.encode(np.array([0.0, bad]))


@pytest.mark.parametrize("value", [256.0, -256.0, 1e9])
def test_encode_range_names_index_and_value(value: float) -> None:
    with pytest.raises(BudgetExceededError, match=r"x\[2\] = .* out of the codec range"):
        CODEC.encode(np.array([0.0, 1.0, value]))


def test_encode_accepts_edges() -> None:
    edge = 2.0**8 - 2.0**-24
    np.testing.assert_array_equal(CODEC.encode(np.array([edge, -edge])), [2**32 - 1, 1 - 2**32])


@pytest.mark.parametrize(
    ("x", "exc", "match"),
    [
        (np.zeros((2, 2)), ValueError, "must be 1-D"),
        (np.zeros(0), ValueError, "must not be empty"),
        (np.array(["a"]), TypeError, "real numeric vector"),
        (np.array([1j]), TypeError, "real numeric vector"),
    ],
)
def test_encode_validates_shape_and_dtype(x: np.ndarray, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        CODEC.encode(x)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"frac_bits": -1}, ValueError, "frac_bits must be in"),
        ({"max_terms": 0}, ValueError, "max_terms must be in"),
        ({"scalar_bits": 49}, ValueError, "scalar_bits must be in"),
        ({"int_bits": 1.5}, TypeError, "int_bits must be an int"),
        ({"guard_bits": True}, TypeError, "guard_bits must be an int"),
        ({"int_bits": 0, "frac_bits": 0}, ValueError, "int_bits \\+ frac_bits must be >= 1"),
    ],
)
def test_codec_validation(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        FixedPointCodec(**kwargs)  # type: ignore[arg-type]


def test_pack_unpack_roundtrip() -> None:
    layout = Layout(10, 3)
    units = [0, 1, 1023, 512, 7, 1000, 3]
    packed = pack_slots(units, layout)
    assert len(packed) == 3 and packed[0] == 0 | (1 << 10) | (1023 << 20)
    assert unpack_slots(packed, layout, len(units)) == units


@pytest.mark.parametrize("as_array", [False, True])
@pytest.mark.parametrize("width", [1, 7, 8, 16, 29, 48, 56, 63, 64, 65, 100])
@pytest.mark.parametrize("count", [1, 5, 42, 43, 150])
def test_packing_is_the_sum_of_shifted_slots_at_every_width(
    width: int, count: int, as_array: bool
) -> None:
    """numpy's byte packing (whole-byte slots up to 64 bits), its bit packing (other
    widths up to 64) and the shifts (wider) give sum(u_i << width * i) per
    integer, edge values included, from a list or an unsigned numpy array."""
    rng = np.random.default_rng(width * 1000 + count)
    slots = max(1, 2047 // width)
    layout = Layout(width, slots)
    top = (1 << width) - 1
    units = [int(v) for v in rng.integers(0, 2 ** min(width, 62), count)]
    units[0], units[-1] = top, 0 if count > 1 else top
    dtype = np.uint64 if width <= 64 else object
    packed = pack_slots(np.array(units, dtype=dtype) if as_array else units, layout)
    expected = [
        sum(u << (width * i) for i, u in enumerate(units[start : start + slots]))
        for start in range(0, count, slots)
    ]
    assert packed == expected
    assert unpack_slots(packed, layout, count) == units


@pytest.mark.parametrize("width, slots", [(1, 5), (29, 70), (48, 42), (100, 20)])
def test_layout_ones_fills_every_slot(width: int, slots: int) -> None:
    """``v * layout.ones`` is the packed integer with ``v`` in every slot."""
    layout = Layout(width, slots)
    for v in (0, 1, (1 << width) - 1, (1 << width) // 3):
        assert v * layout.ones == pack_slots([v] * slots, layout)[0]
        assert unpack_slots([v * layout.ones], layout, slots) == [v] * slots
