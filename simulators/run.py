"""Start the simulators for every device of a map whose protocol has one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from adapters.modbus.config import ModbusDevice
from adapters.opcua.config import OpcUaDevice
from gateway.config.load import Config
from simulators.modbus import ModbusSimulator
from simulators.opcua import OpcUaSimulator


@dataclass
class Simulators:
    modbus: ModbusSimulator
    opcua: OpcUaSimulator

    async def stop(self) -> None:
        await self.modbus.stop()
        await self.opcua.stop()


async def start_simulators(config: Config) -> Simulators:
    modbus = ModbusSimulator([d for d in config.devices if isinstance(d, ModbusDevice)])
    base_dir = Path(config.files[0]).parent if config.files else Path()
    opcua = OpcUaSimulator([d for d in config.devices if isinstance(d, OpcUaDevice)], base_dir)
    await modbus.start()
    try:
        await opcua.start()
    except BaseException:
        await modbus.stop()
        raise
    return Simulators(modbus, opcua)


async def serve(config: Config) -> None:
    """Run until cancelled."""
    simulators = await start_simulators(config)
    try:
        await asyncio.Event().wait()
    finally:
        await simulators.stop()
