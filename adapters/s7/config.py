"""Device-map schema of Siemens S7 devices and points (keys: README.md beside this file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from adapters.s7.address import S7Address, parse_address
from adapters.s7.types import S7Type, parse_type
from gateway.config.schema import DeviceConfig, PointConfig
from gateway.config.types import POINT_CONFIG, Duration, FieldError, Pause, StrictModel

# The type an address reads when the map gives none: what its width holds.
DEFAULT_TYPES = {"X": "BOOL", "B": "BYTE", "W": "WORD", "D": "DWORD"}
WIDTH_NAMES = {"X": "a bit", "B": "a byte", "W": "a word (2 bytes)", "D": "a double word (4 bytes)"}


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class S7Point(PointConfig):
    address: str  # DB10.DBW6, MW20, I0.3, ... (address.py)
    type: str | None = None  # REAL, STRING[20], ... (types.py); default: what the width holds
    # An array of this many, its address its first element's (DB1.DBW40 for INTs).
    count: int | None = Field(default=None, ge=1, le=10_000)
    scale: float | None = None
    offset: float | None = None
    poll_interval: Duration | None = None  # default: the device's

    @model_validator(mode="after")
    def _rules(self) -> S7Point:
        try:
            where = parse_address(self.address)
        except ValueError as exc:
            raise FieldError("address", str(exc)) from None
        try:
            kind = parse_type(self.type or DEFAULT_TYPES[where.width])
        except ValueError as exc:
            raise FieldError("type", str(exc)) from None
        _fits(where, kind, self.address)
        if self.count is not None and kind.name == "BOOL":
            raise FieldError(
                "count", "arrays of BOOL are not read as one point: give each bit a point"
            )
        if self.count is not None and kind.length is not None:
            raise FieldError("count", f"arrays of {kind.name} are not supported: a point each")
        if self.count is not None and self.writable:
            raise FieldError("writable", "an array is not written by commands: a point each")
        if (self.scale is not None or self.offset is not None) and not kind.numeric:
            raise FieldError("scale", f"scale and offset do not apply to {kind.name}")
        if self.scale == 0:
            raise FieldError("scale", "scale 0 would make every value the offset")
        if self.writable and where.area == "I":
            raise FieldError(
                "writable", "inputs (I, E) are written by the process, not by commands"
            )
        end = where.byte + kind.size * (self.count or 1)
        if end > 65536:
            raise FieldError("address", f"the point runs past byte 65535 (to byte {end - 1})")
        return self

    @property
    def where(self) -> S7Address:
        return parse_address(self.address)

    @property
    def kind(self) -> S7Type:
        return parse_type(self.type or DEFAULT_TYPES[self.where.width])

    @property
    def size(self) -> int:
        """Bytes the point reads."""
        return self.kind.size * (self.count or 1)

    @property
    def linear(self) -> tuple[float, float]:
        """(scale, offset) of the engineering conversion: raw * scale + offset."""
        return (
            self.scale if self.scale is not None else 1.0,
            self.offset if self.offset is not None else 0.0,
        )

    @property
    def value_type(self) -> str:
        """The information model's type of its values (a Sparkplug birth declares it)."""
        base = "float64" if self.scale is not None or self.offset is not None else None
        value = base or self.kind.value_type
        return f"{value}[]" if self.count is not None else value


def _fits(where: S7Address, kind: S7Type, address: str) -> None:
    """The address's width and the type must agree: a REAL at a word address is a mistake."""
    if kind.name == "BOOL":
        if where.width != "X":
            bit = (
                f"DB{where.db}.DBX{where.byte}.0"
                if where.area == "DB"
                else f"{where.area}{where.byte}.0"
            )
            raise FieldError(
                "type", f"{address} is {WIDTH_NAMES[where.width]}: a BOOL is a bit, e.g. {bit}"
            )
        return
    if where.width == "X":
        raise FieldError(
            "type",
            f"{address} is a bit: it holds a BOOL, not {kind.name}; write "
            f"{_with_width(where, kind.width or 'B')}",
        )
    width = kind.width
    if width is not None and width != where.width:
        raise FieldError(
            "address",
            f"{kind.name} takes {kind.size} byte{'s' if kind.size > 1 else ''}, but {address} "
            f"is {WIDTH_NAMES[where.width]}: write {_with_width(where, width)}",
        )


def _with_width(where: S7Address, width: str) -> str:
    prefix = f"DB{where.db}.DB" if where.area == "DB" else where.area
    return f"{prefix}{width}{where.byte}"


DbNumber = Annotated[int, Field(ge=1, le=65535)]  # DB1 to DB65535
DbSize = Annotated[int, Field(ge=1, le=65536)]  # bytes


class S7Faults(StrictModel):
    """Device-level ``sim:`` block: faults the simulator injects (ignored by ``run``)."""

    delay: Pause = 0.0  # added to every read's answer
    drop_every: int | None = Field(default=None, ge=2)  # every Nth read answered 30 s late


class S7Device(DeviceConfig):
    protocol: Literal["s7"]
    host: str
    port: int = Field(default=102, ge=1, le=65535)
    # Rack and slot of the CPU (S7-300: slot 2; S7-400: per rack; S7-1200/1500: 0 and 1), or
    # the TSAPs of a configured connection (LOGO!, CP modules): both or neither.
    rack: int = Field(default=0, ge=0, le=7)
    slot: int = Field(default=1, ge=0, le=31)
    local_tsap: int | None = Field(default=None, ge=0, le=0xFFFF)
    remote_tsap: int | None = Field(default=None, ge=0, le=0xFFFF)
    pdu_size: int = Field(default=480, ge=240, le=960)  # requested; the PLC may give less
    max_gap: int | None = Field(default=None, ge=0, le=900)  # unused bytes worth reading
    # Data block sizes, when known: a point that runs past its block's end is a map error.
    db_sizes: Mapping[DbNumber, DbSize] | None = None
    points: Sequence[S7Point] = Field(min_length=1)
    sim: S7Faults | None = None

    @model_validator(mode="after")
    def _rules(self) -> S7Device:
        if (self.local_tsap is None) != (self.remote_tsap is None):
            raise FieldError("local_tsap", "give both local_tsap and remote_tsap, or neither")
        if self.local_tsap is not None and self.model_fields_set & {"rack", "slot"}:
            raise FieldError(
                "local_tsap", "TSAPs are instead of rack and slot: give one or the other"
            )
        if self.db_sizes:
            for index, point in enumerate(self.points):
                where = point.where
                size = self.db_sizes.get(where.db) if where.area == "DB" else None
                if size is not None and where.byte + point.size > size:
                    raise FieldError(
                        f"points.{index}.address",
                        f"{point.name} ({point.address}, {point.size} bytes) runs past the "
                        f"end of DB{where.db}: db_sizes gives it {size} bytes",
                    )
        return self

    def interval_of(self, point: S7Point) -> float:
        return point.poll_interval or self.poll_interval

    @property
    def endpoint(self) -> str:
        if self.local_tsap is not None and self.remote_tsap is not None:
            return f"{self.host}:{self.port} TSAP {self.local_tsap:#06x}/{self.remote_tsap:#06x}"
        return f"{self.host}:{self.port} rack {self.rack} slot {self.slot}"

    @property
    def gap(self) -> int:
        """Unused bytes worth reading to save a request: a request costs a round trip."""
        return self.max_gap if self.max_gap is not None else 32
