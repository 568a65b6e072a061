"""Device-map schema of Modbus devices and points (see docs/device-map.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from gateway.config.schema import DeviceConfig, PointConfig
from gateway.errors import GatewayError

Table = Literal["coil", "discrete_input", "input", "holding"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
Order = Literal["big", "little"]

BIT_TABLES = ("coil", "discrete_input")
# Registers (16 bit) each type takes; a string takes `length` registers.
REGISTERS = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}


class FieldError(ValueError):
    """A cross-field rule broken by one named key: the error is reported at that key's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ModbusPoint(PointConfig):
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType | None = None  # default: bool in coil/discrete_input tables
    length: int | None = Field(default=None, ge=1, le=125)
    byte_order: Order | None = None  # default: the device's
    word_order: Order | None = None  # default: the device's
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _type_fits_table(self) -> ModbusPoint:
        if self.table in BIT_TABLES:
            if self.type not in (None, "bool"):
                raise FieldError(
                    "type",
                    f"type {self.type} is impossible in table {self.table}: "
                    "coils and discrete inputs hold single bits; "
                    "use type bool, or a register table",
                )
            object.__setattr__(self, "type", "bool")
        elif self.type is None:
            raise FieldError("table", f"table {self.table} needs a type (e.g. uint16, float32)")
        if self.type == "string" and self.length is None:
            raise FieldError("type", "a string point needs length (in registers, 2 chars each)")
        if self.type != "string" and self.length is not None:
            raise FieldError("length", "length applies only to type string")
        if self.type in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise FieldError("scale", f"scale and offset do not apply to type {self.type}")
        end = self.address + self.width
        if end > 65536:
            raise FieldError(
                "address", f"the point runs past the last address 65535 (ends at {end - 1})"
            )
        return self

    @property
    def data_type(self) -> DataType:
        assert self.type is not None  # set by the validator
        return self.type

    @property
    def width(self) -> int:
        """Registers (or bits, in bit tables) the point occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.type == "string":
            return self.length or 1
        return REGISTERS[self.type or "uint16"]


class ModbusTcpDevice(DeviceConfig):
    protocol: Literal["modbus-tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    byte_order: Order = "big"
    word_order: Order = "big"
    points: Sequence[ModbusPoint] = Field(min_length=1)

    def byte_order_of(self, point: ModbusPoint) -> Order:
        return point.byte_order or self.byte_order

    def word_order_of(self, point: ModbusPoint) -> Order:
        return point.word_order or self.word_order


def overlapping_points(raw_device: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Overlapping addresses within one device, checked on the raw data.

    It runs on raw data so that overlaps are reported even when other keys of the same device
    are wrong: every point that validates on its own takes part.
    """
    points = raw_device.get("points")
    if not isinstance(points, list):
        return []
    taken: dict[str, list[tuple[int, int, str]]] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, raw in enumerate(points):
        try:
            point = ModbusPoint.model_validate(raw)
        except (ValidationError, GatewayError):
            continue
        start, end = point.address, point.address + point.width - 1
        for other_start, other_end, other_name in taken.get(point.table, []):
            if start <= other_end and other_start <= end:
                problems.append(
                    (
                        ("points", index, "address"),
                        f"point {point.name!r} ({point.table} {start}..{end}) overlaps point "
                        f"{other_name!r} ({point.table} {other_start}..{other_end})",
                    )
                )
                break
        taken.setdefault(point.table, []).append((start, end, point.name))
    return problems
