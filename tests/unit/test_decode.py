"""Decoding of every type in every byte/word order, against hand-written register vectors."""

from __future__ import annotations

import struct

import pytest

from adapters.modbus.config import POINT
from adapters.modbus.decode import (
    PointCodec,
    Scaling,
    decode,
    encode,
    registers_to_bytes,
    shared_codec,
)
from gateway.model import BAD, GOOD, UNCERTAIN

# 123456.0 as float32 is 0x47F12000: A=47 B=F1 C=20 D=00.
FLOAT32_LAYOUTS = [
    ("big", "big", [0x47F1, 0x2000]),  # ABCD
    ("big", "little", [0x2000, 0x47F1]),  # CDAB
    ("little", "big", [0xF147, 0x0020]),  # BADC
    ("little", "little", [0x0020, 0xF147]),  # DCBA
]


@pytest.mark.parametrize(("byte_order", "word_order", "registers"), FLOAT32_LAYOUTS)
def test_float32_layouts(byte_order: str, word_order: str, registers: list[int]) -> None:
    raw = registers_to_bytes(registers)
    assert decode(raw, "float32", byte_order, word_order) == 123456.0  # type: ignore[arg-type]
    assert encode(123456.0, "float32", byte_order, word_order) == raw  # type: ignore[arg-type]


# 0x0102030405060708 as uint64, in the four 64-bit layouts.
UINT64_LAYOUTS = [
    ("big", "big", [0x0102, 0x0304, 0x0506, 0x0708]),
    ("big", "little", [0x0708, 0x0506, 0x0304, 0x0102]),
    ("little", "big", [0x0201, 0x0403, 0x0605, 0x0807]),
    ("little", "little", [0x0807, 0x0605, 0x0403, 0x0201]),
]


@pytest.mark.parametrize(("byte_order", "word_order", "registers"), UINT64_LAYOUTS)
def test_uint64_layouts(byte_order: str, word_order: str, registers: list[int]) -> None:
    raw = registers_to_bytes(registers)
    assert decode(raw, "uint64", byte_order, word_order) == 0x0102030405060708  # type: ignore[arg-type]
    assert encode(0x0102030405060708, "uint64", byte_order, word_order) == raw  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data_type", "registers", "value"),
    [
        ("int16", [0xFFFE], -2),
        ("uint16", [0xFFFE], 65534),
        ("int32", [0xFFFE, 0x7960], -100000),
        ("uint32", [0xEE6B, 0x2800], 4_000_000_000),
        ("int64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
        ("float64", [0x4009, 0x21FB, 0x5444, 0x2D18], 3.141592653589793),
        ("float32", [0x3DCC, 0xCCCD], 0.1),  # published as 0.1, not 0.10000000149011612
        ("float32", [0xC150, 0x0000], -13.0),
        ("bool", [0x0000], False),
        ("bool", [0x0100], True),
        ("string", [0x4142, 0x4344, 0x4500, 0x0000], "ABCDE"),
        ("string", [0x4142, 0x2020], "AB"),  # trailing spaces trimmed
    ],
)
def test_types_big_endian(data_type: str, registers: list[int], value: object) -> None:
    result = decode(registers_to_bytes(registers), data_type, "big", "big")  # type: ignore[arg-type]
    assert result == value
    assert type(result) is type(value)


def test_string_with_swapped_bytes() -> None:
    raw = registers_to_bytes([0x4241, 0x4443])  # "ABCD" with bytes swapped in each register
    assert decode(raw, "string", "little", "big") == "ABCD"
    assert encode("ABCD", "string", "little", "big", length=2) == raw


def test_string_is_padded_and_cut_to_length() -> None:
    assert encode("AB", "string", "big", "big", length=2) == b"AB\x00\x00"
    assert encode("ABCDEF", "string", "big", "big", length=2) == b"ABCD"


def test_nan_float32_stays_nan() -> None:
    value = decode(struct.pack(">f", float("nan")), "float32", "big", "big")
    assert isinstance(value, float) and value != value


@pytest.mark.parametrize(
    ("scale", "offset", "raw", "value"),
    [
        (0.1, 0.0, 123, 12.3),
        (0.1, 0.0, 3, 0.3),
        (0.01, 0, 125, 1.25),
        (2.0, 1.0, 10, 21.0),
        (0.5, -10, 100, 40.0),
    ],
)
def test_scaling_is_exact_for_decimal_scales(
    scale: float, offset: float, raw: int, value: float
) -> None:
    scaling = Scaling(scale, offset)
    assert scaling.apply(raw) == value
    assert scaling.invert(value) == pytest.approx(raw)


# Every type in every byte order x word order: canonical (ABCD...) registers per type, and the
# layout each order gives, built independently of the implementation from the definitions.
CANONICAL = [
    ("int16", [0xFFFE], -2),
    ("uint16", [0xFFFE], 65534),
    ("bcd16", [0x1234], 1234),
    ("int32", [0xFFFE, 0x7960], -100000),
    ("uint32", [0xEE6B, 0x2800], 4_000_000_000),
    ("float32", [0x47F1, 0x2000], 123456.0),
    ("bcd32", [0x1234, 0x5678], 12345678),
    ("int64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    ("uint64", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
    ("float64", [0x4009, 0x21FB, 0x5444, 0x2D18], 3.141592653589793),
]


def _layout(registers: list[int], byte_order: str, word_order: str) -> list[int]:
    words = list(registers)
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


@pytest.mark.parametrize(("data_type", "canonical", "value"), CANONICAL)
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_every_type_in_every_order(
    data_type: str, canonical: list[int], value: object, byte_order: str, word_order: str
) -> None:
    raw = registers_to_bytes(_layout(canonical, byte_order, word_order))
    decoded = decode(raw, data_type, byte_order, word_order)  # type: ignore[arg-type]
    assert decoded == value
    assert type(decoded) is type(value)
    assert encode(value, data_type, byte_order, word_order) == raw  # type: ignore[arg-type]


def _codec(**point: object) -> PointCodec:
    spec = {"name": "p", "table": "holding", "address": 0, **point}
    return PointCodec(POINT.validate_python(spec), "big", "big")


def test_points_decoded_alike_share_one_codec() -> None:
    def point(**keys: object) -> object:
        return POINT.validate_python({"name": "p", "table": "holding", "address": 0, **keys})

    shared: dict[tuple[object, ...], PointCodec] = {}

    def codec(order: str = "big", **keys: object) -> PointCodec:
        return shared_codec(point(**keys), order, "big", shared)  # type: ignore[arg-type]

    first = codec(type="float32")
    assert codec(type="float32", name="q", address=7) is first
    assert codec(type="int16") is not first
    assert codec(type="float32", scale=0.1) is not first
    assert codec(type="float32", scale=0.1) is codec(type="float32", scale=0.1)
    assert codec("little", type="float32") is not first
    assert codec(bit=3) is not codec(bit=4)
    # What they decode is each point's own: the scaled one scales, the bits are their own.
    raw = struct.pack(">f", 2.5)
    assert codec(type="float32", scale=0.1).decode(raw)[0] == pytest.approx(0.25)
    assert first.decode(raw) == (2.5, GOOD, None)
    assert codec(bit=1).decode(b"\x00\x02") == (True, GOOD, None)
    # Enum points keep their own codec, labels and all.
    labels = {0: "idle", 1: "run"}
    assert codec(type="uint16", enum=labels) is not codec(type="uint16", enum=labels)


def test_points_are_slotted_records() -> None:
    """A map can hold 100,000 points: each is a slotted record, with no per-point ``__dict__``
    (a model's costs ~1 KB more per point)."""
    point = POINT.validate_python({"name": "p", "address": 40001, "type": "float32"})
    assert not hasattr(point, "__dict__")
    assert (point.table, point.address, point.width) == ("holding", 0, 2)
    with pytest.raises(AttributeError):
        point.address = 3  # type: ignore[misc]


def test_bit_of_a_register() -> None:
    word = registers_to_bytes([0b1000_0000_0000_0100])
    assert _codec(bit=2).decode(word) == (True, GOOD, None)
    assert _codec(bit=3).decode(word) == (False, GOOD, None)
    assert _codec(bit=15).decode(word) == (True, GOOD, None)
    assert _codec(bit=3).encode(True, word) == registers_to_bytes([0b1000_0000_0000_1100])


def test_enum_labels() -> None:
    codec = _codec(type="uint16", enum={0: "idle", 1: "running", 3: "fault"})
    assert codec.decode(registers_to_bytes([3])) == ("fault", GOOD, None)
    assert codec.decode(registers_to_bytes([2])) == (2, UNCERTAIN, "no enum label for 2")
    assert codec.encode("running") == registers_to_bytes([1])


def test_linear_scaling_raw_to_engineering() -> None:
    # A 4-20 mA input card: raw 0..27648 is 0..10 bar.
    codec = _codec(type="int16", raw_min=0, raw_max=27648, eng_min=0, eng_max=10)
    assert codec.decode(registers_to_bytes([13824])) == (5.0, GOOD, None)
    assert codec.encode(10.0) == registers_to_bytes([27648])
    offset = _codec(type="int16", raw_min=4000, raw_max=20000, eng_min=-50, eng_max=150)
    assert offset.decode(registers_to_bytes([12000]))[0] == pytest.approx(50.0)


def test_invalid_bcd_is_a_bad_reading() -> None:
    assert _codec(type="bcd16").decode(registers_to_bytes([0x12A4])) == (None, BAD, "invalid BCD")


def test_string_without_trim_keeps_padding() -> None:
    raw = registers_to_bytes([0x4142, 0x2000])
    assert _codec(type="string", length=2, trim=False).decode(raw)[0] == "AB \x00"
    assert _codec(type="string", length=2).decode(raw)[0] == "AB"
