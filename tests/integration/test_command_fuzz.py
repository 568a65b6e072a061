# ruff: noqa: E501  (device-map YAML reads best one point per line)
"""Thousands of random commands through a real broker into the running gateway (subprocess) and
the Modbus simulator (subprocess): the gateway keeps running, every command gets exactly one
answer, and nothing reaches a point that is not writable or breaks a point's limits."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from tests.helpers import ROOT, Collector, Commander, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import device, write_map

RESULT = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs" / "schemas" / "command-result.schema.json").read_text())
)
POINTS = """
      - {name: sp, table: holding, address: 0, type: float32, writable: true, min: -50, max: 150, sim: {constant: 20}}
      - {name: count, table: holding, address: 2, type: int16, writable: true, sim: {constant: 1}}
      - {name: mode, table: holding, address: 3, type: uint16, enum: {0: "off", 1: auto}, writable: true, sim: {constant: "off"}}
      - {name: recipe, table: holding, address: 4, type: string, length: 1, writable: true, allowed: [A1, B2], sim: {constant: A1}}
      - {name: run, table: coil, address: 0, writable: true, sim: {constant: false}}
      - {name: guard, table: holding, address: 10, type: uint16, sim: {constant: 4242}}
      - {name: guard_f, table: holding, address: 11, type: float32, sim: {constant: 1.5}}
      - {name: alarm, table: coil, address: 1, sim: {constant: true}}
"""
NAMES = ["sp", "count", "mode", "recipe", "run", "guard", "guard_f", "alarm"]
PREFIX = "acme/plant-1/assembly"


class FuzzPlant:
    def __init__(self, workdir: Path, broker: Mosquitto) -> None:
        self.port = free_port()
        plc = device("plc", self.port, POINTS, poll="100ms", timeout="500ms").replace(
            "    unit_id: 1\n", "    unit_id: 1\n    write_rate_limit: 100000\n"
        )
        path = write_map(
            workdir / "map.yaml",
            broker.port,
            [plc],
            "version: 5\nresponse_prefix: replies/",
            # The fuzz is about what the commands say, not how many: no intake rate to wait on.
            "buffer: {mode: memory}\ncommands: {rate: 100000}",
        )
        self.sim = Process("simulate", str(path), log=workdir / "sim.log")
        wait_port(self.port)
        self.collector = Collector(broker.port, f"{PREFIX}/line-1/plc/#")
        self.commander = Commander(broker.port, [f"{PREFIX}/+/+/+/set/result", "replies/#"])
        self.gateway = Process("run", str(path), log=workdir / "gateway.log")
        self.collector.wait_for(lambda r: r["quality"] == "good", 30)
        self.sent = 0

    def registers(self) -> tuple[list[int], list[bool]]:
        async def read() -> tuple[list[int], list[bool]]:
            client = AsyncModbusTcpClient("127.0.0.1", port=self.port)
            await client.connect()
            try:
                holding = (await client.read_holding_registers(0, count=13)).registers
                coils = (await client.read_coils(0, count=2)).bits[:2]
                return list(holding), list(coils)
            finally:
                client.close()

        return asyncio.run(read())

    def close(self) -> None:
        self.gateway.stop()
        self.sim.stop()
        self.collector.close()
        self.commander.close()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[FuzzPlant]:
    plant = FuzzPlant(tmp_path_factory.mktemp("fuzz"), broker)
    yield plant
    plant.close()


# What MQTT allows in a topic level: mosquitto disconnects a client that sends a control or
# non-character (which would be the test's fault, not the gateway's).
_level = st.text(
    st.characters(exclude_characters="/+#", exclude_categories=("Cc", "Cs", "Cn")), max_size=10
)
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from([0, 1, -50, 150, 150.01, -50.5, 32767, -32769, "auto", "off", "A1", "B2", "Z9", True]),
)  # fmt: skip
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=2),
    st.dictionaries(st.text(max_size=4), _scalar, max_size=2),
)
_payload = st.one_of(
    st.fixed_dictionaries({"value": _value}, optional={"id": _scalar}).map(
        lambda o: json.dumps(o).encode()
    ),
    _value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=30),
    st.sampled_from(
        [b"NaN", b'{"value": -Infinity, "id": 1}', b"1e999", b'{"value":', b"7" * 5000, b""]
    ),
)
_topic = st.tuples(
    st.one_of(st.just("line-1"), _level),
    st.one_of(st.just("plc"), _level),
    st.one_of(st.sampled_from(NAMES), _level),
).map(lambda t: f"{PREFIX}/{t[0]}/{t[1]}/{t[2]}/set")
_reply = st.one_of(st.none(), st.sampled_from(["replies/app", "bad/+/reply"]))


@settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(topic=_topic, payload=_payload, reply=_reply, correlation=st.binary(max_size=8))
def test_random_commands(
    plant: FuzzPlant, topic: str, payload: bytes, reply: str | None, correlation: bytes
) -> None:
    since = plant.commander.send(topic, payload, response_topic=reply, correlation=correlation)
    plant.sent += 1
    # A malformed response topic (a wildcard) is answered on the command's own result topic.
    answer_topic = reply if reply == "replies/app" else topic + "/result"
    answer, echoed = plant.commander.answer(answer_topic, since)
    RESULT.validate(answer)
    if reply == "replies/app":
        assert echoed == correlation
    if answer["ok"]:
        assert topic.split("/")[-2] in NAMES[:5], answer  # only writable points are written


def test_after_the_fuzz(plant: FuzzPlant) -> None:
    """Runs after the fuzz (file order): every command answered once, nothing broken."""
    assert plant.sent >= 2000
    # A last command to the same device: its answer comes after any late one would have (a
    # device takes its commands in arrival order, and results go out in that order).
    last = plant.commander.command(f"{PREFIX}/line-1/plc/count/set", b'{"value": 7, "id": "last"}')
    assert last["id"] == "last" and last["ok"] is True
    plant.sent += 1
    assert plant.commander.count() == plant.sent
    assert plant.gateway.proc.poll() is None, "the gateway stopped"
    holding, coils = plant.registers()
    assert holding[10] == 4242 and coils[1] is True  # never written
    assert struct.unpack(">f", struct.pack(">HH", holding[11], holding[12]))[0] == 1.5
    sp = struct.unpack(">f", struct.pack(">HH", holding[0], holding[1]))[0]
    assert -50 <= sp <= 150
    assert holding[3] in (0, 1) and holding[4] in (0x4131, 0x4232)  # an enum value; "A1"/"B2"
    # Still reading: a fresh value after the fuzz.
    plant.collector.wait_for(
        lambda r: r["point"] == "guard", timeout=5, since=len(plant.collector.readings())
    )
