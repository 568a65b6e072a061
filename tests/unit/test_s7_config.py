"""S7 addresses, types and points as the map writes them, and the sentences for mistakes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from adapters.s7.address import S7Address, parse_address
from adapters.s7.config import S7Device, S7Point
from adapters.s7.types import parse_type

POINT = TypeAdapter(S7Point)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DB10.DBX2.1", S7Address("DB", 10, 2, 1, "X")),
        ("DB10.DBB4", S7Address("DB", 10, 4, None, "B")),
        ("db10.dbw6", S7Address("DB", 10, 6, None, "W")),
        ("DB10.DBD8", S7Address("DB", 10, 8, None, "D")),
        ("MW20", S7Address("M", 0, 20, None, "W")),
        ("MD24", S7Address("M", 0, 24, None, "D")),
        ("M3.7", S7Address("M", 0, 3, 7, "X")),
        ("MB3", S7Address("M", 0, 3, None, "B")),
        ("I0.3", S7Address("I", 0, 0, 3, "X")),
        ("E0.3", S7Address("I", 0, 0, 3, "X")),  # German: Eingang
        ("Q1.0", S7Address("Q", 0, 1, 0, "X")),
        ("A1.0", S7Address("Q", 0, 1, 0, "X")),  # German: Ausgang
        ("IW64", S7Address("I", 0, 64, None, "W")),
        ("EW64", S7Address("I", 0, 64, None, "W")),
        ("QW80", S7Address("Q", 0, 80, None, "W")),
        ("AW80", S7Address("Q", 0, 80, None, "W")),
    ],
)
def test_addresses_as_s7_engineers_write_them(text: str, expected: S7Address) -> None:
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected  # written back the same way


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("DB10.DBX2.8", "a byte has bits 0 to 7, not 8"),
        ("M3.9", "a byte has bits 0 to 7, not 9"),
        ("DB10.DBX2", "a bit address needs its bit, e.g. DB10.DBX2.0"),
        ("M3", "a bit address needs its bit, e.g. M3.0"),
        ("DB10.DBW6.1", "only a bit address (X, or M3.7) has a bit number; a word has none"),
        ("DB0.DBW0", "data block numbers go from 1 to 65535"),
        ("DB10.W6", "is not an S7 address: write it as DB10.DBX2.1"),
        ("Z10", "is not an S7 address"),
        ("MW70000", "byte offsets go up to 65535"),
    ],
)
def test_impossible_addresses_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as error:
        parse_address(text)
    assert says in str(error.value), str(error.value)


def test_types_and_their_sizes() -> None:
    assert (parse_type("real").size, parse_type("real").value_type) == (4, "float32")
    assert parse_type("TOD").name == "TIME_OF_DAY"
    assert parse_type("DT").size == 8
    assert parse_type("DTL").size == 12
    # STRING[n]: two header bytes (maximum and actual length), then n characters; WSTRING
    # the same in words.
    assert (parse_type("STRING[20]").size, parse_type("STRING[20]").length) == (22, 20)
    assert parse_type("WSTRING [10]").size == 24
    for wrong, says in [
        ("STRING", "write STRING with its maximum length, e.g. STRING[20]"),
        ("STRING[300]", "STRING[n] holds 1 to 254 characters, not 300"),
        ("FLOAT", "'FLOAT' is not an S7 type; the types are BOOL, BYTE"),
    ]:
        with pytest.raises(ValueError) as error:
            parse_type(wrong)
        assert says in str(error.value), str(error.value)


def _point(**keys: Any) -> S7Point:
    return POINT.validate_python({"name": "p", **keys})


def test_a_points_type_comes_from_its_width_unless_given() -> None:
    assert _point(address="DB1.DBX0.0").kind.name == "BOOL"
    assert _point(address="MB3").kind.name == "BYTE"
    assert _point(address="MW20").kind.name == "WORD"
    assert _point(address="DB1.DBD4").kind.name == "DWORD"
    real = _point(address="DB1.DBD4", type="REAL", unit="degC")
    assert (real.kind.name, real.size, real.value_type) == ("REAL", 4, "float32")
    text = _point(address="DB1.DBB10", type="STRING[20]")
    assert (text.size, text.value_type) == (22, "string")
    array = _point(address="DB1.DBW40", type="INT", count=10)  # from its first element
    assert (array.size, array.value_type) == (20, "int16[]")
    assert _point(address="IW64", type="INT", scale=0.1).value_type == "float64"


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({"address": "DB1.DBW6", "type": "REAL"},
         "REAL takes 4 bytes, but DB1.DBW6 is a word (2 bytes): write DB1.DBD6"),
        ({"address": "MD4", "type": "INT"},
         "INT takes 2 bytes, but MD4 is a double word (4 bytes): write MW4"),
        ({"address": "M3.7", "type": "INT"}, "M3.7 is a bit: it holds a BOOL, not INT"),
        ({"address": "MW2", "type": "BOOL"}, "MW2 is a word (2 bytes): a BOOL is a bit"),
        ({"address": "DB1.DBX0.0", "count": 8}, "arrays of BOOL are not read as one point"),
        ({"address": "DB1.DBB0", "type": "STRING[4]", "scale": 2},
         "scale and offset do not apply to STRING"),
        ({"address": "I0.1", "writable": True}, "inputs (I, E) are written by the process"),
        ({"address": "DB1.DBB65530", "type": "LREAL"}, "the point runs past byte 65535"),
    ],
)  # fmt: skip
def test_points_that_cannot_be_read_say_why(keys: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as error:
        _point(**keys)
    assert says in str(error.value), str(error.value)


def _device(**keys: Any) -> S7Device:
    base = {"id": "plc", "line": "l", "protocol": "s7", "host": "127.0.0.1"}
    return S7Device.model_validate({**base, **keys})


def test_a_device_by_rack_and_slot_or_by_tsaps() -> None:
    device = _device(points=[{"name": "t", "address": "DB1.DBD0", "type": "REAL"}])
    assert (device.port, device.rack, device.slot, device.pdu_size) == (102, 0, 1, 480)
    tsaps = _device(local_tsap=0x1000, remote_tsap=0x2000, points=[{"name": "t", "address": "MW0"}])
    assert (tsaps.local_tsap, tsaps.remote_tsap) == (0x1000, 0x2000)
    with pytest.raises(ValidationError, match="give both local_tsap and remote_tsap"):
        _device(local_tsap=0x1000, points=[{"name": "t", "address": "MW0"}])


def test_a_string_that_runs_past_its_data_block_is_refused_when_the_size_is_known() -> None:
    points = [{"name": "recipe", "address": "DB5.DBB90", "type": "STRING[10]"}]
    assert _device(points=points).points[0].size == 12
    with pytest.raises(ValidationError) as error:
        _device(db_sizes={5: 100}, points=points)
    assert "recipe (DB5.DBB90, 12 bytes) runs past the end of DB5: db_sizes gives it 100" in str(
        error.value
    )


def test_a_scale_of_zero_is_refused() -> None:
    with pytest.raises(ValidationError, match="scale 0 would make every value the offset"):
        _point(address="IW0", type="INT", scale=0)


def test_mistakes_a_new_user_made() -> None:
    with pytest.raises(ValidationError, match="TSAPs are instead of rack and slot"):
        _device(
            rack=0, slot=1, local_tsap=1, remote_tsap=2, points=[{"name": "t", "address": "MW0"}]
        )
    with pytest.raises(ValidationError, match="an array is not written by commands"):
        _point(address="DB1.DBW0", type="INT", count=4, writable=True)
    with pytest.raises(ValidationError, match=re.escape("write DB1.DBW7")):
        _point(address="DB1.DBX7.1", type="INT")
    with pytest.raises(ValidationError, match=re.escape("a BOOL is a bit, e.g. DB10.DBX4.0")):
        _point(address="DB10.DBB4", type="BOOL")
