"""Modbus TCP simulator: a pymodbus server per host:port, one unit per device of the map.

Point values come from generators evaluated on each read request (pymodbus calls our ``action``
before answering), so values move in real time without a timer. A value written by a client,
or set with ``set_value``, stays until set again.
"""

from __future__ import annotations

import math
import struct
import time
from collections import defaultdict
from typing import Any

import structlog
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.config import BIT_TABLES, ModbusPoint, ModbusTcpDevice
from adapters.modbus.decode import encode
from simulators.generators import Generated, Generator, make_generator

log = structlog.get_logger("simulators.modbus")

TABLE_OF_FUNCTION = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
WRITE_TABLE = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}
INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def coerce(value: Generated, data_type: str) -> Generated:
    """Fit a generated value to the point's type (a sine on an int16 point gives ints)."""
    if data_type == "bool":
        return bool(value)
    if data_type == "string":
        return str(value)
    if data_type in INT_RANGES:
        low, high = INT_RANGES[data_type]
        if isinstance(value, int):  # bool included; keeps 64-bit integers exact
            return min(high, max(low, int(value)))
        number = float(value) if not isinstance(value, str) else 0.0
        return int(min(high, max(low, round(number)))) if math.isfinite(number) else 0
    return float(value) if not isinstance(value, str) else 0.0


class SimulatedUnit:
    """The register image of one device, refreshed from its generators on each read."""

    def __init__(self, device: ModbusTcpDevice, seed: int) -> None:
        self.device = device
        self.start = time.monotonic()
        self.generators: dict[str, Generator] = {}
        self.pinned: dict[str, Generated | None] = {}  # None: hold what a client wrote
        self.by_table: dict[str, list[ModbusPoint]] = defaultdict(list)
        for index, point in enumerate(device.points):
            self.generators[point.name] = make_generator(point.sim, point.data_type, seed + index)
            self.by_table[point.table].append(point)
        self.points = {p.name: p for p in device.points}

    def sim_device(self) -> SimDevice:
        blocks = []
        for table in ("coil", "discrete_input", "holding", "input"):
            size = max((p.address + p.width for p in self.by_table[table]), default=1)
            if table in BIT_TABLES:
                blocks.append(
                    [SimData(0, count=max(16, size), values=False, datatype=DataType.BITS)]
                )
            else:
                blocks.append([SimData(0, count=size, values=0, datatype=DataType.UINT16)])
        return SimDevice(self.device.unit_id, simdata=tuple(blocks), action=self._action)  # type: ignore[arg-type]

    def value_of(self, point: ModbusPoint, now: float) -> Generated:
        pinned = self.pinned.get(point.name)
        value = pinned if pinned is not None else self.generators[point.name](now - self.start)
        if point.data_type not in ("bool", "string") and (
            point.scale != 1.0 or point.offset != 0.0
        ):
            # The generator speaks engineering units; the register holds the raw value.
            value = (float(value) - point.offset) / point.scale
        return coerce(value, point.data_type)

    def set_value(self, name: str, value: Generated) -> None:
        """Pin a point to an engineering value (as a test or a user would set a real device)."""
        self.pinned[name] = value

    async def _action(
        self,
        function: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> Any:
        if values is not None and function in WRITE_TABLE:
            self._pin_written(WRITE_TABLE[function], address, len(values))
            return None
        table = TABLE_OF_FUNCTION.get(function)
        if table is not None:
            self._refresh(table, start, registers)
        return None

    def _pin_written(self, table: str, address: int, count: int) -> None:
        for point in self.by_table[table]:
            if point.address < address + count and address < point.address + point.width:
                self.pinned[point.name] = None

    def _refresh(self, table: str, start: int, registers: list[int]) -> None:
        now = time.monotonic()
        device = self.device
        for point in self.by_table[table]:
            if point.name in self.pinned and self.pinned[point.name] is None:
                continue  # a client wrote it: hold the written value
            value = self.value_of(point, now)
            if table in BIT_TABLES:
                index, bit = point.address // 16 - start, point.address % 16
                if value:
                    registers[index] |= 1 << bit
                else:
                    registers[index] &= ~(1 << bit)
                continue
            raw = encode(
                value,
                point.data_type,
                device.byte_order_of(point),
                device.word_order_of(point),
                point.length or 1,
            )
            offset = point.address - start
            registers[offset : offset + point.width] = struct.unpack(f">{point.width}H", raw)


class ModbusSimulator:
    """Serves every Modbus TCP device of a map; devices sharing host:port become unit ids."""

    def __init__(self, devices: list[ModbusTcpDevice]) -> None:
        self.units: dict[str, SimulatedUnit] = {}
        self.endpoints: dict[tuple[str, int], list[SimulatedUnit]] = defaultdict(list)
        for seed, device in enumerate(devices):
            unit = SimulatedUnit(device, seed * 10)
            self.units[device.id] = unit
            self.endpoints[(device.host, device.port)].append(unit)
        self.servers: list[ModbusTcpServer] = []

    async def start(self) -> None:
        for (host, port), units in self.endpoints.items():
            ids = [u.device.unit_id for u in units]
            if len(set(ids)) != len(ids):
                raise ValueError(f"two devices on {host}:{port} share a unit id: {ids}")
            server = ModbusTcpServer([u.sim_device() for u in units], address=(host, port))
            await server.serve_forever(background=True)
            self.servers.append(server)
            for unit in units:
                log.info(
                    "simulating device",
                    device=unit.device.id,
                    endpoint=f"{host}:{port}",
                    unit_id=unit.device.unit_id,
                    points=len(unit.device.points),
                )

    async def stop(self) -> None:
        for server in self.servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        self.servers.clear()

    def set_value(self, device: str, point: str, value: Generated) -> None:
        self.units[device].set_value(point, value)
