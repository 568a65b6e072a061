# ruff: noqa: E501  (device-map YAML reads best one point per line)
"""Commands end to end: a platform publishes on ``.../{point}/set``, the gateway (subprocess)
writes the Modbus simulator (subprocess) or the OPC UA simulator, reads back, answers on
``.../set/result`` and publishes the new value; checked on the simulators' own registers/nodes."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from tests.helpers import ROOT, Collector, Commander, Mosquitto, Process, free_port, wait_port
from tests.integration.opcua_plant import SimThread, opcua_device
from tests.integration.plant import device, write_map

RESULT_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "command-result.schema.json").read_text())
READING_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "reading.schema.json").read_text())

MODBUS_POINTS = """
      - {name: setpoint, table: holding, address: 0, type: float32, word_order: little, scale: 0.5, unit: degC, writable: true, min: -1000, max: 1000, sim: {constant: 10}}
      - {name: offset, table: holding, address: 2, type: int16, writable: true, sim: {constant: 5}}
      - {name: limited, table: holding, address: 3, type: uint16, writable: true, min: 0, max: 100, sim: {constant: 50}}
      - {name: readonly, table: holding, address: 4, type: uint16, sim: {constant: 7}}
      - {name: mode, table: holding, address: 5, type: uint16, enum: {0: "off", 1: auto, 2: manual}, writable: true, sim: {constant: auto}}
      - {name: valve, table: holding, address: 6, bit: 3, writable: true, sim: {constant: false}}
      - {name: alarm, table: holding, address: 6, bit: 0, sim: {constant: true}}
      - {name: run, table: coil, address: 0, writable: true, sim: {constant: false}}
"""

OPCUA_POINTS = """
      - {name: speed, node: "ns=2;s=Mixer.Speed", data_type: Double, unit: rpm, writable: true, sim: {constant: 1.5}}
      - {name: batch, node: "ns=2;s=Mixer.Batch", data_type: Int32, writable: true, min: -100000, max: 100000, sim: {constant: 7}}
      - {name: torque, node: "ns=2;s=Mixer.Torque", data_type: Double, sim: {constant: 2.5}}
"""

PREFIX = "acme/plant-1/assembly/line-1"


def _map(path: Path, broker_port: int, devices: list[str]) -> Path:
    return write_map(
        path,
        broker_port,
        devices,
        "version: 5\nresponse_prefix: replies/",
        "buffer: {mode: memory}",
    )


class WritePlant:
    def __init__(self, workdir: Path, broker: Mosquitto) -> None:
        self.workdir = workdir
        self.modbus_port, opcua_port = free_port(), free_port()
        plc = device("plc", self.modbus_port, MODBUS_POINTS, poll="200ms", timeout="500ms")
        mixer = opcua_device("mixer", opcua_port, OPCUA_POINTS)
        self.sim_map = _map(workdir / "modbus-sim.yaml", broker.port, [plc])
        self.opcua = SimThread(_map(workdir / "opcua-sim.yaml", broker.port, [mixer]))
        self.modbus = self.start_modbus()
        self.collector = Collector(broker.port, "acme/#")
        self.commander = Commander(broker.port)
        gateway_map = _map(workdir / "gateway.yaml", broker.port, [plc, mixer])
        self.gateway = Process("run", str(gateway_map), log=workdir / "gateway.log")
        for name in ("plc", "mixer"):
            self.collector.wait_for(
                lambda r, n=name: r["device"] == n and r["quality"] == "good", 30
            )

    def start_modbus(self) -> Process:
        sim = Process("simulate", str(self.sim_map), log=self.workdir / f"sim-{time.time()}.log")
        wait_port(self.modbus_port)
        return sim

    def registers(self, address: int, count: int) -> list[int]:
        async def read() -> list[int]:
            client = AsyncModbusTcpClient("127.0.0.1", port=self.modbus_port)
            await client.connect()
            try:
                return list((await client.read_holding_registers(address, count=count)).registers)
            finally:
                client.close()

        return asyncio.run(read())

    def coil(self, address: int) -> bool:
        async def read() -> bool:
            client = AsyncModbusTcpClient("127.0.0.1", port=self.modbus_port)
            await client.connect()
            try:
                return bool((await client.read_coils(address, count=1)).bits[0])
            finally:
                client.close()

        return asyncio.run(read())

    def node_value(self, node: str) -> Any:
        server = self.opcua.server("mixer")

        async def read() -> Any:
            assert server.server is not None
            return await server.server.get_node(node).read_value()

        return self.opcua.call(read)

    def close(self) -> None:
        self.gateway.stop()
        self.modbus.stop()
        self.opcua.close()
        self.collector.close()
        self.commander.close()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[WritePlant]:
    """One plant for the module (starting one takes seconds); tests compare before/after."""
    plant = WritePlant(tmp_path_factory.mktemp("commands"), broker)
    yield plant
    plant.close()


def _write(plant: WritePlant, device: str, point: str, payload: Any) -> dict[str, Any]:
    text = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    result: dict[str, Any] = plant.commander.command(f"{PREFIX}/{device}/{point}/set", text)
    jsonschema.validate(result, RESULT_SCHEMA)
    return result


def _published_after(
    plant: WritePlant, device: str, point: str, since: int, value: Any
) -> dict[str, Any]:
    """The reading of the new value, published at once (not at the next poll's deadband)."""
    reading = plant.collector.wait_for(
        lambda r: r["device"] == device and r["point"] == point and r["value"] == value,
        timeout=10,
        since=since,
    )
    jsonschema.validate(reading, READING_SCHEMA)
    return reading


def test_modbus_writes_are_encoded_read_back_and_published(plant: WritePlant) -> None:
    since = len(plant.collector.readings())
    result = _write(plant, "plc", "setpoint", {"value": 123.5, "id": "sp-1"})
    assert result["ok"] is True, result
    assert (result["id"], result["value"], result["device"], result["point"]) == (
        "sp-1",
        123.5,
        "plc",
        "setpoint",
    )
    reading = _published_after(plant, "plc", "setpoint", since, 123.5)
    assert (reading["quality"], reading["unit"]) == ("good", "degC")
    # On the device: raw = 123.5 / 0.5 = 247.0 as float32, low word first (CDAB).
    low, high = plant.registers(0, 2)
    assert struct.unpack(">f", struct.pack(">HH", high, low))[0] == 247.0

    result = _write(plant, "plc", "offset", -1234)  # a bare JSON scalar
    assert (result["ok"], result["value"], result["id"]) == (True, -1234, None)
    assert plant.registers(2, 1) == [(-1234) & 0xFFFF]

    result = _write(plant, "plc", "run", {"value": True, "id": 7})
    assert (result["ok"], result["value"], result["id"]) == (True, True, 7)
    assert plant.coil(0) is True
    _published_after(plant, "plc", "run", since, True)

    result = _write(plant, "plc", "mode", {"value": "manual"})
    assert (result["ok"], result["value"]) == (True, "manual")
    assert plant.registers(5, 1) == [2]

    # A flag inside a register: read-modify-write keeps the register's other bits.
    assert plant.registers(6, 1) == [0b0001]
    result = _write(plant, "plc", "valve", True)
    assert (result["ok"], result["value"]) == (True, True)
    assert plant.registers(6, 1) == [0b1001]
    time.sleep(0.5)  # two more polls: the written values hold
    latest = {r["point"]: r["value"] for r in plant.collector.readings() if r["device"] == "plc"}
    assert latest["alarm"] is True and latest["valve"] is True and latest["setpoint"] == 123.5


def _audit(plant: WritePlant) -> list[dict[str, Any]]:
    """The gateway's audit lines (``command`` events), oldest first."""
    lines = [
        json.loads(line) for line in plant.gateway.output().splitlines() if '"command"' in line
    ]
    return [line for line in lines if line.get("event") == "command"]


def test_refused_commands_never_reach_the_device(plant: WritePlant) -> None:
    before, audited = plant.registers(2, 6), len(_audit(plant))
    cases = [
        ("readonly", {"value": 8, "id": "a"}, "not writable"),
        ("limited", {"value": 101, "id": "b"}, "out of range [0, 100]"),
        ("limited", {"value": "50", "id": "c"}, "expected a number"),
        ("offset", {"value": 40000, "id": "d"}, "out of range for int16 [-32768, 32767]"),
        ("offset", {"value": 1.5, "id": "e"}, "expected an integer (int16)"),
        ("run", {"value": "on", "id": "f"}, "expected true or false"),
        ("mode", {"value": "turbo", "id": "g"}, "expected one of ['auto', 'manual', 'off']"),
        (
            "limited",
            b'{"value": NaN, "id": "h"}',
            "NaN is not a valid value (JSON numbers are finite)",
        ),
        ("limited", b"{not json", None),
        ("nosuch", {"value": 1}, "unknown point 'nosuch' of device 'plc'"),
    ]
    for point, payload, error in cases:
        result = _write(plant, "plc", point, payload)
        assert result["ok"] is False, result
        if error is None:
            assert result["error"].startswith("malformed JSON"), result
        else:
            assert result["error"] == error, result
        assert "value" not in result
    unknown = plant.commander.command("acme/plant-1/assembly/line-1/ghost/x/set", b"1")
    assert unknown == {
        "id": None,
        "ok": False,
        "error": "unknown device 'ghost'",
        "ts": unknown["ts"],
    }
    assert plant.registers(2, 6) == before  # nothing written
    refused = [a for a in _audit(plant)[audited:] if a["outcome"] == "refused"]
    assert len(refused) == len(cases) + 1
    assert {
        "id": "b",
        "device": "plc",
        "point": "limited",
        "error": "out of range [0, 100]",
    }.items() <= refused[1].items()


def test_opcua_writes_use_the_node_data_type(plant: WritePlant) -> None:
    since = len(plant.collector.readings())
    result = _write(plant, "mixer", "speed", {"value": 2.75, "id": "s"})
    assert (result["ok"], result["value"]) == (True, 2.75), result
    assert plant.node_value("ns=2;s=Mixer.Speed") == 2.75
    reading = _published_after(plant, "mixer", "speed", since, 2.75)
    assert reading["unit"] == "rpm"

    result = _write(plant, "mixer", "batch", -42)  # an Int32 node: written as Int32, not Double
    assert (result["ok"], result["value"]) == (True, -42), result
    assert plant.node_value("ns=2;s=Mixer.Batch") == -42
    _published_after(plant, "mixer", "batch", since, -42)

    assert _write(plant, "mixer", "batch", 100001)["error"] == "out of range [-100000, 100000]"
    assert _write(plant, "mixer", "batch", 2.5)["error"] == "expected an integer (Int32)"
    assert _write(plant, "mixer", "torque", 1.0)["error"] == "not writable"
    assert plant.node_value("ns=2;s=Mixer.Torque") == 2.5


def test_mqtt5_response_topic_and_correlation_data(plant: WritePlant) -> None:
    topic = f"{PREFIX}/plc/limited/set"
    old = plant.registers(3, 1)[0]
    since = plant.commander.send(
        topic,
        b'{"value": 42}',
        response_topic="replies/app-1",
        correlation=b"\x01req-9",
        client_id="hmi-3",
    )
    payload, correlation = plant.commander.answer("replies/app-1", since)
    assert (payload["ok"], payload["value"], correlation) == (True, 42, b"\x01req-9")
    written = [a for a in _audit(plant) if a["outcome"] == "written"]
    assert {
        "claimed_client": "hmi-3",
        "point": "limited",
        "old": old,
        "new": 42,
        "read_back": 42,
    }.items() <= written[-1].items()


def test_retained_commands_are_refused(plant: WritePlant) -> None:
    topic = f"{PREFIX}/plc/limited/set"
    before = plant.registers(3, 1)
    since = plant.commander.send(topic, b"60", retain=True)
    payload, _ = plant.commander.answer(topic + "/result", since)
    assert payload["ok"] is False and "retained" in payload["error"]
    # Clearing it from the broker is a (retained, empty) message too, and is answered too.
    since = plant.commander.send(topic, b"", retain=True)
    assert plant.commander.answer(topic + "/result", since)[0]["ok"] is False
    assert plant.registers(3, 1) == before


def test_device_down_answers_within_its_timeout(plant: WritePlant) -> None:
    plant.modbus.kill()
    start = time.monotonic()
    result = _write(plant, "plc", "limited", {"value": 10, "id": "late"})
    elapsed = time.monotonic() - start
    assert result["ok"] is False and result["id"] == "late"
    assert result["error"].startswith(("device disconnected", "device timeout", "device error")), (
        result
    )
    # The documented bound: three requests of the device's timeout (500 ms), plus slack.
    assert elapsed < 3 * 0.5 + 1.0, elapsed
    # Never queued: when the device is back, the value is what it was, not the late setpoint.
    plant.modbus = plant.start_modbus()
    plant.collector.wait_for(
        lambda r: r["device"] == "plc" and r["point"] == "limited" and r["quality"] == "good",
        20,
        since=len(plant.collector.readings()),
    )
    time.sleep(0.5)
    assert plant.registers(3, 1) == [50]  # the restarted simulator's own value, not 10


def test_opcua_node_written_by_type_is_seen_by_other_clients(plant: WritePlant) -> None:
    """An independent OPC UA client sees the written value with the node's DataType."""
    endpoint = plant.opcua.server("mixer").endpoint
    assert _write(plant, "mixer", "batch", 12345)["ok"] is True

    async def read() -> tuple[Any, ua.VariantType]:
        async with Client(endpoint) as client:
            value = await client.get_node("ns=2;s=Mixer.Batch").read_data_value()
            return value.Value.Value, value.Value.VariantType

    assert asyncio.run(read()) == (12345, ua.VariantType.Int32)


def _cli_write(plant: WritePlant, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "--log-format",
            "json",
            "write",
            str(plant.workdir / "gateway.yaml"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_write_command_line(plant: WritePlant) -> None:
    """``factory-gateway write`` for commissioning: same checks, same read-back."""
    code, result = _cli_write(plant, "plc", "offset", "77")
    assert (code, result["ok"], result["value"]) == (0, True, 77), result
    assert plant.registers(2, 1) == [77]
    code, result = _cli_write(plant, "plc", "mode", "off")  # a bare word is a text
    assert (code, result["ok"], result["value"]) == (0, True, "off"), result
    code, result = _cli_write(plant, "mixer", "batch", "-5")
    assert (code, result["ok"], result["value"]) == (0, True, -5), result
    code, result = _cli_write(plant, "plc", "readonly", "1")
    assert (code, result["ok"], result["error"]) == (1, False, "not writable")
    assert plant.registers(4, 1) == [7]
