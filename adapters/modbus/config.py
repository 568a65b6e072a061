"""Device-map schema of Modbus devices and points (keys: README.md beside this file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from gateway.config.schema import DeviceConfig, PointConfig
from gateway.config.types import POINT_CONFIG, Duration, FieldError, Pause, StrictModel
from gateway.errors import GatewayError

Table = Literal["coil", "discrete_input", "input", "holding"]
DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
    "bcd16",
    "bcd32",
]
Order = Literal["big", "little"]

BIT_TABLES = ("coil", "discrete_input")
# Registers (16 bit) each type takes; a string takes `length` registers.
REGISTERS = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "bcd16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "bcd32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "bcd16", "bcd32")
# Modicon notation: the leading digit names the table, the rest is the one-based address.
MODICON = {0: "coil", 1: "discrete_input", 3: "input", 4: "holding"}


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class ModbusPoint(PointConfig):
    table: Table | None = None  # None: `address` is in Modicon notation (40001 = holding 0)
    address: int = Field(ge=0, le=465536)
    type: DataType | None = None  # default: bool in coil/discrete_input tables and for `bit`
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int | None = Field(default=None, ge=1, le=125)
    trim: bool = True
    byte_order: Order | None = None  # default: the device's
    word_order: Order | None = None  # default: the device's
    scale: float | None = None
    offset: float | None = None
    raw_min: float | None = None
    raw_max: float | None = None
    eng_min: float | None = None
    eng_max: float | None = None
    enum: dict[int, str] | None = None
    poll_interval: Duration | None = None  # default: the device's

    @model_validator(mode="before")
    @classmethod
    def _modicon(cls, data: Any) -> Any:
        """``address: 40001`` without a table is Modicon notation: holding register 0."""
        if isinstance(data, dict) and data.get("table") is None and "address" in data:
            address = data["address"]
            if isinstance(address, int) and not isinstance(address, bool):
                digits = len(str(address))
                table = MODICON.get(address // 10 ** (digits - 1)) if digits in (5, 6) else None
                if table is None:
                    raise FieldError(
                        "address",
                        f"without a table, address {address} must be in Modicon notation "
                        "(00001-09999 coils, 10001 discrete inputs, 30001 input registers, "
                        "40001 holding registers; 6 digits for addresses above 9999); "
                        "or give table and a zero-based address",
                    )
                number = address % 10 ** (digits - 1)
                if number == 0:
                    raise FieldError("address", f"Modicon address {address} starts at 1")
                return {**data, "table": table, "address": number - 1}
        return data

    @model_validator(mode="after")
    def _rules(self) -> ModbusPoint:
        table = self.table
        if self.bit is not None:
            if table in BIT_TABLES:
                raise FieldError("bit", f"bit applies to registers, not to table {table}")
            if self.type not in (None, "bool"):
                raise FieldError("type", "a point with bit is a bool")
            object.__setattr__(self, "type", "bool")
        if table in BIT_TABLES:
            if self.type not in (None, "bool"):
                raise FieldError(
                    "type",
                    f"type {self.type} is impossible in table {table}: "
                    "coils and discrete inputs hold single bits; "
                    "use type bool, or a register table",
                )
            object.__setattr__(self, "type", "bool")
        elif self.type is None:
            raise FieldError("table", f"table {table} needs a type (e.g. uint16, float32)")
        if self.type == "string" and self.length is None:
            raise FieldError("type", "a string point needs length (in registers, 2 chars each)")
        if self.type != "string" and self.length is not None:
            raise FieldError("length", "length applies only to type string")
        self._check_conversions()
        if self.writable and table not in ("coil", "holding"):
            raise FieldError(
                "writable",
                f"table {table} is read-only in Modbus; only coils and holding registers "
                "can be written",
            )
        end = self.address + self.width
        if end > 65536:
            raise FieldError(
                "address", f"the point runs past the last address 65535 (ends at {end - 1})"
            )
        return self

    def _check_conversions(self) -> None:
        linear = (self.raw_min, self.raw_max, self.eng_min, self.eng_max)
        numeric = self.type not in ("bool", "string")
        if any(v is not None for v in (self.scale, self.offset)) and not numeric:
            raise FieldError("scale", f"scale and offset do not apply to type {self.type}")
        if any(v is not None for v in linear):
            if not numeric:
                raise FieldError("raw_min", f"linear scaling does not apply to type {self.type}")
            if any(v is None for v in linear):
                raise FieldError(
                    "raw_min", "linear scaling needs raw_min, raw_max, eng_min, eng_max"
                )
            if self.scale is not None or self.offset is not None:
                raise FieldError("raw_min", "use either scale/offset or raw_min..eng_max, not both")
            if self.raw_min == self.raw_max:
                raise FieldError("raw_max", "raw_max must differ from raw_min")
        if self.enum is not None:
            if self.type not in INTEGER_TYPES:
                raise FieldError("enum", f"enum applies to integer types, not to {self.type}")
            if self.scale is not None or self.offset is not None or self.raw_min is not None:
                raise FieldError("enum", "enum and scaling cannot be combined")

    @property
    def data_type(self) -> DataType:
        assert self.type is not None  # set by the validator
        return self.type

    @property
    def value_type(self) -> str:
        """The information model's type of its values (a Sparkplug birth declares it): scaled
        values are float64, labels strings, BCD its unsigned width."""
        if self.enum is not None:
            return "string"
        if self.linear != (1.0, 0.0):
            return "float64"
        return {"bcd16": "uint16", "bcd32": "uint32"}.get(self.data_type, self.data_type)

    @property
    def width(self) -> int:
        """Registers (or bits, in bit tables) the point occupies."""
        if self.table in BIT_TABLES or self.bit is not None:
            return 1
        if self.type == "string":
            return self.length or 1
        return REGISTERS[self.type or "uint16"]

    @property
    def linear(self) -> tuple[float, float]:
        """(scale, offset) of the engineering conversion, from either way of writing it."""
        if self.raw_min is not None:
            assert (
                self.raw_max is not None and self.eng_min is not None and self.eng_max is not None
            )
            scale = (self.eng_max - self.eng_min) / (self.raw_max - self.raw_min)
            return scale, self.eng_min - scale * self.raw_min
        return (
            self.scale if self.scale is not None else 1.0,
            self.offset if self.offset is not None else 0.0,
        )


# Validates one point on its own (dataclasses have no ``model_validate``).
POINT = TypeAdapter(ModbusPoint)


class ExceptionRange(StrictModel):
    """Answer Modbus exception ``code`` to any request touching [start, end] of ``table``."""

    code: int = Field(default=2, ge=1, le=11)
    table: Literal["input", "holding", "coil", "discrete_input"] = "holding"
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)


class ModbusFaults(StrictModel):
    """Device-level ``sim:`` block: faults the simulator injects (ignored by ``run``)."""

    delay: Pause = 0.0  # added to every response
    drop_every: int | None = Field(default=None, ge=2)  # never answer every Nth request
    exception: ExceptionRange | None = None
    close_every: Duration | None = None  # drop every client connection this often


class ModbusDevice(DeviceConfig):
    """Keys of every Modbus device, whatever its transport."""

    unit_id: int = Field(default=1, ge=0, le=255)
    byte_order: Order = "big"
    word_order: Order = "big"
    zero_based: bool = True
    retries: int = Field(default=0, ge=0, le=10)
    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_bits_per_request: int = Field(default=2000, ge=1, le=2000)
    max_gap: int | None = Field(default=None, ge=0, le=124)
    pause_between_requests: Pause = 0.0
    pause_after_connect: Pause = 0.0
    close_connection_after_poll: bool = False
    points: Sequence[ModbusPoint] = Field(min_length=1)
    sim: ModbusFaults | None = None

    @model_validator(mode="after")
    def _one_based(self) -> ModbusDevice:
        if not self.zero_based:
            for index, point in enumerate(self.points):
                if point.address == 0:
                    raise FieldError(
                        "zero_based", f"point #{index + 1} has address 0 but zero_based is false"
                    )
        return self

    def byte_order_of(self, point: ModbusPoint) -> Order:
        return point.byte_order or self.byte_order

    def word_order_of(self, point: ModbusPoint) -> Order:
        return point.word_order or self.word_order

    def address_of(self, point: ModbusPoint) -> int:
        """The protocol (zero-based) address of a point."""
        return point.address if self.zero_based else point.address - 1

    def interval_of(self, point: ModbusPoint) -> float:
        return point.poll_interval or self.poll_interval

    @property
    def gap(self) -> int:
        """Unused registers worth reading to save a request (README.md, the read planner)."""
        return self.max_gap if self.max_gap is not None else self.default_gap

    @property
    def default_gap(self) -> int:
        return 16

    @property
    def endpoint(self) -> str:
        """Where the device is, for logs and reports: ``host:port`` or the serial line."""
        raise NotImplementedError


class ModbusTcpDevice(ModbusDevice):
    protocol: Literal["modbus-tcp", "modbus-udp", "modbus-rtu-over-tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)

    @property
    def default_gap(self) -> int:
        # TCP: a request costs a round trip, a register next to nothing, so any gap within the
        # 125-register limit is cheaper to read than a new request (README.md, the planner).
        # RTU over TCP: the serial bus behind the converter dominates, as for modbus-rtu.
        return 100 if self.protocol != "modbus-rtu-over-tcp" else 10

    @property
    def link_key(self) -> tuple[str, ...]:
        return (self.protocol, self.host, str(self.port))

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


class ModbusRtuDevice(ModbusDevice):
    protocol: Literal["modbus-rtu"]
    port: str  # serial device, e.g. /dev/ttyUSB0
    baudrate: int = Field(default=9600, ge=300, le=1_000_000)
    parity: Literal["none", "even", "odd"] = "none"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @property
    def default_gap(self) -> int:
        # A register costs 2 bytes on the wire; a new request costs its 8-byte frame, the
        # 5-byte response header and two 3.5-character silences: ~20 characters.
        return 10

    @property
    def link_key(self) -> tuple[str, ...]:
        return (self.protocol, self.port)

    @property
    def endpoint(self) -> str:
        return f"{self.port} ({self.baudrate} baud)"

    @property
    def line_settings(self) -> dict[str, Any]:
        """The serial line settings as pyserial (and so pymodbus, client and server) takes them."""
        parity = {"none": "N", "even": "E", "odd": "O"}[self.parity]
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": parity,
            "stopbits": self.stopbits,
        }


def overlapping_points(raw_device: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Overlapping addresses within one device, checked on the raw data.

    It runs on raw data so that overlaps are reported even when other keys of the same device
    are wrong: every point that validates on its own takes part. Bits of one register may be
    shared (a status word and its flags), but not the same bit twice.
    """
    points = raw_device.get("points")
    if not isinstance(points, list):
        return []
    taken: dict[str, list[tuple[int, int, int | None, str]]] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, raw in enumerate(points):
        try:
            point = POINT.validate_python(raw)
        except (ValidationError, GatewayError):
            continue
        assert point.table is not None
        start, end = point.address, point.address + point.width - 1
        for other_start, other_end, other_bit, other_name in taken.get(point.table, []):
            if not (start <= other_end and other_start <= end):
                continue
            if (point.bit is None and other_bit is None) or point.bit == other_bit:
                where = (
                    f"{point.table} {start}..{end}"
                    if point.bit is None
                    else (f"{point.table} {start} bit {point.bit}")
                )
                problems.append(
                    (
                        ("points", index, "address"),
                        f"point {point.name!r} ({where}) overlaps point "
                        f"{other_name!r} ({point.table} {other_start}..{other_end})",
                    )
                )
                break
        taken.setdefault(point.table, []).append((start, end, point.bit, point.name))
    return problems


def shared_links(devices: Sequence[ModbusDevice]) -> list[tuple[int, tuple[str | int, ...], str]]:
    """Devices on one link (a Modbus gateway, an RS-485 bus) need distinct unit ids, and on a
    serial line the same line settings: one port runs at one speed."""
    problems: list[tuple[int, tuple[str | int, ...], str]] = []
    first_on_link: dict[tuple[str, ...], int] = {}
    units: dict[tuple[tuple[str, ...], int], str] = {}
    for position, device in enumerate(devices):
        key = device.link_key
        unit_key = (key, device.unit_id)
        if unit_key in units:
            problems.append(
                (
                    position,
                    ("unit_id",),
                    f"unit_id {device.unit_id} is already used by device {units[unit_key]!r} "
                    f"on {device.endpoint}",
                )
            )
        units.setdefault(unit_key, device.id)
        first = devices[first_on_link.setdefault(key, position)]
        if isinstance(device, ModbusRtuDevice) and isinstance(first, ModbusRtuDevice):
            mine, theirs = device.line_settings, first.line_settings
            for name in ("baudrate", "bytesize", "parity", "stopbits"):
                if mine[name] != theirs[name]:
                    problems.append(
                        (
                            position,
                            (name,),
                            f"{name} differs from device {first.id!r} on the same serial port "
                            f"{device.port} ({getattr(first, name)})",
                        )
                    )
    return problems
