# ruff: noqa: E501  (device-map YAML reads best one point per line)
"""OPC UA simulator (asyncua server) -> gateway (subprocess) -> real mosquitto -> a subscriber."""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.registry import load_config
from tests.helpers import ROOT, Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.opcua_plant import SimThread, browse, latest, opcua_device
from tests.integration.plant import write_map

READING_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "reading.schema.json").read_text())

TYPED_POINTS = """
      - {name: boolean, node: "ns=2;s=T.Boolean", data_type: Boolean, sim: {constant: true}}
      - {name: sbyte, node: "ns=2;s=T.SByte", data_type: SByte, sim: {constant: -5}}
      - {name: byte, node: "ns=2;s=T.Byte", data_type: Byte, sim: {constant: 200}}
      - {name: int16, node: "ns=2;s=T.Int16", data_type: Int16, sim: {constant: -1234}}
      - {name: uint16, node: "ns=2;s=T.UInt16", data_type: UInt16, sim: {constant: 65000}}
      - {name: int32, node: "ns=2;i=1042", data_type: Int32, writable: true, sim: {constant: -70000}}
      - {name: uint32, node: "ns=2;s=T.UInt32", data_type: UInt32, sim: {constant: 4000000000}}
      - {name: int64, node: "ns=2;s=T.Int64", data_type: Int64, sim: {constant: -9000000000000}}
      - {name: uint64, node: "ns=2;s=T.UInt64", data_type: UInt64, sim: {constant: 12345678901234567890}}
      - {name: float, node: "ns=2;s=T.Float", data_type: Float, unit: degC, sim: {constant: 1.5}}
      - {name: double, node: "ns=2;s=T.Double", data_type: Double, unit: rad, sim: {constant: 3.141592653589793}}
      - {name: string, node: "ns=2;s=T.String", data_type: String, sim: {constant: PRESS-A}}
      - {name: datetime, node: "ns=2;s=T.DateTime", data_type: DateTime, sim: {constant: "2026-01-02T03:04:05.678Z"}}
      - {name: bytestring, node: "ns=2;s=T.ByteString", data_type: ByteString, sim: {constant: hello}}
      - {name: text, node: "ns=2;s=T.Text", data_type: LocalizedText, sim: {constant: Ofen}}
      - {name: guid, node: "ns=2;s=T.Guid", data_type: Guid, sim: {constant: oven-1}}
      - {name: array, node: "ns=2;s=T.Array", data_type: Double, array: 3, sim: {constant: 2.5}}
      - {name: by_uri, node: "nsu=http://example.com/plant;s=Oven.Mode", data_type: String, sim: {constant: AUTO}}
      - {name: by_path, browse_path: "0:Objects/2:Oven/2:State", data_type: String, sim: {constant: RUN}}
"""

EXPECTED: dict[str, tuple[Any, str | None]] = {
    "boolean": (True, None),
    "sbyte": (-5, None),
    "byte": (200, None),
    "int16": (-1234, None),
    "uint16": (65000, None),
    "int32": (-70000, None),
    "uint32": (4000000000, None),
    "int64": (-9000000000000, None),
    "uint64": (12345678901234567890, None),
    "float": (1.5, "degC"),
    "double": (3.141592653589793, "rad"),
    "string": ("PRESS-A", None),
    "datetime": ("2026-01-02T03:04:05.678Z", None),
    "bytestring": ("aGVsbG8=", None),
    "text": ("Ofen", None),
    "guid": (str(uuid.uuid5(uuid.NAMESPACE_URL, "oven-1")), None),
    "array": ([2.5, 2.5, 2.5], None),
    "by_uri": ("AUTO", None),
    "by_path": ("RUN", None),
}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class UaPlant:
    """One map, its simulator in this process, the gateway in a subprocess, a subscriber."""

    def __init__(
        self,
        workdir: Path,
        broker: Mosquitto,
        devices: list[str],
        prepare: Callable[[SimThread], None] | None = None,
    ) -> None:
        """``prepare``: what to do to the simulator before the gateway starts."""
        self.workdir = workdir
        self.map = write_map(workdir / "map.yaml", broker.port, devices)
        self.sim_started = time.time()
        self.sim = SimThread(self.map)
        if prepare is not None:
            prepare(self.sim)
        self.collector = Collector(broker.port, "acme/#")
        self.gateway_started = time.time()
        self.gateway = Process("run", str(self.map), log=workdir / "gateway.log")

    def wait_all_good(
        self, device: str, points: list[str], timeout: float = 30.0, since: int = 0
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = latest(self.collector.readings()[since:], device)
            if all(p in now and now[p]["quality"] == "good" for p in points):
                return now
            time.sleep(0.1)
        raise AssertionError(f"not all good within {timeout}s: {self.gateway.output()[-3000:]}")

    def close(self) -> None:
        self.gateway.stop()
        self.collector.close()
        self.sim.close()


@pytest.fixture
def make_plant(workdir: Path, broker: Mosquitto) -> Iterator[Any]:
    plants: list[UaPlant] = []

    def make(devices: list[str], prepare: Callable[[SimThread], None] | None = None) -> UaPlant:
        plant = UaPlant(workdir, broker, devices, prepare)
        plants.append(plant)
        return plant

    yield make
    for plant in plants:
        plant.close()


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_every_type_arrives_with_its_source_timestamp(make_plant: Any, mode: str) -> None:
    port = free_port()
    plant = make_plant([opcua_device("oven-1", port, TYPED_POINTS, extra=f"\n    mode: {mode}")])
    now = plant.wait_all_good("oven-1", list(EXPECTED))
    for name, (value, unit) in EXPECTED.items():
        reading = now[name]
        jsonschema.validate(reading, READING_SCHEMA)
        assert (reading["value"], reading["unit"]) == (value, unit), name
        # Constants were written once, when the simulator built its address space: their
        # SourceTimestamp is older than the gateway, so ts is not the receive time.
        ts = _epoch(reading["ts"])
        assert plant.sim_started - 1 <= ts <= plant.gateway_started, name
        assert _epoch(reading["gw_ts"]) > plant.gateway_started
    if mode == "subscribe":
        # Constants do not change: a subscription reports each once.
        counts = [r["point"] for r in plant.collector.readings()]
        assert counts.count("int32") == 1


@pytest.mark.parametrize("on_server", [False, True])
def test_deadband_is_honoured(make_plant: Any, on_server: bool) -> None:
    points = """
      - {name: banded, node: "ns=2;s=Banded", deadband: 5, sim: {ramp: {min: 0, max: 100, period: 10s}}}
      - {name: raw, node: "ns=2;s=Raw", sim: {ramp: {min: 0, max: 100, period: 10s}}}"""
    extra = f"\n    server_deadband: {str(on_server).lower()}"
    plant = make_plant([opcua_device("oven-1", free_port(), points, extra=extra)])
    plant.collector.wait_for(lambda r: r["seq"] > 80, timeout=30)
    by_point: dict[str, list[float]] = {"banded": [], "raw": []}
    for reading in plant.collector.readings():
        assert reading["quality"] == "good"
        by_point[reading["point"]].append(reading["value"])
    banded, raw = by_point["banded"], by_point["raw"]
    # The ramp climbs 1 per 100 ms tick. Consecutive published values of the banded point
    # differ by more than 5 (or the ramp wrapped around).
    steps = [abs(b - a) for a, b in itertools.pairwise(banded)]
    assert all(step > 5 for step in steps), steps
    if on_server:
        # The simulator's server (asyncua) compares with the previous sample, as some real
        # servers do: a ramp of +1 per sample never passes a band of 5 (only the wrap does).
        # This is why `server_deadband: false` exists.
        assert len(raw) > 60 and len(banded) <= 3
    else:
        # The gateway compares with the last published value: one value per ~6 steps.
        assert len(raw) > 60 and len(raw) / 8 < len(banded) < len(raw) / 4


def test_5000_monitored_items_on_one_subscription(make_plant: Any) -> None:
    points = "".join(
        f'\n      - {{name: p{i:04d}, node: "ns=2;i={10000 + i}", data_type: Int32, sim: {{constant: {i * 3}}}}}'
        for i in range(5000)
    )
    plant = make_plant([opcua_device("big", free_port(), points, interval="500ms")])
    now = plant.wait_all_good("big", [f"p{i:04d}" for i in range(5000)], timeout=90)
    assert all(now[f"p{i:04d}"]["value"] == i * 3 for i in range(5000))
    server = plant.sim.server("big")
    assert plant.sim.sync(server.monitored_items) == 5000
    assert (
        plant.sim.sync(lambda: len(server.server.iserver.subscription_service.subscriptions)) == 1
    )


def test_server_restart_recovers_without_duplicates(make_plant: Any) -> None:
    points = "".join(
        f'\n      - {{name: p{i}, node: "ns=2;s=P{i}", sim: {{counter: {{interval: 200ms}}}}}}'
        for i in range(20)
    )
    plant = make_plant([opcua_device("oven-1", free_port(), points)])
    names = [f"p{i}" for i in range(20)]
    plant.wait_all_good("oven-1", names)
    server = plant.sim.server("oven-1")
    for _ in range(2):
        mark = len(plant.collector.readings())
        plant.sim.call(lambda: server.restart(down_for=1.0))
        # Every point went bad while the server was away...
        bad = plant.collector.readings()[mark:]
        deadline = time.monotonic() + 10
        while {r["point"] for r in bad if r["quality"] == "bad"} != set(names):
            assert time.monotonic() < deadline, "points did not go bad"
            time.sleep(0.1)
            bad = plant.collector.readings()[mark:]
        # ...and comes back with moving values, without restarting the gateway.
        plant.wait_all_good("oven-1", names, since=mark + 20)
        assert plant.sim.sync(server.monitored_items) == 20
        assert (
            plant.sim.sync(lambda: len(server.server.iserver.subscription_service.subscriptions))
            == 1
        )
    assert plant.gateway.proc.poll() is None
    assert plant.gateway.output().count('"device recovered"') == 2


def test_unknown_node_among_100_marks_only_that_point(make_plant: Any) -> None:
    points = "".join(
        f'\n      - {{name: p{i:03d}, node: "ns=2;s=P{i}", data_type: Int32, sim: {{counter: {{interval: 300ms}}}}}}'
        for i in range(100)
    )

    def without_p042(sim: SimThread) -> None:
        sim.call(lambda: sim.server("oven-1").delete_point("oven-1", "p042"))

    # The server does not have one of the map's nodes when the gateway subscribes.
    plant = make_plant([opcua_device("oven-1", free_port(), points)], prepare=without_p042)
    server = plant.sim.server("oven-1")
    others = [f"p{i:03d}" for i in range(100) if i != 42]
    plant.wait_all_good("oven-1", others)
    _wait_changes(plant, "p000", 10)  # 3 s of a 300 ms counter: three retries of p042
    readings = plant.collector.readings()
    # Only that point is bad, reported once (not once per retry), with the server's status.
    assert {r["point"] for r in readings if r["quality"] != "good"} == {"p042"}
    assert [(r["quality"], r["reason"]) for r in readings if r["point"] == "p042"] == [
        ("bad", "BadNodeIdUnknown")
    ]
    assert plant.gateway.output().count('"node unavailable"') == 1
    # The others kept flowing meanwhile.
    assert len({r["value"] for r in readings if r["point"] == "p000"}) > 5
    # The node appears (a server reload): the periodic retry picks it up.
    mark = len(plant.collector.readings())
    plant.sim.call(lambda: server.add_point("oven-1", "p042"))
    plant.wait_all_good("oven-1", ["p042"], since=mark, timeout=15)
    # A node deleted while monitored: bad once, the others untouched, back when re-added.
    mark = len(plant.collector.readings())
    plant.sim.call(lambda: server.delete_point("oven-1", "p042"))
    gone = plant.collector.wait_for(lambda r: r["point"] == "p042", since=mark, timeout=10)
    assert (gone["quality"], gone["reason"]) == ("bad", "BadNodeIdUnknown")
    _wait_changes(plant, "p000", 7)  # 2 s: two retries, and no second "bad"
    later = plant.collector.readings()[mark:]
    assert [r["quality"] for r in later if r["point"] == "p042"] == ["bad"]
    assert {r["point"] for r in later if r["quality"] != "good"} == {"p042"}
    mark = len(plant.collector.readings())
    plant.sim.call(lambda: server.add_point("oven-1", "p042"))
    plant.wait_all_good("oven-1", ["p042"], since=mark, timeout=15)


def _wait_changes(plant: Any, point: str, count: int, timeout: float = 30) -> None:
    """Wait until ``point`` (a counter) has published ``count`` more values: the plant's own
    clock, not the test's."""
    start = len(plant.collector.readings())
    deadline = time.monotonic() + timeout
    while (
        len({r["value"] for r in plant.collector.readings()[start:] if r["point"] == point}) < count
    ):
        assert time.monotonic() < deadline, f"{point} did not change {count} times"
        time.sleep(0.1)


def test_frozen_values_keep_the_session_and_a_dropped_one_is_resumed(make_plant: Any) -> None:
    points = """
      - {name: a, node: "ns=2;s=A", sim: {counter: {interval: 200ms}}}
      - {name: b, browse_path: "0:Objects/2:Line/2:B", sim: {counter: {interval: 200ms}}}"""
    plant = make_plant([opcua_device("oven-1", free_port(), points)])
    plant.wait_all_good("oven-1", ["a", "b"])
    server = plant.sim.server("oven-1")
    # Frozen values: no data for longer than the dead-session bound (3 keep-alive periods of
    # 1 s plus the 2 s timeout), but keep-alives flow, so the session is healthy.
    plant.sim.sync(server.freeze)
    mark = len(plant.collector.readings())
    # Stays: what is tested is time passing with no data (longer than the dead-session bound)
    # and nothing else happening; there is no event to wait for.
    time.sleep(6)
    assert all(r["quality"] == "good" for r in plant.collector.readings()[mark:])
    assert '"device unreachable"' not in plant.gateway.output()
    plant.sim.sync(lambda: server.freeze(False))
    mark = len(plant.collector.readings())
    plant.sim.call(server.drop_sessions)
    plant.collector.wait_for(lambda r: r["quality"] == "bad", since=mark, timeout=10)
    plant.wait_all_good("oven-1", ["a", "b"], since=mark + 2)
    assert plant.sim.sync(server.monitored_items) == 2


def test_hung_server_is_detected_by_missing_keepalives(workdir: Path, broker: Mosquitto) -> None:
    """SIGSTOP: the socket stays open but nothing answers -- neither data nor keep-alive."""
    port = free_port()
    points = """
      - {name: a, node: "ns=2;s=A", sim: {counter: {interval: 200ms}}}"""
    path = write_map(workdir / "map.yaml", broker.port, [opcua_device("oven-1", port, points)])
    collector = Collector(broker.port, "acme/#")
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(path), log=workdir / "gateway.log")
    try:
        collector.wait_for(lambda r: r["quality"] == "good" and r["value"] > 3)
        sim.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        mark = len(collector.readings())
        bad = collector.wait_for(lambda r: r["quality"] == "bad", since=mark, timeout=20)
        print(f"hung server marked bad after {_epoch(bad['gw_ts']) - stopped:.2f} s")
        sim.proc.send_signal(signal.SIGCONT)
        mark = len(collector.readings())
        collector.wait_for(lambda r: r["quality"] == "good", since=mark, timeout=30)
    finally:
        sim.proc.send_signal(signal.SIGCONT)
        gateway.stop()
        sim.stop()
        collector.close()


def test_browse_lists_the_address_space_and_emits_a_valid_map(
    workdir: Path, broker: Mosquitto
) -> None:
    port = free_port()
    path = write_map(
        workdir / "map.yaml", broker.port, [opcua_device("oven-1", port, TYPED_POINTS)]
    )
    sim = SimThread(path)
    endpoint = f"opc.tcp://127.0.0.1:{port}/sim"
    try:
        tree = browse(endpoint).stdout
        emitted = browse(endpoint, "--yaml").stdout
    finally:
        sim.close()
    # Browse name, node id, data type and access level of each variable, under its parents
    # (the simulator makes exactly the map's writable points writable).
    assert "  2:int32  (ns=2;i=1042)  Int32 rw" in tree
    assert "  2:uint64  (ns=2;s=T.UInt64)  UInt64 r\n" in tree
    assert (
        "2:Oven  (ns=2;i=" in tree
        and "  2:State  (ns=2;s=0:Objects/2:Oven/2:State)  String r\n" in tree
    )
    assert "Server" not in tree  # namespace 0's furniture is left out
    # The --yaml entries paste into a map that validates, one point per variable, with node
    # ids that name their namespace by URI.
    generated = workdir / "generated.yaml"
    device = opcua_device("browsed", port, "").rstrip()
    points = "\n".join(f"    {line}" for line in emitted.strip().splitlines()[1:])
    generated.write_text(
        f"gateway: {{id: gw, hierarchy: {{enterprise: acme, site: s1, area: a1}}}}\ndevices:{device}\n{points}\n"
    )
    config = load_config([generated])
    nodes = {p.name: p.node for p in config.devices[0].points}  # type: ignore[attr-defined]
    assert len(nodes) == len(EXPECTED)
    assert nodes["oven-1.int32"] == "nsu=http://example.com/plant;i=1042"
    assert nodes["Oven.State"] == "nsu=http://example.com/plant;s=0:Objects/2:Oven/2:State"
