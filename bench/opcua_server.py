"""``python -m bench.opcua_server MAP --rate N``: the map's OPC UA simulator, plus a driver that
changes N values per second round-robin across every variable, each written with the current
time as its SourceTimestamp (so a subscriber can measure latency from the source).

The simulator's own generators would change every variable on one tick; a benchmark of latency
needs a steady stream spread over the items instead.

asyncua's server costs ~50-100 us per value written, and about half of it is a defensive
``copy.deepcopy`` of the value for each monitored item (``MonitoredItemValues``), against a
caller that mutates a value after writing it. This driver writes a new ``DataValue`` each time
and never touches it again, so the bench server keeps a reference instead (``lean_values``):
at 10,000 changes/s the simulator otherwise takes a whole core of the two and queues its
notifications, and the benchmark measures the simulator, not the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemValues

from adapters.opcua.config import OpcUaDevice
from gateway.logging import configure
from gateway.registry import load_config
from simulators.opcua import OpcUaSimulator

TICK = 0.01


def lean_values() -> None:
    """Monitored items keep the written value itself, not a deep copy (see the docstring)."""

    def set_current_datavalue(self: MonitoredItemValues, value: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = value

    MonitoredItemValues.set_current_datavalue = set_current_datavalue  # type: ignore[method-assign,assignment]


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
    lean_values()
    asyncio.run(drive(args.map, args.rate))


if __name__ == "__main__":
    main()
