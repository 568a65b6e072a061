"""Commands to a Modbus point: check the value against the point's data type, then write it.

A write is three requests under the link's lock -- read the point, write it, read it back -- so
no poll request (of this device or of another unit on the same bus) runs in between: the old
value in the audit log is the one the write replaced, and a bit inside a register is set with
the register's other bits as they were at that moment (read-modify-write).

Coils take FC 5; one register FC 6; a value over several registers FC 16, in the point's byte
and word order, with the inverse of its scale/offset (rounded to the raw integer type).
"""

from __future__ import annotations

import math
import struct
import time

from adapters.modbus.config import BIT_TABLES, ModbusDevice, ModbusPoint
from adapters.modbus.decode import PointCodec
from adapters.modbus.link import ModbusLink
from gateway.errors import CommandError, DeviceError
from gateway.model import GOOD, Reading, Scalar
from gateway.source import WriteOutcome

INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "bcd16": (0, 9_999),
    "bcd32": (0, 99_999_999),
}
FLOAT32_MAX = 3.4028234663852886e38


def command_value(point: ModbusPoint, codec: PointCodec, value: Scalar) -> Scalar:
    """The value to encode for ``point``, or ``CommandError`` saying why it cannot be written."""
    if point.table in BIT_TABLES or point.data_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CommandError("expected true or false")
    if point.data_type == "string":
        if not isinstance(value, str):
            raise CommandError("expected a string")
        room = 2 * (point.length or 1)
        if len(value.encode("utf-8")) > room:
            raise CommandError(f"too long: at most {room} bytes of UTF-8")
        return value
    if codec.enum is not None:
        if isinstance(value, str) and value in codec.labels:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in codec.enum:
            return codec.enum[value]
        raise CommandError(f"expected one of {sorted(codec.labels)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError("expected a number")
    return _numeric(point, codec, value)


def _numeric(point: ModbusPoint, codec: PointCodec, value: int | float) -> int | float:
    data_type = point.data_type
    scaling = codec.scaling
    try:  # a huge value overflows a float on the way (1e308 times a scale of 10)
        raw = value if scaling.identity else scaling.invert(value)
        finite = math.isfinite(raw)
    except OverflowError:
        raw, finite = math.inf, False
    if data_type in ("float32", "float64"):
        limit = FLOAT32_MAX if data_type == "float32" else math.inf
        if not finite or abs(raw) > limit:
            raise CommandError(f"out of range for {data_type}")
        return float(value)
    if scaling.identity and isinstance(value, float) and not value.is_integer():
        raise CommandError(f"expected an integer ({data_type})")
    low, high = INT_RANGES[data_type]
    if not finite or not low <= round(raw) <= high:
        if scaling.identity:
            raise CommandError(f"out of range for {data_type} [{low}, {high}]")
        ends = sorted((scaling.apply(low), scaling.apply(high)))
        raise CommandError(f"out of range for {data_type} [{ends[0]:g}, {ends[1]:g}]")
    return int(value) if scaling.identity else float(value)


async def write_point(
    link: ModbusLink, device: ModbusDevice, point: ModbusPoint, codec: PointCodec, value: Scalar
) -> WriteOutcome:
    """Read, write, read back, under the link's lock (see the module docstring)."""
    value = command_value(point, codec, value)
    assert point.table is not None
    table, address, width = point.table, device.address_of(point), point.width
    unit = device.unit_id
    await link.connect(device.pause_after_connect)
    async with link.lock:
        try:
            before = await link.read(table, address, width, unit)
            if table in BIT_TABLES:
                await link.write(table, address, bool(value), unit)
                expected: Scalar = bool(value)
            else:
                assert isinstance(before, bytes)
                raw = codec.encode(value, before)
                expected = _decoded(codec, raw)  # before writing: it may refuse the value
                registers = list(struct.unpack(f">{width}H", raw))
                await link.write(table, address, registers, unit)
            after = await link.read(table, address, width, unit)
        except DeviceError as exc:
            if exc.connection_lost and link.connected:
                link.failed(exc.reason)
            raise
    old, _, _ = _decode(table, codec, before)
    new, quality, reason = _decode(table, codec, after)
    reading = Reading(device.id, point.name, new, quality, time.time(), point.unit, reason)
    return WriteOutcome(old, expected, reading)


def _decode(
    table: str, codec: PointCodec, values: bytes | list[bool]
) -> tuple[Scalar | None, str, str | None]:
    if isinstance(values, list):
        return bool(values[0]), GOOD, None
    return codec.decode(values)


def _decoded(codec: PointCodec, raw: bytes) -> Scalar:
    """What the device will report after holding ``raw``: the value at its resolution."""
    value, _, reason = codec.decode(raw)
    if value is None:
        raise CommandError(f"cannot be encoded: {reason}")
    return value
