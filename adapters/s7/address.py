"""S7 addresses as S7 engineers write them: ``DB10.DBX2.1``, ``DB10.DBW6``, ``MW20``, ``M3.7``,
``I0.3`` / ``E0.3`` (German mnemonics), ``QW80`` / ``AW80``. The letter after the area says the
width the address reads: ``X`` a bit, ``B`` a byte, ``W`` a word (2 bytes), ``D`` a double word
(4 bytes); an area letter followed by a byte and a bit (``M3.7``) is a bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Area = Literal["DB", "M", "I", "Q"]
Width = Literal["X", "B", "W", "D"]
BYTES: dict[Width, int] = {"X": 1, "B": 1, "W": 2, "D": 4}
# German mnemonics: E (Eingang) is I, A (Ausgang) is Q.
_AREAS: dict[str, Area] = {"M": "M", "I": "I", "E": "I", "Q": "Q", "A": "Q"}

_DB = re.compile(r"DB(?P<db>\d+)\.DB(?P<width>[XBWD])(?P<byte>\d+)(?:\.(?P<bit>\d+))?")
_OTHER = re.compile(r"(?P<area>[MIEQA])(?P<width>[XBWD]?)(?P<byte>\d+)(?:\.(?P<bit>\d+))?")
MAX_DB = 65535
MAX_BYTE = 65535


@dataclass(frozen=True, slots=True)
class S7Address:
    area: Area
    db: int  # the data block's number; 0 outside DB
    byte: int
    bit: int | None  # 0..7 for a bit address
    width: Width

    def __str__(self) -> str:
        where = f"DB{self.db}.DB{self.width}" if self.area == "DB" else f"{self.area}"
        if self.area != "DB" and self.width != "X":
            where += self.width
        return f"{where}{self.byte}" + (f".{self.bit}" if self.bit is not None else "")

    @property
    def bit_offset(self) -> int:
        return 0 if self.bit is None else self.bit


def parse_address(text: str) -> S7Address:
    """The address, or ``ValueError`` with a plain sentence saying how to write it."""
    spelled = text.strip().upper().replace(" ", "")
    match = _DB.fullmatch(spelled)
    if match is not None:
        area: Area = "DB"
        db = int(match["db"])
        if not 1 <= db <= MAX_DB:
            raise ValueError(f"{text!r}: data block numbers go from 1 to {MAX_DB}")
    else:
        match = _OTHER.fullmatch(spelled)
        if match is None:
            raise ValueError(
                f"{text!r} is not an S7 address: write it as DB10.DBX2.1, DB10.DBB4, "
                "DB10.DBW6, DB10.DBD8, M3.7, MB3, MW20, MD24, I0.3 (E0.3), IW64, Q1.0 (A1.0) "
                "or QW80"
            )
        area, db = _AREAS[match["area"]], 0
    byte, bit = int(match["byte"]), match["bit"]
    width: Width = match["width"] or "X"  # type: ignore[assignment]
    if byte > MAX_BYTE:
        raise ValueError(f"{text!r}: byte offsets go up to {MAX_BYTE}")
    if width == "X":
        if bit is None:
            form = f"DB{db}.DBX{byte}.0" if area == "DB" else f"{area}{byte}.0"
            raise ValueError(f"{text!r}: a bit address needs its bit, e.g. {form}")
        if int(bit) > 7:
            raise ValueError(f"{text!r}: a byte has bits 0 to 7, not {bit}")
        return S7Address(area, db, byte, int(bit), "X")
    if bit is not None:
        raise ValueError(
            f"{text!r}: only a bit address (X, or M3.7) has a bit number; "
            f"a {'byte' if width == 'B' else 'word' if width == 'W' else 'double word'} "
            "has none"
        )
    return S7Address(area, db, byte, None, width)
