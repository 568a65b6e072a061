"""A point's bytes <-> its value, as S7 stores them (big endian; BCD for S5TIME and
DATE_AND_TIME). Numbers and bits by ``struct``; DTL and DATE_AND_TIME by python-snap7's
getters. Bad contents (a string header longer than its string, an impossible date) raise
``ValueError`` with the reason the point's reading carries."""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable

from snap7.util import get_date_time_object, get_dtl, set_dt, set_dtl

from adapters.s7.config import S7Point
from gateway.floats import shortest_float32
from gateway.model import Value

Decode = Callable[[bytes, int], Value]  # (data, offset) -> value

_STRUCTS = {
    "BYTE": "B", "USINT": "B", "SINT": "b", "WORD": "H", "UINT": "H", "INT": "h",
    "DWORD": "I", "UDINT": "I", "DINT": "i", "REAL": "f", "LWORD": "Q", "ULINT": "Q",
    "LINT": "q", "LREAL": "d",
}  # fmt: skip
S5_BASES = (0.01, 0.1, 1.0, 10.0)  # S5TIME's time base, by its two bits
DATE_ZERO = dt.date(1990, 1, 1)
DATE_LAST = dt.date(2168, 12, 31)  # the last a PLC's DATE takes (D#2168-12-31)
DAY_MS = 86_400_000
# What DATE_AND_TIME and DTL hold (Siemens: DT#1990-01-01 to DT#2089-12-31, DTL#1970-01-01
# to DTL#2262-04-11 23:47:16.854775807).
MOMENTS = {
    "DATE_AND_TIME": (dt.datetime(1990, 1, 1), dt.datetime(2089, 12, 31, 23, 59, 59, 999000)),
    "DTL": (dt.datetime(1970, 1, 1), dt.datetime(2262, 4, 11, 23, 47, 16, 854775)),
}


def decoder(point: S7Point) -> Decode:
    """How to read the point's value at an offset of a request's bytes."""
    kind = point.kind
    one = _scalar(point)
    if point.count is None:
        return one
    size, count = kind.size, point.count
    return lambda data, at: [one(data, at + i * size) for i in range(count)]


def _scalar(point: S7Point) -> Decode:
    kind = point.kind
    name = kind.name
    scale, offset = point.linear
    if name == "BOOL":
        bit = point.where.bit_offset
        return lambda data, at: bool(data[at] >> bit & 1)
    if name == "REAL" and (scale, offset) == (1.0, 0.0):  # as written: 0.1, not 0.100000001
        real = struct.Struct(">f").unpack_from
        return lambda data, at: shortest_float32(real(data, at)[0])
    if name in _STRUCTS:
        unpack = struct.Struct(">" + _STRUCTS[name]).unpack_from
        if (scale, offset) == (1.0, 0.0):
            return lambda data, at: unpack(data, at)[0]
        return lambda data, at: unpack(data, at)[0] * scale + offset
    if name == "CHAR":
        return lambda data, at: data[at : at + 1].decode("latin-1")
    if name == "WCHAR":
        return lambda data, at: data[at : at + 2].decode("utf-16-be")
    if name == "S5TIME":
        return _s5time
    if name == "TIME":
        return lambda data, at: struct.unpack_from(">i", data, at)[0] / 1000
    if name == "TIME_OF_DAY":
        return _time_of_day
    if name == "DATE":
        return lambda data, at: (
            DATE_ZERO + dt.timedelta(struct.unpack_from(">H", data, at)[0])
        ).isoformat()
    if name == "DATE_AND_TIME":
        return _date_and_time
    if name == "DTL":
        return lambda data, at: _moment(get_dtl, data, at, "DTL")
    assert kind.length is not None  # STRING[n], WSTRING[n]
    if name == "STRING":
        return lambda data, at: _string(data, at, kind.length or 0)
    return lambda data, at: _wstring(data, at, kind.length or 0)


def _time_of_day(data: bytes, at: int) -> float:
    millis: int = struct.unpack_from(">I", data, at)[0]
    if millis >= DAY_MS:
        raise ValueError(f"not a TIME_OF_DAY ({millis} ms is past midnight)")
    return millis / 1000


def _s5time(data: bytes, at: int) -> float:
    """Seconds: a time base in bits 12-13 and a count of three BCD digits below."""
    word: int = struct.unpack_from(">H", data, at)[0]
    digits = (word >> 8 & 0xF, word >> 4 & 0xF, word & 0xF)
    if max(digits) > 9:
        raise ValueError(f"not an S5TIME (digits {word:#06x})")
    count = digits[0] * 100 + digits[1] * 10 + digits[2]
    seconds: float = round(count * S5_BASES[word >> 12 & 0x3], 2)
    return seconds


def _date_and_time(data: bytes, at: int) -> str:
    """DATE_AND_TIME: BCD digits (checked: python-snap7 reads 0x0A as 10), the weekday in the
    last nibble."""
    digits = data[at : at + 8]
    if len(digits) < 8 or any(b >> 4 > 9 or b & 0xF > 9 for b in digits[:7]) or digits[7] >> 4 > 9:
        raise ValueError("not a valid DATE_AND_TIME")
    return _moment(get_date_time_object, data, at, "DATE_AND_TIME")


def _moment(read: Callable[[bytearray, int], dt.datetime], data: bytes, at: int, name: str) -> str:
    try:
        return read(bytearray(data), at).isoformat(timespec="milliseconds")
    except ValueError:
        raise ValueError(f"not a valid {name}") from None


def _string(data: bytes, at: int, length: int) -> str:
    """STRING[n]: its maximum (as declared in the PLC) and actual length, then latin-1."""
    declared, actual = data[at], data[at + 1]
    if actual > min(declared, length):
        raise ValueError(f"not a valid STRING (header says {actual} of {declared} characters)")
    return data[at + 2 : at + 2 + actual].decode("latin-1")


def _wstring(data: bytes, at: int, length: int) -> str:
    declared, actual = struct.unpack_from(">HH", data, at)
    if actual > min(declared, length):
        raise ValueError(f"not a valid WSTRING (header says {actual} of {declared} characters)")
    try:
        return data[at + 4 : at + 4 + 2 * actual].decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError("not a valid WSTRING (broken UTF-16)") from None


Encode = Callable[[Value], bytes]  # a value -> the point's bytes (a BOOL: its byte's bit set)


def encoder(point: S7Point) -> Encode:
    """The point's bytes for a value (the simulator; writes). ``ValueError`` for a value the
    type cannot hold. A BOOL gives one byte with only its bit set, to be merged by the
    caller into the byte it shares with its neighbours."""
    scalar = _scalar_encoder(point)

    def one(value: Value) -> bytes:
        try:
            return scalar(value)
        except (struct.error, OverflowError, ZeroDivisionError):
            raise ValueError(f"{value!r} is out of range for {point.kind.name}") from None

    if point.count is None:
        return one
    count = point.count

    def array(value: Value) -> bytes:
        if not isinstance(value, list) or len(value) != count or None in value:
            raise ValueError(f"expected a list of {count} values")
        return b"".join(one(v) for v in value if v is not None)

    return array


def _scalar_encoder(point: S7Point) -> Encode:
    kind = point.kind
    name = kind.name
    scale, offset = point.linear
    if name == "BOOL":
        bit = point.where.bit_offset
        return lambda value: bytes([1 << bit if value else 0])
    if name in _STRUCTS:
        pack = struct.Struct(">" + _STRUCTS[name]).pack
        floating = name in ("REAL", "LREAL")

        def number(value: Value) -> bytes:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("expected a number")
            raw = (value - offset) / scale if (scale, offset) != (1.0, 0.0) else value
            try:
                return pack(raw if floating else round(raw))
            except (struct.error, OverflowError):
                raise ValueError(f"{value!r} is out of range for {name} [{span}]") from None

        span = _span(_STRUCTS[name], scale, offset)
        return number
    if name in ("CHAR", "WCHAR"):
        codec, size = ("latin-1", 1) if name == "CHAR" else ("utf-16-be", 2)
        return lambda value: _char(value, codec, size)
    if name == "S5TIME":
        return _s5time_bytes
    if name == "TIME":
        return _time_bytes
    if name == "TIME_OF_DAY":
        return _time_of_day_bytes
    if name == "DATE":
        return _date_bytes
    if name == "DATE_AND_TIME":
        return lambda value: _set_moment(set_dt, "DATE_AND_TIME", 8, value)
    if name == "DTL":
        return lambda value: _set_moment(set_dtl, "DTL", 12, value)
    length = kind.length or 0
    if name == "STRING":
        return lambda value: (
            bytes([length, len(text_bytes(value, "latin-1", 1, length))])
            + text_bytes(value, "latin-1", 1, length).ljust(length, b"\0")
        )
    return lambda value: _wstring_bytes(value, length)


def _wstring_bytes(value: Value, length: int) -> bytes:
    """The header (maximum and actual length, in UTF-16 words: a character outside the BMP
    takes two) and the text."""
    data = text_bytes(value, "utf-16-be", 2, length)
    return struct.pack(">HH", length, len(data) // 2) + data.ljust(2 * length, b"\0")


def _char(value: Value, codec: str, size: int) -> bytes:
    data = text_bytes(value, codec, size, 1)
    if len(data) != size:
        raise ValueError(f"expected one character, not {str(value)!r}")
    return data


def _date_bytes(value: Value) -> bytes:
    try:
        date = dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date") from None
    if not DATE_ZERO <= date <= DATE_LAST:
        raise ValueError(f"{value} is outside what a DATE holds (1990-01-01 to 2168-12-31)")
    return struct.pack(">H", (date - DATE_ZERO).days)


def text_bytes(value: Value, codec: str, unit: int, length: int) -> bytes:
    """A text in ``codec``, of at most ``length`` characters of ``unit`` bytes."""
    text = str(value)
    try:
        data = text.encode(codec)
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} has characters a {codec} string cannot hold") from None
    if len(data) > unit * length:
        raise ValueError(f"{text!r} is longer than {length} character{'s' if length > 1 else ''}")
    return data


def _span(code: str, scale: float, offset: float) -> str:
    """What a number type holds, in the point's engineering units: "-3276.8, 3276.7"."""
    if code in "fd":
        top = 3.4028234663852886e38 if code == "f" else 1.7976931348623157e308
        low, high = -top * abs(scale) + offset, top * abs(scale) + offset
    else:
        bits = 8 * struct.calcsize(code)
        ends = (-(1 << bits - 1), (1 << bits - 1) - 1) if code.islower() else (0, (1 << bits) - 1)
        low, high = sorted(end * scale + offset for end in ends)
    return f"{low:g}, {high:g}"


def _time_bytes(value: Value) -> bytes:
    """TIME: signed milliseconds, about ±24.8 days."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number of seconds")
    try:
        return struct.pack(">i", round(value * 1000))
    except struct.error:
        raise ValueError(
            f"{value!r} s is out of range for TIME [-2147483.648, 2147483.647]"
        ) from None


def _time_of_day_bytes(value: Value) -> bytes:
    millis = (
        round(value * 1000)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else -1
    )
    if not 0 <= millis < DAY_MS:
        raise ValueError("expected seconds since midnight, 0 to 86399.999")
    return struct.pack(">I", millis)


def _s5time_bytes(value: Value) -> bytes:
    """The finest time base that holds the seconds in three BCD digits."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("expected a number of seconds, 0 to 9990")
    for base, step in enumerate(S5_BASES):
        count = round(value / step)
        if count <= 999:
            digits = f"{count:03d}"
            return struct.pack(">H", base << 12 | int(digits, 16))
    raise ValueError(f"{value!r} s is more than an S5TIME holds (9990 s)")


def _set_moment(
    write: Callable[[bytearray, int, dt.datetime], object], name: str, size: int, value: Value
) -> bytes:
    """A local date and time as the PLC keeps it: an offset is refused (the PLC's clock has
    none, and the gateway does not know the PLC's zone), so is a moment the type cannot hold."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date and time") from None
    if moment.tzinfo is not None:
        raise ValueError(f"{value!r}: give the PLC's local time, without an offset")
    first, last = MOMENTS[name]
    if not first <= moment <= last:
        raise ValueError(
            f"{value} is outside what a {name} holds ({first.date()} to {last.date()})"
        )
    data = bytearray(size)
    write(data, 0, moment)
    return bytes(data)
