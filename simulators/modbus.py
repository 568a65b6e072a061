"""Modbus simulator: pymodbus servers for every Modbus device of a map, over its own transport.

Devices sharing a link (host:port, or a serial port) become unit ids of one server. Point values
come from generators evaluated on each read request (pymodbus calls our ``action`` before
answering), so values move in real time without a timer. A value written by a client, or set with
``set_value``, stays until set again. The device-level ``sim:`` block injects faults: a response
delay, a dropped answer every Nth request, an exception for an address range, connections closed
periodically.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections import defaultdict
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer, ModbusUdpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.config import BIT_TABLES, ModbusDevice, ModbusRtuDevice, ModbusTcpDevice
from adapters.modbus.decode import PointCodec
from adapters.modbus.plan import Slot, slots_of
from adapters.modbus.write import INT_RANGES
from simulators.errors import ListenError
from simulators.generators import Generated, Generator, make_generator

log = structlog.get_logger("simulators.modbus")

TABLE_OF_FUNCTION = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
WRITE_TABLE = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}
DROPPED_ANSWER_DELAY = 30.0  # long past any client timeout


def coerce(value: Generated, data_type: str, enum: dict[int, str] | None = None) -> Generated:
    """Fit a generated value to the point's type (a sine on an int16 point gives ints)."""
    if enum is not None and isinstance(value, str):
        return value if value in enum.values() else next(iter(enum.values()))
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

    def __init__(self, device: ModbusDevice, seed: int) -> None:
        self.device = device
        self.start = time.monotonic()
        self.requests = 0
        self.generators: dict[str, Generator] = {}
        self.pinned: dict[str, Generated | None] = {}  # None: hold what a client wrote
        self.by_table: dict[str, list[Slot]] = defaultdict(list)
        self.codecs: dict[str, PointCodec] = {}
        slots = slots_of(device)
        # A flag (bit) inside a register that a whole-register point also maps follows that
        # point's value, as on a real device, instead of a generator of its own.
        words = {
            (s.table, a)
            for s in slots
            if s.point.bit is None
            for a in range(s.address, s.address + s.width)
        }
        for index, slot in enumerate(slots):
            point = slot.point
            if point.bit is not None and (slot.table, slot.address) in words:
                continue
            data_type = "uint16" if point.enum and point.sim is None else point.data_type
            self.generators[point.name] = make_generator(point.sim, data_type, seed + index)
            self.by_table[slot.table].append(slot)
            self.codecs[point.name] = PointCodec(
                point, device.byte_order_of(point), device.word_order_of(point)
            )

    def sim_device(self) -> SimDevice:
        blocks = []
        for table in ("coil", "discrete_input", "holding", "input"):
            size = max((s.address + s.width for s in self.by_table[table]), default=1)
            if table in BIT_TABLES:
                blocks.append(
                    [SimData(0, count=max(16, size), values=False, datatype=DataType.BITS)]
                )
            else:
                blocks.append([SimData(0, count=size, values=0, datatype=DataType.UINT16)])
        return SimDevice(self.device.unit_id, simdata=tuple(blocks), action=self._action)  # type: ignore[arg-type]

    def value_of(self, slot: Slot, now: float) -> Generated:
        point = slot.point
        pinned = self.pinned.get(point.name)
        value = pinned if pinned is not None else self.generators[point.name](now - self.start)
        if point.linear != (1.0, 0.0) and isinstance(value, int | float):
            # Engineering units: the codec inverts the scaling and rounds to the raw type.
            return float(value)
        return coerce(value, point.data_type, point.enum)

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
        faults = self.device.sim
        if faults is not None:
            fault = await self._fault(function, address, count, values)
            if fault is not None:
                return fault
        if values is not None and function in WRITE_TABLE:
            self._pin_written(WRITE_TABLE[function], address, len(values))
            return None
        table = TABLE_OF_FUNCTION.get(function)
        if table is not None:
            self._refresh(table, start, registers)
        return None

    async def _fault(
        self, function: int, address: int, count: int, values: list[int] | list[bool] | None
    ) -> ExcCodes | None:
        faults = self.device.sim
        assert faults is not None
        if values is None and function in WRITE_TABLE:
            return None  # pymodbus reads back after a write: not a new request
        self.requests += 1
        if faults.drop_every and self.requests % faults.drop_every == 0:
            await asyncio.sleep(DROPPED_ANSWER_DELAY)
        if faults.delay:
            await asyncio.sleep(faults.delay)
        rule = faults.exception
        table = TABLE_OF_FUNCTION.get(function) or WRITE_TABLE.get(function)
        if rule is not None and table == rule.table:
            if table in BIT_TABLES:
                first, last = address, address + count * 16 - 1  # pymodbus passes registers
            else:
                first, last = address, address + count - 1
            if first <= rule.end and rule.start <= last:
                log.info(
                    "injected exception",
                    device=self.device.id,
                    code=rule.code,
                    table=table,
                    address=address,
                    count=count,
                )
                return ExcCodes(rule.code)
        return None

    def _pin_written(self, table: str, address: int, count: int) -> None:
        for slot in self.by_table[table]:
            if slot.address < address + count and address < slot.address + slot.width:
                self.pinned[slot.point.name] = None

    def _refresh(self, table: str, start: int, registers: list[int]) -> None:
        now = time.monotonic()
        for slot in self.by_table[table]:
            name = slot.point.name
            if name in self.pinned and self.pinned[name] is None:
                continue  # a client wrote it: hold the written value
            value = self.value_of(slot, now)
            if table in BIT_TABLES:
                index, bit = slot.address // 16 - start, slot.address % 16
                if value:
                    registers[index] |= 1 << bit
                else:
                    registers[index] &= ~(1 << bit)
                continue
            offset = slot.address - start
            current = struct.pack(">H", registers[offset])
            try:
                raw = self.codecs[name].encode(value, current)
            except (struct.error, OverflowError, ValueError, KeyError):
                # The generator left the raw type's range (e.g. a sine scaled past int16):
                # keep the last value rather than answer garbage.
                continue
            registers[offset : offset + slot.width] = struct.unpack(f">{slot.width}H", raw)


class ModbusSimulator:
    """Serves every Modbus device of a map; devices sharing a link become unit ids."""

    def __init__(self, devices: list[ModbusDevice]) -> None:
        self.units: dict[str, SimulatedUnit] = {}
        self.links: dict[tuple[str, ...], list[SimulatedUnit]] = defaultdict(list)
        for seed, device in enumerate(devices):
            unit = SimulatedUnit(device, seed * 10)
            self.units[device.id] = unit
            self.links[device.link_key].append(unit)
        self.servers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for units in self.links.values():
            ids = [u.device.unit_id for u in units]
            first = units[0].device
            if len(set(ids)) != len(ids):
                raise ValueError(f"two devices on one link share a unit id: {ids}")
            server = _server(first, [u.sim_device() for u in units])
            try:
                await server.serve_forever(background=True)
            except RuntimeError:  # pymodbus's way of saying the bind or open failed
                await self.stop()
                raise ListenError(
                    f"cannot serve device {first.id!r} on {first.endpoint}: "
                    "address in use, or not an address of this machine"
                ) from None
            self.servers.append(server)
            periods = [
                u.device.sim.close_every for u in units if u.device.sim and u.device.sim.close_every
            ]
            if periods:
                self._tasks.append(asyncio.create_task(_close_periodically(server, min(periods))))
            for unit in units:
                log.info(
                    "simulating device",
                    device=unit.device.id,
                    protocol=unit.device.protocol,
                    endpoint=unit.device.endpoint,
                    unit_id=unit.device.unit_id,
                    points=len(unit.device.points),
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for server in self.servers:
            await server.shutdown()
        self.servers.clear()

    def set_value(self, device: str, point: str, value: Generated) -> None:
        self.units[device].set_value(point, value)


def _server(device: ModbusDevice, units: list[SimDevice]) -> Any:
    if isinstance(device, ModbusRtuDevice):
        return ModbusSerialServer(
            units, framer=FramerType.RTU, port=device.port, **device.line_settings
        )
    assert isinstance(device, ModbusTcpDevice)
    address = (device.host, device.port)
    if device.protocol == "modbus-udp":
        return ModbusUdpServer(units, address=address)
    framer = FramerType.RTU if device.protocol == "modbus-rtu-over-tcp" else FramerType.SOCKET
    return ModbusTcpServer(units, address=address, framer=framer)


async def _close_periodically(server: Any, period: float) -> None:
    """Fault injection: drop every client connection every ``period`` seconds."""
    while True:
        await asyncio.sleep(period)
        for connection in list(server.active_connections.values()):
            connection.close()
