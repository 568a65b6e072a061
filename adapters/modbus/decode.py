"""Registers -> values, and values -> registers. Pure functions, no I/O.

Orders: ``byte_order`` is the order of the two bytes inside each register, ``word_order`` the order
of the registers inside a multi-register value. big/big is ABCD (the Modbus default), word little
is CDAB, byte little is BADC, both little is DCBA.

``PointCodec`` is built once per point at start-up and holds everything its decoding needs, so a
poll only slices bytes and calls it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from adapters.modbus.config import DataType, ModbusPoint, Order
from gateway.floats import shortest_float32
from gateway.model import BAD, GOOD, UNCERTAIN, Scalar, not_finite

FORMATS: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
    "bcd16": "H",
    "bcd32": "I",
}


class DecodeError(ValueError):
    """The registers hold no valid value of the point's type (e.g. a BCD nibble above 9)."""


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """The wire bytes of a block of registers (each big-endian on the wire)."""
    return struct.pack(f">{len(registers)}H", *registers)


def to_canonical(raw: bytes, byte_order: Order, word_order: Order) -> bytes:
    """Reorder a value's bytes into big-endian (ABCD) from the device's layout."""
    if byte_order == "little":
        swapped = bytearray(len(raw))
        swapped[0::2] = raw[1::2]
        swapped[1::2] = raw[0::2]
        raw = bytes(swapped)
    if word_order == "little" and len(raw) > 2:
        raw = b"".join(raw[i : i + 2] for i in range(len(raw) - 2, -1, -2))
    return raw


def from_canonical(raw: bytes, byte_order: Order, word_order: Order) -> bytes:
    """Inverse of ``to_canonical`` (both swaps are their own inverse, applied in reverse order)."""
    if word_order == "little" and len(raw) > 2:
        raw = b"".join(raw[i : i + 2] for i in range(len(raw) - 2, -1, -2))
    return to_canonical(raw, byte_order, "big")


def from_bcd(number: int) -> int:
    """0x1234 -> 1234."""
    value, factor = 0, 1
    while number:
        digit = number & 0xF
        if digit > 9:
            raise DecodeError("invalid BCD")
        value += digit * factor
        factor *= 10
        number >>= 4
    return value


def to_bcd(value: int) -> int:
    """1234 -> 0x1234."""
    number, shift = 0, 0
    for digit in reversed(str(abs(int(value)))):
        number |= int(digit) << shift
        shift += 4
    return number


def decode(
    raw: bytes, data_type: DataType, byte_order: Order, word_order: Order, trim: bool = True
) -> Scalar:
    """One value from its registers' bytes."""
    if data_type == "string":
        text = to_canonical(raw, byte_order, "big").decode("utf-8", errors="replace")
        return text.split("\x00", 1)[0].rstrip() if trim else text
    if data_type == "bool":
        return raw != b"\x00" * len(raw)
    value: int | float = struct.unpack(
        ">" + FORMATS[data_type], to_canonical(raw, byte_order, word_order)
    )[0]
    if data_type == "float32":
        value = shortest_float32(value)
    elif data_type in ("bcd16", "bcd32"):
        value = from_bcd(int(value))
    return value


def encode(
    value: Scalar, data_type: DataType, byte_order: Order, word_order: Order, length: int = 1
) -> bytes:
    """The registers' bytes holding ``value`` (used by the simulator, and by writes)."""
    if data_type == "string":
        raw = str(value).encode("utf-8")[: 2 * length].ljust(2 * length, b"\x00")
        return from_canonical(raw, byte_order, "big")
    if data_type == "bool":
        return b"\x00\x01" if value else b"\x00\x00"
    fmt = FORMATS[data_type]
    number: int | float
    if data_type in ("bcd16", "bcd32"):
        number = to_bcd(int(value))
    else:
        number = float(value) if fmt in "fd" else int(value)
    return from_canonical(struct.pack(">" + fmt, number), byte_order, word_order)


class Float32s:
    """``shortest_float32`` of the float32 values of one block answer, a few steps at once.

    ``shortest_float32`` per value is one of the hot path's larger costs. Here one ``%``
    formats every value to 7 digits and one ``struct`` round trip through float32 checks them
    all; the values 7 digits do not give back (most of a sensor's float32s) take the same two
    steps together at 8 digits, and what is left takes 9, which always round-trips. A block
    holding a possible subnormal (fewer digits may do) or a value rounded past the float32
    range takes the per-value path. The results are
    ``shortest_float32``'s (property-tested).
    """

    __slots__ = ("_format", "_struct")

    def __init__(self, count: int) -> None:
        self._format = ",".join(["%.7g"] * count)
        self._struct = struct.Struct(f">{count}f")

    def apply(self, values: list[int | float], indices: Sequence[int]) -> None:
        """Replace ``values[i]`` of each of ``indices`` (float32s) by its shortest decimal."""
        originals = tuple([values[i] for i in indices])
        decimals = self._format % originals
        # Exponents -38 and below: maybe a subnormal, which may take fewer digits.
        if "e-38" in decimals or "e-39" in decimals or "e-4" in decimals:
            self._one_by_one(values, indices)
            return
        candidates = list(map(float, decimals.split(",")))
        try:
            back = self._struct.unpack(self._struct.pack(*candidates))
        except OverflowError:  # 7 digits rounded a value past the float32 range
            self._one_by_one(values, indices)
            return
        if back != originals:
            missed = [k for k, value in enumerate(originals) if back[k] != value]
            try:
                eights = _eight_digits([originals[k] for k in missed])
                for k, candidate in zip(missed, eights, strict=True):
                    candidates[k] = candidate
            except OverflowError:
                self._one_by_one(values, indices)
                return
        for i, candidate in zip(indices, candidates, strict=True):
            values[i] = candidate

    @staticmethod
    def _one_by_one(values: list[int | float], indices: Sequence[int]) -> None:
        for i in indices:
            values[i] = shortest_float32(values[i])


def _eight_digits(values: list[float]) -> list[float]:
    """8 significant digits of each, or 9 where 8 do not give the float32 back."""
    count = len(values)
    candidates = list(map(float, (",".join(["%.8g"] * count) % tuple(values)).split(",")))
    layout = struct.Struct(f">{count}f")
    back = layout.unpack(layout.pack(*candidates))
    return [
        candidate if again == value else float("%.9g" % value)  # noqa: UP031
        for value, candidate, again in zip(values, candidates, back, strict=True)
    ]


class Scaling:
    """``raw * scale + offset``, computed so that 123 * 0.1 gives 12.3, not 12.299999999999999."""

    __slots__ = ("divisor", "offset", "scale")

    def __init__(self, scale: float, offset: float) -> None:
        self.scale = scale
        self.offset = offset
        inverse = 1.0 / scale if scale else 0.0
        exact = abs(scale) < 1 and abs(inverse - round(inverse)) < 1e-9
        self.divisor = round(inverse) if exact else 0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def apply(self, raw: float) -> float:
        value = raw / self.divisor if self.divisor else raw * self.scale
        return value + self.offset if self.offset else value

    def invert(self, value: float) -> float:
        if self.divisor:
            return (value - self.offset) * self.divisor
        return (value - self.offset) / self.scale


def shared_codec(
    point: ModbusPoint,
    byte_order: Order,
    word_order: Order,
    shared: dict[tuple[object, ...], PointCodec],
) -> PointCodec:
    """The codec of ``point``, shared (through ``shared``) with every point decoded the same way.

    A codec holds no state, and a device's thousand points usually decode in two or three ways
    (float32, int16, ...): one codec each instead of one per point keeps ~0.2 KB per point out
    of memory. Points with an enum keep their own codec (their labels differ anyway).
    """
    if point.enum is not None:
        return PointCodec(point, byte_order, word_order)
    key: tuple[object, ...] = (
        point.data_type,
        point.bit,
        byte_order,
        word_order,
        point.length,
        point.trim,
    )
    key += point.linear  # (scale, offset)
    codec = shared.get(key)
    if codec is None:
        codec = shared[key] = PointCodec(point, byte_order, word_order)
    return codec


class PointCodec:
    """Everything needed to turn one point's registers into (value, quality, reason), and back."""

    __slots__ = (
        "bit",
        "byte_order",
        "data_type",
        "enum",
        "labels",
        "length",
        "scaling",
        "trim",
        "word_order",
    )

    def __init__(self, point: ModbusPoint, byte_order: Order, word_order: Order) -> None:
        self.data_type: DataType = "uint16" if point.bit is not None else point.data_type
        self.bit = point.bit
        self.byte_order = byte_order
        self.word_order = word_order
        self.length = point.length or 1
        self.trim = point.trim
        self.scaling = Scaling(*point.linear)
        self.enum = point.enum
        self.labels = {label: number for number, label in (point.enum or {}).items()}

    def decode(self, raw: bytes) -> tuple[Scalar | None, str, str | None]:
        try:
            value = decode(raw, self.data_type, self.byte_order, self.word_order, self.trim)
        except DecodeError as exc:
            return None, BAD, str(exc)
        if self.bit is not None:
            return bool(int(value) >> self.bit & 1), GOOD, None
        if self.enum is not None:
            label = self.enum.get(int(value))
            if label is None:
                return value, UNCERTAIN, f"no enum label for {value}"
            return label, GOOD, None
        if not self.scaling.identity and not isinstance(value, bool | str):
            value = self.scaling.apply(value)
        if isinstance(value, float) and not math.isfinite(value):
            return None, BAD, not_finite(value)
        return value, GOOD, None

    def encode(self, value: Scalar, current: bytes = b"\x00\x00") -> bytes:
        """Registers for an engineering value; for a bit, ``current`` is the register it goes in."""
        if self.bit is not None:
            word = struct.unpack(">H", current)[0]
            word = word | (1 << self.bit) if value else word & ~(1 << self.bit)
            return struct.pack(">H", word)
        if self.enum is not None and isinstance(value, str):
            value = self.labels[value]
        elif not self.scaling.identity and not isinstance(value, bool | str):
            value = self.scaling.invert(value)
            if self.data_type not in ("float32", "float64"):
                value = round(value)
        return encode(value, self.data_type, self.byte_order, self.word_order, self.length)
