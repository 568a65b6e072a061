"""Start the simulators for every device of a map whose protocol has one."""

from __future__ import annotations

import asyncio

from adapters.modbus.config import ModbusDevice
from gateway.config.load import Config
from simulators.modbus import ModbusSimulator


async def start_simulators(config: Config) -> ModbusSimulator:
    modbus = [d for d in config.devices if isinstance(d, ModbusDevice)]
    simulator = ModbusSimulator(modbus)
    await simulator.start()
    return simulator


async def serve(config: Config) -> None:
    """Run until cancelled."""
    simulator = await start_simulators(config)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
