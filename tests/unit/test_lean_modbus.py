"""The benchmark's lean Modbus server answers like a Modbus device (checked with pymodbus)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

from pymodbus.client import AsyncModbusTcpClient

from adapters.modbus.config import ModbusTcpDevice
from simulators.lean_modbus import LeanModbusSimulator
from tests.mosquitto import free_port


def _device(port: int, unit: int, points: list[dict[str, object]]) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {"id": f"d{unit}", "line": "l", "protocol": "modbus-tcp", "host": "127.0.0.1",
         "port": port, "unit_id": unit, "points": points}
    )  # fmt: skip


def test_reads_writes_and_moving_values() -> None:
    port = free_port()
    points: list[dict[str, object]] = [
        {"name": "temp", "table": "holding", "address": 0, "type": "float32",
         "word_order": "little", "sim": {"constant": 21.5}},
        {"name": "ramp", "table": "input", "address": 3, "type": "uint16",
         "sim": {"ramp": {"min": 0, "max": 1000, "period": "1s"}}},
        {"name": "clock", "table": "holding", "address": 10, "type": "uint32"},
        {"name": "run", "table": "coil", "address": 9, "sim": {"constant": True}},
    ]  # fmt: skip
    other: list[dict[str, object]] = [
        {"name": "x", "table": "holding", "address": 0, "type": "int16", "sim": {"constant": -7}}
    ]
    simulator = LeanModbusSimulator(
        [_device(port, 1, points), _device(port, 2, other)], images=10, tick=0.05
    )

    async def scenario() -> None:
        serving = asyncio.create_task(simulator.serve())
        await asyncio.sleep(0.1)
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        try:
            low, high = (await client.read_holding_registers(0, count=2)).registers
            assert struct.unpack(">f", struct.pack(">HH", high, low))[0] == 21.5
            assert (await client.read_holding_registers(0, count=1, device_id=2)).registers == [
                (-7) & 0xFFFF
            ]
            assert (await client.read_coils(9, count=1)).bits[0] is True
            seen = set()
            for _ in range(6):
                seen.add((await client.read_input_registers(3, count=1)).registers[0])
                await asyncio.sleep(0.06)
            assert len(seen) > 1  # the ramp moves with the images
            high, low = (await client.read_holding_registers(10, count=2)).registers
            assert abs((high << 16 | low) - int(time.time() * 1000) % 2**32) < 1000
            # Writes hold, in every image.
            assert not (await client.write_register(5, 1234)).isError()
            assert not (await client.write_registers(6, [1, 2])).isError()
            assert not (await client.write_coil(9, False)).isError()
            assert not (await client.write_coils(0, [True, False, True])).isError()
            await asyncio.sleep(0.12)
            assert (await client.read_holding_registers(5, count=3)).registers == [1234, 1, 2]
            assert (await client.read_coils(0, count=3)).bits[:3] == [True, False, True]
            assert (await client.read_coils(9, count=1)).bits[0] is False
            # Beyond the image: exception 2, the connection stays usable.
            answer = await client.read_holding_registers(100, count=2)
            assert answer.isError() and answer.exception_code == 2
            assert not (await client.read_holding_registers(0, count=1)).isError()
        finally:
            client.close()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    asyncio.run(scenario())
