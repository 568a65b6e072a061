"""S7 data types: their size in the PLC's memory (big endian, as S7 stores them) and the
information model's type of their values.

Times are seconds (S5TIME, TIME, TIME_OF_DAY), dates and date-times ISO 8601 text (DATE,
DATE_AND_TIME, DTL: the PLC's local time, without an offset, as the PLC keeps it), strings
text (STRING: latin-1 bytes, WSTRING: UTF-16). ``STRING[n]`` and ``WSTRING[n]`` take their
two header bytes (words for WSTRING: maximum and actual length) and ``n`` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.s7.address import Width


@dataclass(frozen=True, slots=True)
class S7Type:
    name: str
    size: int  # bytes; a BOOL is one bit of a byte
    value_type: str  # gateway/delivery/sparkplug/payload.VALUE_TYPES keys
    numeric: bool = False  # scale and offset apply
    length: int | None = None  # STRING[n], WSTRING[n]: n

    @property
    def width(self) -> Width | None:
        """The address width that reads exactly this type (None: wider than a double word)."""
        if self.name == "BOOL":
            return "X"
        if self.length is not None:  # a string starts at a byte, whatever its size
            return None
        return {1: "B", 2: "W", 4: "D"}.get(self.size)  # type: ignore[return-value]


_FIXED = [
    S7Type("BOOL", 1, "bool"),
    S7Type("BYTE", 1, "uint8", True),
    S7Type("USINT", 1, "uint8", True),
    S7Type("SINT", 1, "int8", True),
    S7Type("CHAR", 1, "string"),
    S7Type("WORD", 2, "uint16", True),
    S7Type("UINT", 2, "uint16", True),
    S7Type("INT", 2, "int16", True),
    S7Type("WCHAR", 2, "string"),
    S7Type("S5TIME", 2, "float64"),
    S7Type("DATE", 2, "string"),
    S7Type("DWORD", 4, "uint32", True),
    S7Type("UDINT", 4, "uint32", True),
    S7Type("DINT", 4, "int32", True),
    S7Type("REAL", 4, "float32", True),
    S7Type("TIME", 4, "float64"),
    S7Type("TIME_OF_DAY", 4, "float64"),
    S7Type("LWORD", 8, "uint64", True),
    S7Type("ULINT", 8, "uint64", True),
    S7Type("LINT", 8, "int64", True),
    S7Type("LREAL", 8, "float64", True),
    S7Type("DATE_AND_TIME", 8, "string"),
    S7Type("DTL", 12, "string"),
]
TYPES = {t.name: t for t in _FIXED}
ALIASES = {"TOD": "TIME_OF_DAY", "DT": "DATE_AND_TIME"}
_SIZED = re.compile(r"(W?STRING)\s*\[\s*(\d+)\s*\]")
MAX_STRING = {"STRING": 254, "WSTRING": 16382}


def parse_type(text: str) -> S7Type:
    """``REAL``, ``STRING[20]``, ... (any case); ``ValueError`` with a plain sentence."""
    spelled = text.strip().upper()
    spelled = ALIASES.get(spelled, spelled)
    known = TYPES.get(spelled)
    if known is not None:
        return known
    sized = _SIZED.fullmatch(spelled)
    if sized is not None:
        kind, length = sized[1], int(sized[2])
        if not 1 <= length <= MAX_STRING[kind]:
            raise ValueError(f"{kind}[n] holds 1 to {MAX_STRING[kind]} characters, not {length}")
        unit = 2 if kind == "WSTRING" else 1
        return S7Type(kind, unit * (2 + length), "string", length=length)
    if spelled in MAX_STRING:
        raise ValueError(f"write {spelled} with its maximum length, e.g. {spelled}[20]")
    names = ", ".join([*TYPES, "STRING[n]", "WSTRING[n]"])
    raise ValueError(f"{text!r} is not an S7 type; the types are {names}")
