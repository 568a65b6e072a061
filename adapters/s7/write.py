"""Commands to an S7 point: the value checked against the point's type, then read, written
and read back in one uninterrupted sequence on the PLC's connection.

A BOOL is one bit of a byte the PLC program may use for other bits: the byte is read, only
the point's bit changed, and the byte written back (read-modify-write, as S7 tools do over
PUT/GET), so its neighbours keep their values. Between the read and the write the PLC's own
program could still change a neighbour; no poll of ours runs in between.
"""

from __future__ import annotations

import math

from adapters.s7.codec import Decode, Encode, text_bytes
from adapters.s7.config import S7Point
from gateway.errors import CommandError
from gateway.model import Scalar, Value

INTEGER_TYPES = {"BYTE", "USINT", "SINT", "WORD", "UINT", "INT", "DWORD", "UDINT", "DINT",
                 "LWORD", "ULINT", "LINT"}  # fmt: skip


def command_bytes(point: S7Point, encode: Encode, value: Scalar, old: bytes) -> bytes:
    """The bytes to write for ``value`` (a BOOL: its byte as read, with its bit set to the
    value), or ``CommandError`` saying why it cannot be written."""
    kind = point.kind.name
    if point.count is not None:
        raise CommandError("an array is not written by a command: write a point of one value")
    if kind == "BOOL":
        if not isinstance(value, bool) and value not in (0, 1):
            raise CommandError("expected true or false")
        mask = 1 << point.where.bit_offset
        return bytes([old[0] | mask if value else old[0] & ~mask])
    if kind in ("STRING", "WSTRING"):
        if not isinstance(value, str):
            raise CommandError("expected a string")
        return _string_bytes(point, value, old)
    if point.kind.value_type == "string" or kind in ("DATE", "DATE_AND_TIME", "DTL"):
        if not isinstance(value, str):
            raise CommandError("expected a string")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError("expected a number")
    elif not math.isfinite(value):
        raise CommandError("expected a finite number")
    elif (
        kind in INTEGER_TYPES
        and point.scale is None
        and point.offset is None
        and not float(value).is_integer()
    ):
        raise CommandError(f"expected an integer ({kind})")
    try:
        return encode(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def as_read(decode: Decode, data: bytes) -> Value | None:
    """The value ``data`` holds for the point (None when it holds none it can read)."""
    try:
        return decode(data, 0)
    except (ValueError, IndexError):
        return None


def _string_bytes(point: S7Point, text: str, old: bytes) -> bytes:
    """A STRING's or WSTRING's header and characters, and no more: the maximum length in the
    header is the PLC's declaration (kept as read; the map's ``[n]`` when the header is still
    empty), and the bytes past the text are left as they are."""
    length = point.kind.length or 0
    wide = point.kind.name == "WSTRING"
    unit, codec = (2, "utf-16-be") if wide else (1, "latin-1")
    declared = int.from_bytes(old[:unit], "big") or length
    room = min(length, declared)
    try:
        data = text_bytes(text, codec, unit, room)  # room: the string's maximum length
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    count = len(data) // unit
    return declared.to_bytes(unit, "big") + count.to_bytes(unit, "big") + data
