"""Siemens S7 end to end: python-snap7's server as the PLC (factory-gateway simulate), the
gateway, a real mosquitto; values compared as the broker has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import Collector, Mosquitto, Process, free_port, until, wait_port
from tests.integration.line import wait_event
from tests.integration.plant import write_map

# Every type, with the value its generator holds and the value the broker must carry.
TYPES: list[tuple[str, str, str, Any]] = [
    ("flag", "DB10.DBX0.3", "BOOL", True),
    ("byte", "DB10.DBB1", "BYTE", 200),
    ("small", "DB10.DBB2", "SINT", -7),
    ("letter", "DB10.DBB3", "CHAR", "K"),
    ("word", "DB10.DBW4", "WORD", 65000),
    ("level", "DB10.DBW6", "INT", -1234),
    ("uword", "DB10.DBW8", "UINT", 54321),
    ("delay", "DB10.DBW10", "S5TIME", 12.5),
    ("day", "DB10.DBW12", "DATE", "2026-12-06"),
    ("dword", "DB10.DBD14", "DWORD", 4000000000),
    ("total", "DB10.DBD18", "DINT", -100000),
    ("temp", "DB10.DBD22", "REAL", 21.5),
    ("cycle", "DB10.DBD26", "TIME", 90.25),
    ("shift", "DB10.DBD30", "TIME_OF_DAY", 22500.0),
    ("energy", "DB10.DBB34", "LREAL", 123456.789),
    ("big", "DB10.DBB42", "LINT", -(2**40)),
    ("huge", "DB10.DBB50", "ULINT", 2**60),
    ("stamp", "DB10.DBB58", "DATE_AND_TIME", "2026-12-06T07:30:01.250"),
    ("moment", "DB10.DBB66", "DTL", "2026-12-06T07:30:01.125"),
    ("recipe", "DB10.DBB78", "STRING[12]", "WELD-7"),
    ("label", "DB10.DBB92", "WSTRING[8]", "Größe"),
    ("marker", "M3.7", "BOOL", True),
    ("setpoint", "MD20", "REAL", 150.0),
    ("estop", "E0.3", "BOOL", False),
    ("speed", "AW4", "INT", 2.5),  # scaled by 0.1
]


def _s7_device(name: str, port: int, points: str, extra: str = "") -> str:
    return f"""
  - id: {name}
    line: line-2
    protocol: s7
    host: 127.0.0.1
    port: {port}
    poll_interval: 200ms
    timeout: 500ms{extra}
    points:{points}"""


def _points() -> str:
    lines = []
    for name, address, kind, value in TYPES:
        constant = f'"{value}"' if isinstance(value, str) else str(value).lower()
        scale = ", scale: 0.1" if name == "speed" else ""
        unit = ", unit: degC" if name == "temp" else ""
        lines.append(
            f'\n      - {{name: {name}, address: {address}, type: "{kind}"{scale}{unit}, '
            f"sim: {{constant: {constant}}}}}"
        )
    return "".join(lines)


def _latest(collector: Collector, device: str) -> dict[str, dict[str, Any]]:
    return {r["point"]: r for r in collector.readings() if r.get("device") == device}


def test_every_type_arrives_with_its_value_and_unit(workdir: Path, broker: Mosquitto) -> None:
    port = free_port()
    device = _s7_device("welder", port, _points())
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", broker.port, [device])),
                  log=workdir / "sim.log")  # fmt: skip
    wait_port(port)
    collector = Collector(broker.port, "acme/#")
    gateway = Process("run", str(write_map(workdir / "gw.yaml", broker.port, [device])),
                      log=workdir / "gw.log")  # fmt: skip
    try:
        names = {name for name, *_ in TYPES}
        until(lambda: names <= set(_latest(collector, "welder")), "every point once", timeout=30)
        latest = _latest(collector, "welder")
        for name, _, _, value in TYPES:
            reading = latest[name]
            assert reading["quality"] == "good", reading
            assert reading["value"] == value, (name, reading)
        assert latest["temp"]["unit"] == "degC"
        assert latest["setpoint"]["value"] == 150.0
    finally:
        collector.close()
        gateway.stop()
        sim.stop()


def test_a_plc_that_goes_away_marks_only_its_points_bad_and_comes_back(
    workdir: Path, broker: Mosquitto
) -> None:
    ports = free_port(), free_port()
    points = (
        "\n      - {name: count, address: DB1.DBW0, type: INT, sim: {counter: {interval: 100ms}}}"
    )
    devices = [_s7_device(f"plc{i}", port, points) for i, port in enumerate(ports)]
    sims = [
        Process(
            "simulate",
            str(write_map(workdir / f"sim{i}.yaml", broker.port, [d])),
            log=workdir / f"sim{i}.log",
        )
        for i, d in enumerate(devices)
    ]
    for port in ports:
        wait_port(port)
    collector = Collector(broker.port, "acme/#")
    gateway = Process("run", str(write_map(workdir / "gw.yaml", broker.port, devices)),
                      log=workdir / "gw.log")  # fmt: skip
    try:
        collector.wait_for(lambda r: r["device"] == "plc0" and r["quality"] == "good")
        sims[0].kill()
        bad = collector.wait_for(lambda r: r["device"] == "plc0" and r["quality"] == "bad")
        assert bad["value"] is None and bad["reason"], bad
        since = len(collector.readings())
        # The other PLC keeps flowing meanwhile.
        collector.wait_for(lambda r: r["device"] == "plc1" and r["quality"] == "good", since=since)
        sims[0] = Process("simulate", str(workdir / "sim0.yaml"), log=workdir / "sim0-2.log")
        wait_port(ports[0])
        back = collector.wait_for(
            lambda r: r["device"] == "plc0" and r["quality"] == "good", since=since, timeout=40
        )
        assert isinstance(back["value"], int)
        wait_event(gateway, "PLC recovered")
    finally:
        collector.close()
        gateway.stop()
        for sim in sims:
            sim.stop()
