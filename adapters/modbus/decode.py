"""Registers -> values, and values -> registers. Pure functions, no I/O.

Orders: ``byte_order`` is the order of the two bytes inside each register, ``word_order`` the order
of the registers inside a multi-register value. big/big is ABCD (the Modbus default), word little
is CDAB, byte little is BADC, both little is DCBA.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from adapters.modbus.config import DataType, Order

FORMATS: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}

Value = bool | int | float | str


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


def decode(raw: bytes, data_type: DataType, byte_order: Order, word_order: Order) -> Value:
    """One value from its registers' bytes."""
    if data_type == "string":
        text = to_canonical(raw, byte_order, "big")
        return text.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()
    if data_type == "bool":
        return raw != b"\x00\x00"
    value: int | float = struct.unpack(
        ">" + FORMATS[data_type], to_canonical(raw, byte_order, word_order)
    )[0]
    if data_type == "float32":
        value = shortest_float32(value)
    return value


def encode(
    value: Value, data_type: DataType, byte_order: Order, word_order: Order, length: int = 1
) -> bytes:
    """The registers' bytes holding ``value`` (used by the simulator, and by writes later)."""
    if data_type == "string":
        raw = str(value).encode("utf-8")[: 2 * length].ljust(2 * length, b"\x00")
        return from_canonical(raw, byte_order, "big")
    if data_type == "bool":
        return b"\x00\x01" if value else b"\x00\x00"
    fmt = FORMATS[data_type]
    number = float(value) if fmt in "fd" else int(value)
    return from_canonical(struct.pack(">" + fmt, number), byte_order, word_order)


def shortest_float32(value: float) -> float:
    """The shortest decimal giving the same float32: 0.1f publishes as 0.1, not 0.10000000149."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    packed = struct.pack(">f", value)
    for digits in (6, 7, 8):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value


class Scaling:
    """``raw * scale + offset``, computed so that 123 * 0.1 gives 12.3, not 12.299999999999999."""

    __slots__ = ("divisor", "offset", "scale")

    def __init__(self, scale: float, offset: float) -> None:
        self.scale = scale
        self.offset = offset
        inverse = 1.0 / scale if scale else 0.0
        self.divisor = (
            round(inverse) if abs(scale) < 1 and abs(inverse - round(inverse)) < 1e-9 else 0
        )

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def apply(self, raw: float) -> float:
        value = raw / self.divisor if self.divisor else raw * self.scale
        return value + self.offset if self.offset else value

    def invert(self, value: float) -> float:
        return (
            (value - self.offset) * self.divisor
            if self.divisor
            else (value - self.offset) / self.scale
        )
