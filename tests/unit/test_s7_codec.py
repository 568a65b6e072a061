"""S7 values from the bytes a PLC keeps (big endian, BCD where S7 uses it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
from typing import Any

import pytest
from pydantic import TypeAdapter
from snap7.util import set_dt, set_dtl

from adapters.s7.codec import decoder, encoder
from adapters.s7.config import S7Device, S7Point
from adapters.s7.source import S7Source
from adapters.s7.write import command_bytes
from gateway.commands.execute import execute
from gateway.errors import CommandError

POINT = TypeAdapter(S7Point)


def _read(data: bytes, at: int = 0, **keys: Any) -> Any:
    point = POINT.validate_python({"name": "p", **keys})
    return decoder(point)(data, at)


@pytest.mark.parametrize(
    ("keys", "data", "value"),
    [
        ({"address": "DB1.DBX0.3"}, b"\x08", True),
        ({"address": "DB1.DBX0.2"}, b"\x08", False),
        ({"address": "DB1.DBB0"}, b"\xfe", 254),
        ({"address": "DB1.DBB0", "type": "SINT"}, b"\xfe", -2),
        ({"address": "DB1.DBB0", "type": "CHAR"}, b"A", "A"),
        ({"address": "DB1.DBW0"}, b"\xbe\xef", 0xBEEF),
        ({"address": "DB1.DBW0", "type": "INT"}, b"\xff\xfe", -2),
        ({"address": "DB1.DBW0", "type": "WCHAR"}, "€".encode("utf-16-be"), "€"),
        ({"address": "DB1.DBD0", "type": "DINT"}, struct.pack(">i", -100000), -100000),
        ({"address": "DB1.DBD0", "type": "REAL"}, struct.pack(">f", 1.5), 1.5),
        ({"address": "DB1.DBD0"}, b"\xde\xad\xbe\xef", 0xDEADBEEF),
        ({"address": "DB1.DBB0", "type": "LREAL"}, struct.pack(">d", -2.25), -2.25),
        ({"address": "DB1.DBB0", "type": "LINT"}, struct.pack(">q", -(2**40)), -(2**40)),
        ({"address": "DB1.DBB0", "type": "ULINT"}, struct.pack(">Q", 2**63), 2**63),
        # S5TIME: a time base (10 ms, 100 ms, 1 s, 10 s) and three BCD digits.
        ({"address": "DB1.DBW0", "type": "S5TIME"}, b"\x21\x23", 123.0),
        ({"address": "DB1.DBW0", "type": "S5TIME"}, b"\x10\x05", 0.5),
        ({"address": "DB1.DBD0", "type": "TIME"}, struct.pack(">i", -1234), -1.234),
        ({"address": "DB1.DBD0", "type": "TOD"}, struct.pack(">I", 3_600_500), 3600.5),
        ({"address": "DB1.DBW0", "type": "DATE"}, struct.pack(">H", 12_783), "2024-12-31"),
        ({"address": "DB1.DBB0", "type": "STRING[10]"}, b"\x0a\x05hello\0\0\0\0\0", "hello"),
        ({"address": "DB1.DBB0", "type": "WSTRING[4]"},
         b"\x00\x04\x00\x03" + "hé€".encode("utf-16-be") + b"\0\0", "hé€"),
        ({"address": "DB1.DBW0", "type": "INT", "count": 3}, struct.pack(">3h", 1, -2, 3),
         [1, -2, 3]),
        ({"address": "IW0", "type": "INT", "scale": 0.1, "offset": 1}, struct.pack(">h", 250),
         26.0),
    ],
)  # fmt: skip
def test_each_type_from_its_bytes(keys: dict[str, Any], data: bytes, value: Any) -> None:
    assert _read(b"\x99" + data, 1, **keys) == value  # at an offset of a request's bytes


def test_dates_and_times_as_iso_text() -> None:
    moment = dt.datetime(2024, 2, 29, 23, 59, 58, 123000)
    data = bytearray(12)
    set_dtl(data, 0, moment)
    assert _read(bytes(data), address="DB1.DBB0", type="DTL") == "2024-02-29T23:59:58.123"
    data = bytearray(8)
    set_dt(data, 0, moment)
    assert _read(bytes(data), address="DB1.DBB0", type="DT") == "2024-02-29T23:59:58.123"


@pytest.mark.parametrize(
    ("keys", "data", "says"),
    [
        ({"address": "DB1.DBB0", "type": "STRING[4]"}, b"\x04\x09abcd", "not a valid STRING"),
        ({"address": "DB1.DBB0", "type": "WSTRING[2]"}, b"\x00\x02\x00\x01\xd8\x00",
         "not a valid WSTRING"),
        ({"address": "DB1.DBW0", "type": "S5TIME"}, b"\x00\xaa", "not an S5TIME"),
        ({"address": "DB1.DBB0", "type": "DTL"}, b"\x07\xe8\x0d" + bytes(9), "not a valid DTL"),
    ],
)  # fmt: skip
def test_contents_that_are_not_what_the_type_says_are_refused(
    keys: dict[str, Any], data: bytes, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        _read(data, **keys)


@pytest.mark.parametrize(
    ("keys", "value"),
    [
        ({"address": "DB1.DBB0", "type": "SINT"}, -5),
        ({"address": "DB1.DBW0", "type": "INT"}, -1234),
        ({"address": "DB1.DBD0", "type": "REAL"}, 21.5),
        ({"address": "DB1.DBB0", "type": "LREAL"}, -2.25),
        ({"address": "DB1.DBB0", "type": "ULINT"}, 2**64 - 1),
        ({"address": "DB1.DBW0", "type": "S5TIME"}, 123.0),
        ({"address": "DB1.DBW0", "type": "S5TIME"}, 0.5),
        ({"address": "DB1.DBD0", "type": "TIME"}, -1.234),
        ({"address": "DB1.DBD0", "type": "TOD"}, 3600.5),
        ({"address": "DB1.DBW0", "type": "DATE"}, "2024-12-31"),
        ({"address": "DB1.DBB0", "type": "DT"}, "2024-02-29T23:59:58.123"),
        ({"address": "DB1.DBB0", "type": "DTL"}, "2024-02-29T23:59:58.123"),
        ({"address": "DB1.DBB0", "type": "CHAR"}, "Z"),
        ({"address": "DB1.DBB0", "type": "STRING[10]"}, "BRKT-2041"),
        ({"address": "DB1.DBB0", "type": "WSTRING[6]"}, "Größe€"),
        ({"address": "DB1.DBW0", "type": "INT", "count": 3}, [1, -2, 3]),
        ({"address": "IW0", "type": "INT", "scale": 0.1}, 25.0),
    ],
)
def test_what_is_written_reads_back(keys: dict[str, Any], value: Any) -> None:
    point = POINT.validate_python({"name": "p", **keys})
    assert decoder(point)(encoder(point)(value), 0) == value


def test_values_a_type_cannot_hold_are_refused_with_what_it_holds() -> None:
    for keys, value, says in [
        ({"address": "DB1.DBW0", "type": "INT"}, 40000, r"INT \[-32768, 32767\]"),
        # a scaled point: the range in its engineering units, as a command gives them
        ({"address": "DB1.DBW0", "type": "INT", "scale": 0.1}, 5000, r"INT \[-3276.8, 3276.7\]"),
        ({"address": "DB1.DBB0", "type": "BYTE", "scale": -2, "offset": 1}, 9, r"\[-509, 1\]"),
        ({"address": "DB1.DBD0", "type": "REAL"}, 1e39, r"REAL \[-3.40282e\+38, 3.40282e\+38\]"),
        ({"address": "DB1.DBD0", "type": "TIME"}, 3e6, r"TIME \[-2147483.648, 2147483.647\]"),
        ({"address": "DB1.DBB0", "type": "STRING[4]"}, "too long", "longer than 4 characters"),
        ({"address": "DB1.DBW0", "type": "S5TIME"}, 10_000, "more than an S5TIME holds"),
        ({"address": "DB1.DBB0", "type": "CHAR"}, "€", "cannot hold"),
    ]:
        point = POINT.validate_python({"name": "p", **keys})
        with pytest.raises(ValueError, match=says):
            encoder(point)(value)


def test_what_the_review_found() -> None:
    # A WSTRING's actual length counts UTF-16 words: a character outside the BMP takes two.
    point = POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "WSTRING[4]"})
    data = encoder(point)("ab😀")
    assert data[:4] == b"\x00\x04\x00\x04"
    assert decoder(point)(data, 0) == "ab😀"
    # A DATE holds 1990-01-01 to 2168-12-31; outside, a plain refusal, not a struct error.
    date = POINT.validate_python({"name": "p", "address": "DB1.DBW0", "type": "DATE"})
    for outside in ("1989-12-31", "2169-01-01", "yesterday"):
        with pytest.raises(ValueError):
            encoder(date)(outside)
    # DATE_AND_TIME's digits are BCD: 0x0A is no month.
    moment = POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "DT"})
    with pytest.raises(ValueError, match="not a valid DATE_AND_TIME"):
        decoder(moment)(bytes([0x24, 0x0A, 0x01, 0, 0, 0, 0, 0x01]), 0)
    # A CHAR is one character.
    char = POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "CHAR"})
    with pytest.raises(ValueError, match="expected one character"):
        encoder(char)("")


def test_what_the_second_review_found() -> None:
    # TIME_OF_DAY stays within a day: 86399.9996 s rounds to midnight, which is no time of day.
    tod = POINT.validate_python({"name": "p", "address": "DB1.DBD0", "type": "TOD"})
    with pytest.raises(ValueError, match="seconds since midnight"):
        encoder(tod)(86399.9996)
    with pytest.raises(ValueError, match="past midnight"):
        decoder(tod)(struct.pack(">I", 86_400_000), 0)
    # A STRING of 2 characters takes 4 bytes, yet starts at a byte address like any string.
    assert POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "STRING[2]"})
    # Dates and times: what the type holds, in the PLC's local time, without an offset.
    dtl = POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "DTL"})
    moment = POINT.validate_python({"name": "p", "address": "DB1.DBB0", "type": "DT"})
    for point, value, says in [
        (dtl, "1969-12-31T23:59:59", "outside what a DTL holds"),
        (moment, "1989-12-31T23:59:59", "outside what a DATE_AND_TIME holds"),
        (moment, "2090-01-01T00:00:00", "outside what a DATE_AND_TIME holds"),
        (dtl, "2024-02-29T12:00:00+02:00", "without an offset"),
    ]:
        with pytest.raises(ValueError, match=says):
            encoder(point)(value)


@pytest.mark.parametrize(
    ("keys", "value", "data"),
    [
        # S5TIME: time base 1 s (bits 12-13 = 2), BCD count 123
        ({"address": "DB1.DBW0", "type": "S5TIME"}, 123.0, bytes.fromhex("2123")),
        # S5TIME: 0.5 s is 50 x 10 ms (base 0)
        ({"address": "DB1.DBW0", "type": "S5TIME"}, 0.5, bytes.fromhex("0050")),
        # DATE_AND_TIME: BCD year, month, day, hour, minute, second, ms and weekday (Thursday = 5)
        ({"address": "DB1.DBB0", "type": "DT"}, "2024-02-29T23:59:58.123",
         bytes.fromhex("2402292359581235")),
        # DTL: year (word), month, day, weekday (Thursday = 5), hour, minute, second, ns (dword)
        ({"address": "DB1.DBB0", "type": "DTL"}, "2024-02-29T23:59:58.123",
         bytes.fromhex("07e8021d05173b3a") + (123_000_000).to_bytes(4, "big")),
        ({"address": "DB1.DBW0", "type": "DATE"}, "1990-01-02", bytes.fromhex("0001")),
        ({"address": "DB1.DBD0", "type": "TIME"}, -1.5, (-1500).to_bytes(4, "big", signed=True)),
    ],
)  # fmt: skip
def test_times_are_the_bytes_siemens_documents(
    keys: dict[str, Any], value: Any, data: bytes
) -> None:
    point = POINT.validate_python({"name": "p", **keys})
    assert encoder(point)(value) == data
    assert decoder(point)(data, 0) == value


def test_a_string_write_keeps_the_plcs_declared_length_and_the_bytes_after_the_text() -> None:
    point = POINT.validate_python(
        {"name": "p", "address": "DB1.DBB0", "type": "STRING[8]", "writable": True}
    )
    old = b"\x1e\x03abc" + b"X" * 5  # the PLC declares STRING[30]; the map reads 8 of it
    data = command_bytes(point, encoder(point), "xy", old)
    assert data == b"\x1e\x02xy"  # the header's maximum as the PLC has it; nothing after
    declared_short = b"\x04\x00" + b"\0" * 8  # the PLC declares STRING[4]: 4 at most
    with pytest.raises(CommandError, match="longer than 4 characters"):
        command_bytes(point, encoder(point), "ABCDEF", declared_short)
    wide = POINT.validate_python(
        {"name": "w", "address": "DB1.DBB0", "type": "WSTRING[4]", "writable": True}
    )
    data = command_bytes(wide, encoder(wide), "é😀", b"\x00\x0a\x00\x00" + b"\0" * 8)
    assert data == b"\x00\x0a\x00\x03" + "é😀".encode("utf-16-be")


def test_a_value_a_point_cannot_take_is_refused_as_such_while_the_plc_is_down() -> None:
    device = S7Device.model_validate(
        {"id": "plc", "line": "l", "protocol": "s7", "host": "127.0.0.1", "points": [
            {"name": "speed", "address": "DB1.DBW0", "type": "INT", "writable": True},
            {"name": "recipe", "address": "DB1.DBB2", "type": "STRING[4]", "writable": True},
        ]}
    )  # fmt: skip
    source = S7Source(device)  # never connected

    def attempt(point: str, value: Any) -> tuple[str, str | None]:
        result, _ = asyncio.run(execute(device, source, point, value, "x"))
        return result.outcome, result.error

    assert attempt("speed", 40000) == ("refused", "40000 is out of range for INT [-32768, 32767]")
    assert attempt("recipe", "too long") == ("refused", "'too long' is longer than 4 characters")
    assert attempt("speed", 12) == ("failed", "device disconnected: not connected yet")
