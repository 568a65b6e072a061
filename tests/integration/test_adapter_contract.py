"""A third protocol is one ``Adapter`` and one registry entry: a toy protocol, defined here and
registered for the test only, is validated, planned, simulated, run and given a command of its
own by the existing CLI and runtime, which know nothing else of it.

The toy protocol: a TCP server answers each line ``read`` with one line ``name=value;...``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from gateway import cli, registry
from gateway.adapter import Adapter, Simulator, Tool
from gateway.config.schema import DeviceConfig
from gateway.model import GOOD, Reading, Sample, bad_readings
from gateway.plan_report import DevicePlan
from gateway.runtime import Gateway
from gateway.source import CONNECTED, DISCONNECTED
from gateway.stats import DeviceStats
from tests.helpers import Collector, Mosquitto, free_port
from tests.integration.plant import write_map


class ToyDevice(DeviceConfig):
    protocol: Literal["toy"]
    host: str = "127.0.0.1"
    port: int


class ToySource:
    def __init__(self, device: ToyDevice) -> None:
        self.device = device
        self.device_id = device.id
        self.state: tuple[str, str | None] = (DISCONNECTED, "not connected yet")
        self.stats = DeviceStats()

    async def readings(self) -> AsyncIterator[Sequence[Sample]]:
        device = self.device
        while True:
            try:
                reader, writer = await asyncio.open_connection(device.host, device.port)
                writer.write(b"read\n")
                line = (await reader.readline()).decode().strip()
                writer.close()
                values = dict(pair.split("=") for pair in line.split(";"))
                self.state = (CONNECTED, None)
                yield [
                    Reading(device.id, p.name, float(values[p.name]), GOOD, time.time(), p.unit)
                    for p in device.points
                ]
            except OSError as exc:
                self.state = (DISCONNECTED, str(exc.strerror))
                yield bad_readings(device.id, device.points, "connection refused", time.time())
            await asyncio.sleep(device.poll_interval)

    async def close(self) -> None:
        pass


class ToySimulator:
    def __init__(self, devices: Sequence[ToyDevice]) -> None:
        self.devices = devices
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        for device in self.devices:

            async def answer(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, d: ToyDevice = device
            ) -> None:
                await reader.readline()
                writer.write(";".join(f"{p.name}=21.5" for p in d.points).encode() + b"\n")
                await writer.drain()
                writer.close()

            self.servers.append(await asyncio.start_server(answer, device.host, device.port))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()


def _toy_simulator(devices: Sequence[Any], _base: Path) -> Simulator:
    return ToySimulator(devices)


def _plan(device: ToyDevice) -> DevicePlan:
    rate = 1 / device.poll_interval
    return DevicePlan(device.id, f"toy {device.host}:{device.port}", ["read all"], rate)


TOY = Adapter(
    name="toy",
    models={"toy": ToyDevice},
    create_sources=lambda devices: [ToySource(d) for d in devices],
    describe_plan=_plan,
    simulator=_toy_simulator,
    tools=(
        Tool(
            "toy-version",
            "say the toy protocol's version",
            lambda parser: parser.add_argument("--loud", action="store_true"),
            lambda args: print("TOY 1" if args.loud else "toy 1") or 0,
        ),
    ),
)


def test_a_toy_protocol_is_one_adapter_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    workdir: Path,
) -> None:
    broker = Mosquitto(workdir)  # its own: the retained states it leaves concern no other test
    monkeypatch.setattr(registry, "ADAPTERS", [*registry.ADAPTERS, TOY])  # the one line
    # The CLI configures logging for a process: in this one, the other tests' stays as it is.
    monkeypatch.setattr(cli, "configure", lambda *_: None)
    port = free_port()
    device = f"""
  - id: toy-1
    line: line-1
    protocol: toy
    port: {port}
    poll_interval: 100ms
    points:
      - {{name: temperature, unit: degC}}"""
    path = write_map(workdir / "toy.yaml", broker.port, [device])

    assert cli.main(["validate", str(path)]) == 0
    assert cli.main(["plan", str(path)]) == 0
    assert "toy-1  (toy 127.0.0.1:" in capsys.readouterr().out
    assert cli.main(["toy-version", "--loud"]) == 0
    assert capsys.readouterr().out == "TOY 1\n"
    broken = path.with_name("broken.yaml")
    broken.write_text(path.read_text().replace("protocol: toy", "protocol: toys"))
    assert cli.main(["validate", str(broken)]) == 1
    assert "unknown protocol 'toys' (did you mean 'toy'?)" in capsys.readouterr().err

    from simulators.run import start_simulators

    collector = Collector(broker.port, "acme/plant-1/assembly/line-1/toy-1/#")

    async def run() -> dict[str, Any]:
        config = registry.load_config([path])
        simulators = await start_simulators(config)
        gateway = asyncio.create_task(Gateway(config).run())
        try:
            deadline = time.monotonic() + 30
            while not (found := [r for r in collector.readings() if r.get("value") == 21.5]):
                assert time.monotonic() < deadline, "no toy reading on the broker"
                await asyncio.sleep(0.05)
            return found[0]
        finally:
            gateway.cancel()
            await asyncio.gather(gateway, return_exceptions=True)
            await simulators.stop()

    try:
        reading = asyncio.run(run())
    finally:
        collector.close()
        broker.stop()
    assert (reading["value"], reading["unit"], reading["quality"]) == (21.5, "degC", GOOD)
