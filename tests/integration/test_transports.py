"""Every Modbus transport end to end: simulator process -> gateway process -> mosquitto.

RTU runs over a real pseudo-terminal pair made by socat, as a USB-RS485 adapter would appear.
Several unit ids share one link (one TCP connection, one serial bus).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.line import wait_event

# ruff: noqa: E501  (device-map YAML reads best one point per line)
POINTS = """
      - {name: temp, table: holding, address: 0, type: float32, unit: degC, sim: {constant: -12.5}}
      - {name: level, table: holding, address: 2, type: int16, scale: 0.1, sim: {constant: -3.7}}
      - {name: counter, table: holding, address: 3, type: uint32, sim: {constant: 70000}}
      - {name: status, table: holding, address: 5, type: uint16, sim: {constant: 5}}
      - {name: ready, table: holding, address: 5, bit: 0}
      - {name: alarm, table: holding, address: 5, bit: 1}
      - {name: mode, table: holding, address: 6, type: uint16, enum: {0: idle, 1: running, 3: fault}, sim: {constant: fault}}
      - {name: total, table: input, address: 0, type: bcd32, sim: {constant: 12345678}}
      - {name: tag, table: input, address: 2, type: string, length: 3, byte_order: little, sim: {constant: TAG-7}}
      - {name: pump, table: coil, address: 3, sim: {constant: true}}
"""
# unit id -> expected values; unit 2 proves several units on one link are told apart.
EXPECTED = {
    "temp": -12.5,
    "level": -3.7,
    "counter": 70000,
    "status": 5,
    "ready": True,
    "alarm": False,
    "mode": "fault",
    "total": 12345678,
    "tag": "TAG-7",
    "pump": True,
}


def _device(name: str, unit: int, transport: str, points: str = POINTS) -> str:
    return f"""
  - id: {name}
    line: line-1
    unit_id: {unit}
    poll_interval: 200ms
    timeout: 500ms
{transport}
    points:{points}"""


def _map(path: Path, broker: Mosquitto, devices: list[str]) -> Path:
    path.write_text(
        "gateway: {id: gw-t, hierarchy: {enterprise: acme, site: s1, area: a1}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}'}}\n"
        f"devices:{''.join(devices)}\n"
    )
    return path


class Run:
    def __init__(self, workdir: Path, broker: Mosquitto, sim_map: Path, gw_map: Path) -> None:
        self.collector = Collector(broker.port, "acme/s1/a1/#")
        self.sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
        self.workdir = workdir
        self.gw_map = gw_map

    def start_gateway(self) -> None:
        self.gateway = Process("run", str(self.gw_map), log=self.workdir / "gw.log")

    def assert_values(self, device: str) -> None:
        for point, value in EXPECTED.items():
            reading = self.collector.wait_for(
                lambda r, p=point: r["device"] == device and r["point"] == p  # type: ignore[misc]
            )
            assert reading["quality"] == "good", (device, reading)
            assert reading["value"] == value, (device, point, reading)
            assert type(reading["value"]) is type(value), (device, point)

    def close(self) -> None:
        if hasattr(self, "gateway"):
            self.gateway.stop()
        self.sim.stop()
        self.collector.close()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.close()


@pytest.mark.parametrize("protocol", ["modbus-tcp", "modbus-rtu-over-tcp", "modbus-udp"])
def test_network_transports_with_two_units_on_one_link(
    protocol: str, workdir: Path, broker: Mosquitto, runs: list[Run]
) -> None:
    port = free_port()
    transport = f"    protocol: {protocol}\n    host: 127.0.0.1\n    port: {port}"
    path = _map(
        workdir / "map.yaml",
        broker,
        [_device("unit-1", 1, transport), _device("unit-2", 2, transport)],
    )
    run = Run(workdir, broker, path, path)
    runs.append(run)
    wait_event(run.sim, "simulating device")  # serving (UDP has nothing to connect to)
    if protocol != "modbus-udp":
        wait_port(port)
    run.start_gateway()
    run.assert_values("unit-1")
    run.assert_values("unit-2")


@pytest.fixture
def pty_pair(workdir: Path) -> Iterator[tuple[str, str]]:
    """Two linked serial ports, as a null-modem cable between gateway and simulator."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run `make test`, which installs it")
    sim_end, gw_end = workdir / "tty-sim", workdir / "tty-gw"
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={gw_end}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (sim_end.exists() and gw_end.exists()):
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.05)
    yield str(sim_end), str(gw_end)
    proc.terminate()
    proc.wait(timeout=10)


def test_rtu_over_a_serial_line_with_two_units(
    workdir: Path, broker: Mosquitto, runs: list[Run], pty_pair: tuple[str, str]
) -> None:
    sim_port, gw_port = pty_pair

    def serial(port: str) -> str:
        # A pty takes any baud rate but refuses parity: 8N1 here.
        return f"    protocol: modbus-rtu\n    port: {port}\n    baudrate: 19200"

    sim_map = _map(
        workdir / "sim.yaml",
        broker,
        [_device("rtu-1", 1, serial(sim_port)), _device("rtu-2", 2, serial(sim_port))],
    )
    gw_map = _map(
        workdir / "gw.yaml",
        broker,
        [_device("rtu-1", 1, serial(gw_port)), _device("rtu-2", 2, serial(gw_port))],
    )
    run = Run(workdir, broker, sim_map, gw_map)
    runs.append(run)
    wait_event(run.sim, "simulating device")  # its end of the line is open
    run.start_gateway()
    run.assert_values("rtu-1")
    run.assert_values("rtu-2")
