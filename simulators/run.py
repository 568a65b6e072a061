"""Start the simulators for every device of a map whose protocol has one (the registry says)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from gateway import registry
from gateway.adapter import Simulator
from gateway.config.load import Config


@dataclass
class Simulators:
    running: list[Simulator]

    async def stop(self) -> None:
        for simulator in reversed(self.running):
            await simulator.stop()


async def start_simulators(config: Config) -> Simulators:
    base_dir = Path(config.files[0]).parent if config.files else Path()
    started = Simulators([])
    try:
        for adapter, members in registry.families(config.devices):
            if adapter.simulator is not None:
                simulator = adapter.simulator(members, base_dir)
                await simulator.start()
                started.running.append(simulator)
    except BaseException:
        await started.stop()
        raise
    return started


async def serve(config: Config) -> None:
    """Run until cancelled."""
    simulators = await start_simulators(config)
    try:
        await asyncio.Event().wait()
    finally:
        await simulators.stop()
