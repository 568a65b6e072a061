"""Simulator (pymodbus server) -> gateway -> real mosquitto -> a subscriber, all real processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from pymodbus.client import AsyncModbusTcpClient

from tests.helpers import ROOT, Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import EXPECTED_PLC1, PLC1_POINTS, PLC2_POINTS, device, write_map

READING_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "reading.schema.json").read_text())
STATUS_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "gateway-status.schema.json").read_text())


class Plant:
    """Two devices, each simulated by its own process, and the gateway reading both."""

    def __init__(self, workdir: Path, broker: Mosquitto) -> None:
        self.workdir = workdir
        self.port1, self.port2 = free_port(), free_port()
        dev1 = device("plc-1", self.port1, PLC1_POINTS)
        dev2 = device("plc-2", self.port2, PLC2_POINTS)
        self.gateway_map = write_map(workdir / "gateway.yaml", broker.port, [dev1, dev2])
        self.sim1_map = write_map(workdir / "sim1.yaml", broker.port, [dev1])
        self.sim2_map = write_map(workdir / "sim2.yaml", broker.port, [dev2])
        self.collector = Collector(broker.port, "acme/#")
        self.sim1 = self.start_sim1()
        self.sim2 = Process("simulate", str(self.sim2_map), log=workdir / "sim2.log")
        wait_port(self.port2)
        self.gateway = Process("run", str(self.gateway_map), log=workdir / "gateway.log")

    def start_sim1(self) -> Process:
        sim = Process("simulate", str(self.sim1_map), log=self.workdir / f"sim1-{time.time()}.log")
        wait_port(self.port1)
        return sim

    def close(self) -> None:
        self.gateway.stop()
        self.sim1.stop()
        self.sim2.stop()
        self.collector.close()


@pytest.fixture
def plant(workdir: Path, broker: Mosquitto) -> Iterator[Plant]:
    plant = Plant(workdir, broker)
    yield plant
    plant.close()


def _latest(collector: Collector, device: str) -> dict[str, dict[str, object]]:
    return {r["point"]: r for r in collector.readings() if r["device"] == device}


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _wait_good_again(collector: Collector, point: str) -> dict[str, object]:
    """The next good reading of a plc-1 point; the reconnect backoff may take a while."""
    since = len(collector.readings())
    return collector.wait_for(
        lambda r: r["device"] == "plc-1" and r["point"] == point and r["quality"] == "good",
        since=since,
        timeout=40,
    )


def test_every_point_arrives_with_value_unit_quality_and_timestamps(plant: Plant) -> None:
    started = time.time()
    plant.collector.wait_for(
        lambda r: r["device"] == "plc-1" and len(_latest(plant.collector, "plc-1")) == 18
    )
    latest = _latest(plant.collector, "plc-1")
    for name, (value, unit) in EXPECTED_PLC1.items():
        reading = latest[name]
        assert reading["value"] == value, name
        assert type(reading["value"]) is type(value), name
        assert reading["unit"] == unit, name
        assert reading["quality"] == "good", name
        assert "reason" not in reading
        ts, gw_ts = _parse(reading["ts"]), _parse(reading["gw_ts"])
        assert started - 1 <= ts <= gw_ts + 0.001 <= time.time() + 1, name
        jsonschema.validate(reading, READING_SCHEMA)

    topics = {t for t, p, _ in plant.collector.snapshot() if isinstance(p, dict) and "point" in p}
    assert "acme/plant-1/assembly/line-1/plc-1/temp" in topics
    assert "acme/plant-1/assembly/line-1/plc-2/speed" in topics

    seqs = [r["seq"] for r in plant.collector.readings()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seq must increase"

    status = [
        (p, retain)
        for t, p, retain in plant.collector.snapshot()
        if t == "acme/plant-1/assembly/_gateway/gw-test/status"
    ]
    # (A retained "offline" from an earlier test's gateway on this broker may come first.)
    assert any(p["state"] == "online" for p, _ in status)
    for payload, _retained in status:
        jsonschema.validate(payload, STATUS_SCHEMA)


def test_register_written_on_the_simulator_arrives_over_mqtt(plant: Plant) -> None:
    plant.collector.wait_for(lambda r: r["device"] == "plc-1" and r["point"] == "i16")

    async def write() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.port1, timeout=2, retries=1)
        assert await client.connect()
        # -42 as a 16-bit two's complement register; the coil goes from true to false.
        assert not (await client.write_register(8, 65494, device_id=1)).isError()
        assert not (await client.write_coil(0, False, device_id=1)).isError()
        client.close()

    since = len(plant.collector.readings())
    asyncio.run(write())
    i16 = plant.collector.wait_for(lambda r: r["point"] == "i16" and r["value"] == -42, since=since)
    assert i16["quality"] == "good"
    running = plant.collector.wait_for(
        lambda r: r["point"] == "running" and r["value"] is False, since=since
    )
    assert running["device"] == "plc-1"


def test_dead_device_goes_bad_others_keep_flowing_and_it_recovers(plant: Plant) -> None:
    collector = plant.collector
    collector.wait_for(lambda r: r["device"] == "plc-1" and r["quality"] == "good")

    killed_at = time.time()
    plant.sim1.kill()
    since = len(collector.readings())
    bad = collector.wait_for(
        lambda r: r["device"] == "plc-1" and r["quality"] == "bad", since=since, timeout=10
    )
    assert bad["value"] is None
    assert bad["reason"]
    jsonschema.validate(bad, READING_SCHEMA)
    bad_after = _parse(bad["ts"]) - killed_at
    print(f"plc-1 went bad {bad_after:.3f}s after the kill (poll 200ms, timeout 500ms)")
    # Every point of the dead device goes bad, not just one.
    bad_index = collector.readings().index(bad)
    collector.wait_for(
        lambda r: (
            r["device"] == "plc-1"
            and {x["point"] for x in collector.readings()[bad_index:] if x["quality"] == "bad"}
            == set(EXPECTED_PLC1)
        ),
        since=since,
    )

    # The other device keeps flowing while plc-1 is down.
    mark = len(collector.readings())
    counts = collector.wait_for(
        lambda r: r["device"] == "plc-2" and r["point"] == "count", since=mark
    )
    assert counts["quality"] == "good"

    # Restart the simulator: plc-1 comes back without restarting the gateway.
    plant.sim1 = plant.start_sim1()
    back = _wait_good_again(collector, "temp")
    assert back["value"] == 21.5
    assert plant.gateway.proc.poll() is None, "the gateway must not have restarted"
    print(f"plc-1 recovered {_parse(back['ts']) - killed_at:.3f}s after the kill")


def test_hung_device_times_out_and_recovers(plant: Plant) -> None:
    """SIGSTOP: the TCP peer stays up but never answers, as a wedged PLC does."""
    import signal

    collector = plant.collector
    collector.wait_for(lambda r: r["device"] == "plc-1" and r["quality"] == "good")
    stopped_at = time.time()
    plant.sim1.proc.send_signal(signal.SIGSTOP)
    try:
        since = len(collector.readings())
        bad = collector.wait_for(
            lambda r: r["device"] == "plc-1" and r["quality"] == "bad", since=since
        )
        assert bad["reason"] == "timeout"
        print(f"hung plc-1 went bad {_parse(bad['ts']) - stopped_at:.3f}s after SIGSTOP")
    finally:
        plant.sim1.proc.send_signal(signal.SIGCONT)
    assert _wait_good_again(collector, "u16")["value"] == 65000


def test_modbus_exception_marks_only_that_request_bad(workdir: Path, broker: Mosquitto) -> None:
    """The gateway maps a register the device does not have: only that point goes bad."""
    port = free_port()
    sim_map = write_map(workdir / "sim.yaml", broker.port, [device("plc-x", port, PLC2_POINTS)])
    extra = PLC2_POINTS + "      - {name: missing, table: holding, address: 300, type: uint16}\n"
    gw_map = write_map(workdir / "gw.yaml", broker.port, [device("plc-x", port, extra)])
    collector = Collector(broker.port, "acme/+/+/+/plc-x/#")
    sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(gw_map), log=workdir / "gw.log")
    try:
        missing = collector.wait_for(lambda r: r["point"] == "missing")
        assert (missing["quality"], missing["reason"], missing["value"]) == (
            "bad",
            "illegal data address",
            None,
        )
        speed = collector.wait_for(lambda r: r["point"] == "speed")
        assert (speed["quality"], speed["value"], speed["unit"]) == ("good", 1.25, "m/s")
    finally:
        gateway.stop()
        sim.stop()
        collector.close()
