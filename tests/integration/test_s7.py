"""Siemens S7 end to end: python-snap7's server as the PLC (factory-gateway simulate), the
gateway, a real mosquitto; values compared as the broker has them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import Collector, Commander, Mosquitto, Process, free_port, until, wait_port
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


@dataclass
class Running:
    sim: Process
    collector: Collector
    gateway: Process


@contextlib.contextmanager
def _running(
    workdir: Path, broker: Mosquitto, port: int, device: str, gateway_device: str | None = None
) -> Iterator[Running]:
    """The simulator of ``device`` (a software PLC on ``port``), a subscriber and a gateway
    for ``gateway_device`` (default: the same device), all ended afterwards."""
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", broker.port, [device])),
                  log=workdir / "sim.log")  # fmt: skip
    wait_port(port)
    collector = Collector(broker.port, "acme/#")
    gw_map = write_map(workdir / "gw.yaml", broker.port, [gateway_device or device])
    gateway = Process("run", str(gw_map), log=workdir / "gw.log")
    try:
        yield Running(sim, collector, gateway)
    finally:
        collector.close()
        gateway.stop()
        sim.stop()


def _latest(collector: Collector, device: str) -> dict[str, dict[str, Any]]:
    return {r["point"]: r for r in collector.readings() if r.get("device") == device}


def test_every_type_arrives_with_its_value_and_unit(workdir: Path, broker: Mosquitto) -> None:
    port = free_port()
    device = _s7_device("welder", port, _points())
    with _running(workdir, broker, port, device) as plant:
        names = {name for name, *_ in TYPES}
        until(
            lambda: names <= set(_latest(plant.collector, "welder")), "every point once", timeout=30
        )
        latest = _latest(plant.collector, "welder")
        for name, _, _, value in TYPES:
            reading = latest[name]
            assert reading["quality"] == "good", reading
            assert reading["value"] == value, (name, reading)
        assert latest["temp"]["unit"] == "degC"
        assert latest["setpoint"]["value"] == 150.0


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


# Writable points, the value each command writes and what it reads back as.
WRITES: list[tuple[str, str, str, Any]] = [
    ("valve", "DB20.DBX0.1", "BOOL", True),
    ("mode", "DB20.DBB1", "BYTE", 42),
    ("level", "DB20.DBW2", "INT", -321),
    ("limit", "DB20.DBW4", "UINT", 60000),
    ("target", "DB20.DBD6", "DINT", -70000),
    ("mask", "DB20.DBD10", "DWORD", 0xDEADBEEF),
    ("setpoint", "DB20.DBD14", "REAL", 185.25),
    ("ratio", "DB20.DBB18", "LREAL", 0.1),
    ("batch", "DB20.DBB26", "LINT", -(2**50)),
    ("hold", "DB20.DBW34", "S5TIME", 45.0),
    ("cycle", "DB20.DBD36", "TIME", 12.345),
    ("due", "DB20.DBW40", "DATE", "2027-01-15"),
    ("start", "DB20.DBB42", "DT", "2027-01-15T06:00:00.500"),
    ("stamp", "DB20.DBB50", "DTL", "2027-01-15T06:00:00.250"),
    ("grade", "DB20.DBB62", "CHAR", "B"),
    ("recipe", "DB20.DBB64", "STRING[12]", "PAINT-RED"),
    ("label", "DB20.DBB78", "WSTRING[6]", "Größe"),
    ("speed", "MW30", "INT", 12.5),  # scaled by 0.1: 125 in the PLC
]


def test_a_write_of_each_type_is_read_back_and_a_bool_keeps_its_neighbours(
    workdir: Path, broker: Mosquitto
) -> None:
    port = free_port()
    points = [
        # The bit beside the valve's, which the valve's write must leave as it is.
        "\n      - {name: lamp, address: DB20.DBX0.0, sim: {constant: true}}",
        *(
            f'\n      - {{name: {name}, address: {address}, type: "{kind}", writable: true'
            + (", scale: 0.1" if name == "speed" else "")
            + "}"
            for name, address, kind, _ in WRITES
        ),
    ]
    device = _s7_device("mixer", port, "".join(points), "\n    write_rate_limit: 100")
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", broker.port, [device])),
                  log=workdir / "sim.log")  # fmt: skip
    wait_port(port)
    collector = Collector(broker.port, "acme/#")
    commander = Commander(broker.port)
    gateway = Process("run", str(write_map(workdir / "gw.yaml", broker.port, [device])),
                      log=workdir / "gw.log")  # fmt: skip
    prefix = "acme/plant-1/assembly/line-2/mixer"
    try:
        collector.wait_for(lambda r: r["device"] == "mixer" and r["point"] == "lamp")
        for name, _, _, value in WRITES:
            answer = commander.first_command(f"{prefix}/{name}/set", json.dumps(value))
            assert (answer["ok"], answer.get("value")) == (True, value), (name, answer)
        since = len(collector.readings())
        # Two more polls: every written value holds, and the lamp's bit was not touched.
        collector.wait_for(lambda r: r["point"] == "lamp", since=since)
        since = len(collector.readings())
        collector.wait_for(lambda r: r["point"] == "lamp", since=since)
        latest = _latest(collector, "mixer")
        for name, _, _, value in WRITES:
            assert latest[name]["value"] == value, (name, latest[name])
        assert latest["lamp"]["value"] is True
        # One the type cannot hold is refused with the reason, and changes nothing.
        refused = commander.command(f"{prefix}/level/set", "40000")
        assert refused["ok"] is False and "out of range for INT" in refused["error"], refused
        refused = commander.command(f"{prefix}/recipe/set", '"A-RECIPE-NAME-TOO-LONG"')
        assert refused["ok"] is False and "longer than 12" in refused["error"], refused
    finally:
        commander.close()
        collector.close()
        gateway.stop()
        sim.stop()


def test_a_point_the_plc_refuses_is_bad_alone(workdir: Path, broker: Mosquitto) -> None:
    """The PLC has DB1 of 2 bytes and no DB99: a point past DB1's end, read in one request
    with a good one, and a point in DB99 are bad with the PLC's reason; the rest flows."""
    port = free_port()
    count = (
        "\n      - {name: count, address: DB1.DBW0, type: INT, sim: {counter: {interval: 100ms}}}"
    )
    plc = _s7_device("press", port, count)
    more = (
        "\n      - {name: tail, address: DB1.DBW2, type: INT}"
        "\n      - {name: ghost, address: DB99.DBW0, type: INT}"
    )
    with _running(workdir, broker, port, plc, _s7_device("press", port, count + more)) as plant:
        collector = plant.collector
        tail = collector.wait_for(lambda r: r["point"] == "tail")
        ghost = collector.wait_for(lambda r: r["point"] == "ghost")
        assert (tail["quality"], tail["value"]) == ("bad", None), tail
        assert "Invalid address" in tail["reason"], tail
        assert (ghost["quality"], ghost["value"]) == ("bad", None), ghost
        assert "Object does not exist" in ghost["reason"], ghost
        first = collector.wait_for(lambda r: r["point"] == "count" and r["quality"] == "good")
        since = len(collector.readings())
        later = collector.wait_for(lambda r: r["point"] == "count", since=since)
        assert later["quality"] == "good" and later["value"] > first["value"], later
        assert plant.gateway.proc.poll() is None
        wait_event(plant.gateway, "the PLC refused a request: its points are read one by one")


def test_a_plc_that_hangs_times_out_and_comes_back(workdir: Path, broker: Mosquitto) -> None:
    """A PLC that keeps the connection but stops answering (its process frozen): the points
    are bad with reason timeout after the device's timeout, and good again when it answers."""
    port = free_port()
    points = (
        "\n      - {name: count, address: DB1.DBW0, type: INT, sim: {counter: {interval: 100ms}}}"
    )
    plc = _s7_device("oven", port, points)
    with _running(workdir, broker, port, plc) as plant:
        plant.collector.wait_for(lambda r: r["point"] == "count" and r["quality"] == "good")
        os.kill(plant.sim.proc.pid, signal.SIGSTOP)
        try:
            bad = plant.collector.wait_for(
                lambda r: r["point"] == "count" and r["quality"] == "bad"
            )
            assert bad["reason"] == "timeout", bad
            since = len(plant.collector.readings())
        finally:
            os.kill(plant.sim.proc.pid, signal.SIGCONT)
        back = plant.collector.wait_for(
            lambda r: r["point"] == "count" and r["quality"] == "good", since=since, timeout=40
        )
        assert isinstance(back["value"], int)


def test_the_simulators_faults_late_answers_are_timeouts_and_the_plc_comes_back(
    workdir: Path, broker: Mosquitto
) -> None:
    """``sim: {drop_every: 6}``: every 6th read is answered 30 s late, far past the timeout;
    the gateway reconnects and reads on."""
    port = free_port()
    points = (
        "\n      - {name: count, address: DB1.DBW0, type: INT, sim: {counter: {interval: 100ms}}}"
    )
    plc = _s7_device("lathe", port, points, "\n    sim: {drop_every: 6}")
    with _running(workdir, broker, port, plc) as plant:
        bad = plant.collector.wait_for(lambda r: r["point"] == "count" and r["quality"] == "bad")
        assert bad["reason"] == "timeout", bad
        since = len(plant.collector.readings())
        back = plant.collector.wait_for(
            lambda r: r["point"] == "count" and r["quality"] == "good", since=since, timeout=40
        )
        assert isinstance(back["value"], int)
