"""A lean Modbus TCP server for benchmarks: MBAP + functions 1-6, 15, 16 over register images.

The pymodbus server's CPU per request would make a high-rate benchmark measure the simulator,
not the gateway (docs/performance.md). This one answers a read by slicing a prebuilt image (the
registers as their wire bytes).

Values move without per-value work: the points' ``sim:`` generators are evaluated at start-up
for ``images`` moments one ``tick`` apart, and a timer switches the image served every tick.
The default of 7 images does not divide 10 ticks: a poll every 1 s (or 100 ms) gets another
image each time, so every value that moves has changed between two polls (the worst case
for a decoder that reuses an unchanged answer).
A point named ``clock`` (``uint32`` or ``float64``) holds the simulator's time of the last
switch, in milliseconds since the epoch (``uint32``: modulo 2^32), so a subscriber measures
change -> receive latency from the value itself. Writes (FC 5, 6, 15, 16) go to every image, so
a written value holds. The pymodbus simulator (``simulators/modbus.py``) stays the reference
in tests; this one serves the same device maps, TCP only, without fault injection.

    python -m simulators.lean_modbus MAP.yaml [--images 7] [--tick 100ms]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import cast

from adapters.modbus.config import BIT_TABLES, ModbusDevice, ModbusTcpDevice
from adapters.modbus.decode import PointCodec
from adapters.modbus.plan import slots_of
from gateway.config.types import parse_duration
from gateway.registry import load_config
from simulators.generators import make_generator
from simulators.modbus import coerce

READ_TABLES = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
MAX_READ = {1: 2000, 2: 2000, 3: 125, 4: 125}


class UnitImages:
    """``images`` snapshots of one unit's four tables; ``current`` is the one served."""

    def __init__(self, device: ModbusDevice, images: int, tick: float, seed: int) -> None:
        self.device = device
        self.clock: list[tuple[str, int, str]] = []  # (table, address, type) of clock points
        sizes = {table: 1 for table in ("coil", "discrete_input", "holding", "input")}
        slots = slots_of(device)
        for slot in slots:
            sizes[slot.table] = max(sizes[slot.table], slot.address + slot.width)
        # Registers: their wire bytes. Bits: one byte per bit (0/1), packed on reading.
        self.images: list[dict[str, bytearray]] = [
            {t: bytearray(n if t in BIT_TABLES else 2 * n) for t, n in sizes.items()}
            for _ in range(images)
        ]
        for index, slot in enumerate(slots):
            point = slot.point
            if point.name == "clock" and slot.table not in BIT_TABLES:
                self.clock.append((slot.table, slot.address, point.data_type))
                continue
            generate = make_generator(point.sim, point.data_type, seed + index)
            codec = PointCodec(point, device.byte_order_of(point), device.word_order_of(point))
            for n, image in enumerate(self.images):
                value = coerce(generate(n * tick), point.data_type, point.enum)
                table = image[slot.table]
                if slot.table in BIT_TABLES:
                    table[slot.address] = 1 if value else 0
                    continue
                start = 2 * slot.address
                current = bytes(table[start : start + 2])
                try:
                    raw = codec.encode(value, current)
                except (struct.error, OverflowError, ValueError, KeyError):
                    continue  # the generator left the raw type's range: keep zeros
                table[start : start + len(raw)] = raw
        self.current = self.images[0]

    def advance(self, n: int, now_ms: int) -> None:
        self.current = self.images[n % len(self.images)]
        for table, address, data_type in self.clock:
            raw = (
                struct.pack(">d", float(now_ms))
                if data_type == "float64"
                else struct.pack(">I", now_ms % 2**32)
            )
            for image in self.images:
                image[table][2 * address : 2 * address + len(raw)] = raw

    def answer(self, function: int, pdu: bytes) -> bytes:
        """The response PDU to a request PDU (function code included)."""
        if function in READ_TABLES:
            address, count = struct.unpack_from(">HH", pdu, 1)
            table = self.current[READ_TABLES[function]]
            if not 1 <= count <= MAX_READ[function]:
                return _exception(function, 3)
            if function <= 2:
                if address + count > len(table):
                    return _exception(function, 2)
                bits = table[address : address + count]
                packed = bytearray((count + 7) // 8)
                for i, bit in enumerate(bits):
                    if bit:
                        packed[i >> 3] |= 1 << (i & 7)
                return bytes((function, len(packed))) + packed
            start, end = 2 * address, 2 * (address + count)
            if end > len(table):
                return _exception(function, 2)
            return bytes((function, 2 * count)) + table[start:end]
        if function in (5, 6):
            address, value = struct.unpack_from(">HH", pdu, 1)
            if function == 5:
                return self._write_bits(function, address, [value == 0xFF00], pdu[:5])
            return self._write_registers(function, address, pdu[3:5], pdu[:5])
        if function in (15, 16):
            address, count = struct.unpack_from(">HH", pdu, 1)
            data = pdu[6:]
            echo = pdu[:5]
            if function == 15:
                written = [bool(data[i >> 3] >> (i & 7) & 1) for i in range(count)]
                return self._write_bits(function, address, written, echo)
            return self._write_registers(function, address, data[: 2 * count], echo)
        return _exception(function, 1)

    def _write_bits(
        self, function: int, address: int, bits: list[bool] | bytes, echo: bytes
    ) -> bytes:
        if address + len(bits) > len(self.current["coil"]):
            return _exception(function, 2)
        for image in self.images:
            image["coil"][address : address + len(bits)] = bytes(bits)
        return echo

    def _write_registers(self, function: int, address: int, data: bytes, echo: bytes) -> bytes:
        start = 2 * address
        if start + len(data) > len(self.current["holding"]):
            return _exception(function, 2)
        for image in self.images:
            image["holding"][start : start + len(data)] = data
        return echo


def _exception(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


class _Connection(asyncio.Protocol):
    """One client: MBAP frames in, answers out; several frames per read are fine."""

    def __init__(self, units: dict[int, UnitImages]) -> None:
        self.units = units
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's is not an asyncio.Transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while len(buffer) >= 8:
            tid, protocol, length, unit_id = struct.unpack_from(">HHHB", buffer)
            if len(buffer) < 6 + length:
                break
            pdu = buffer[7 : 6 + length]
            buffer = buffer[6 + length :]
            unit = self.units.get(unit_id)
            if protocol != 0 or unit is None or not pdu:
                answer = _exception(pdu[0] if pdu else 0, 11)  # gateway target failed
            else:
                try:
                    answer = unit.answer(pdu[0], pdu)
                except struct.error:
                    answer = _exception(pdu[0], 3)
            out.append(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit_id) + answer)
        self.buffer = buffer
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


class LeanModbusSimulator:
    """Every Modbus TCP device of a map; devices on one host:port are units of one server."""

    def __init__(self, devices: list[ModbusDevice], images: int = 7, tick: float = 0.1) -> None:
        self.tick = tick
        self.links: dict[tuple[str, int], dict[int, UnitImages]] = defaultdict(dict)
        for seed, device in enumerate(devices):
            if not isinstance(device, ModbusTcpDevice) or device.protocol != "modbus-tcp":
                raise ValueError(f"device {device.id}: the lean simulator serves modbus-tcp only")
            units = self.links[(device.host, device.port)]
            units[device.unit_id] = UnitImages(device, images, tick, seed * 10)
        self.servers: list[asyncio.Server] = []

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for (host, port), units in self.links.items():
            self.servers.append(
                await loop.create_server(lambda u=units: _Connection(u), host, port)  # type: ignore[misc]
            )
        every = [u for units in self.links.values() for u in units.values()]
        n, started = 0, loop.time()
        try:
            while True:
                n += 1
                await asyncio.sleep(max(0.0, started + n * self.tick - loop.time()))
                now_ms = int(time.time() * 1000)
                for unit in every:
                    unit.advance(n, now_ms)
        finally:
            for server in self.servers:
                server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.lean_modbus")
    parser.add_argument("file", type=Path)
    parser.add_argument("--images", type=int, default=7, help="value snapshots cycled through")
    parser.add_argument("--tick", default="100ms", help="how often values change")
    args = parser.parse_args()
    config = load_config([args.file])
    devices = [d for d in config.devices if isinstance(d, ModbusDevice)]
    simulator = LeanModbusSimulator(devices, args.images, parse_duration(args.tick))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulator.serve())


if __name__ == "__main__":
    main()
