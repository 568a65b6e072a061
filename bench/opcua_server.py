"""``python -m bench.opcua_server MAP --rate N``: the map's OPC UA simulator, plus a driver that
changes N values per second round-robin across every variable, each written with the current
time as its SourceTimestamp (so a subscriber can measure latency from the source).

The simulator's own generators would change every variable on one tick; a benchmark of latency
needs a steady stream spread over the items instead. asyncua's server costs ~50 us per value
written: keep N within what one core can write (a few thousand per second).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

from adapters.opcua.config import OpcUaDevice
from gateway.config.load import load_config
from gateway.logging import configure
from simulators.opcua import OpcUaSimulator

TICK = 0.01


async def drive(map_path: Path, rate: float) -> None:
    config = load_config([map_path])
    devices = [d for d in config.devices if isinstance(d, OpcUaDevice)]
    simulator = OpcUaSimulator(devices, map_path.parent)
    await simulator.start()
    points = [
        (endpoint, sim)
        for endpoint in simulator.endpoints.values()
        for sim in endpoint.points.values()
    ]
    print("ready", flush=True)
    cycle = itertools.cycle(points)
    value = 0
    started = time.monotonic()
    written = 0
    while True:
        await asyncio.sleep(TICK)
        due = int((time.monotonic() - started) * rate) - written
        for _ in range(due):
            endpoint, sim = next(cycle)
            value += 1
            if endpoint.server is not None and sim.node is not None:
                await endpoint.server.write_attribute_value(
                    sim.node.nodeid, sim.data_value(value % 1_000_000)
                )
        written += due


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.opcua_server")
    parser.add_argument("map", type=Path)
    parser.add_argument("--rate", type=float, default=1000.0, help="values changed per second")
    args = parser.parse_args()
    configure("json", "warning")  # stdout carries only "ready"
    asyncio.run(drive(args.map, args.rate))


if __name__ == "__main__":
    main()
