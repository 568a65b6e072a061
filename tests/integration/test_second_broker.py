"""The same guarantees against a broker nobody here wrote besides mosquitto: amqtt.

amqtt speaks MQTT 3.1.1 only (MQTT 5 is refused, test_broker_limits) and keeps sessions in
memory. An outage is made with a relay in front of it (``Proxy``), so the broker and the
independent subscriber stay up while the gateway's connection goes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Commander, Process, Proxy, free_port, wait_port
from tests.integration.line import events, wait_buffered, wait_event
from tests.integration.plant import device, write_map


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_every_reading_arrives_at_each_qos(make_line: Any, qos: int) -> None:
    line = make_line(broker="amqtt")
    gateway = line.gateway("", qos=qos)
    line.collector.wait_for(lambda r: r["seq"] > 300, timeout=30)
    seqs = line.wait_complete(300)
    assert len(seqs & set(range(1, 301))) >= 290  # from the first few on: none lost
    values = [r["value"] for r in line.collector.readings() if r["point"] == "c3"]
    assert values == sorted(values) and values[-1] > values[0]  # the counter, counting
    assert gateway.stop() == 0
    assert events(gateway, "broker connection lost") == []


def test_an_outage_is_replayed_in_order_and_nothing_is_lost(make_line: Any) -> None:
    line = make_line(broker="amqtt")
    proxy = Proxy(line.broker.port)
    try:
        gateway = line.gateway("", port=proxy.port)
        line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
        proxy.cut()
        wait_event(gateway, "broker connection lost")
        cut_at = max(line.seqs())
        wait_buffered(line.workdir, 300)  # the outage lasts until 300 readings wait
        proxy.restore()
        line.collector.wait_for(lambda r: r["seq"] > cut_at + 500, timeout=60)
        seqs = line.wait_complete(cut_at + 450)
        assert len(seqs) > 600
        replayed = [r for r in line.collector.readings() if r.get("replayed")]
        assert replayed, "the backlog is marked replayed"
        assert [r["seq"] for r in replayed] == sorted(r["seq"] for r in replayed)
        assert gateway.stop() == 0
        (summary,) = events(gateway, "delivery at shutdown")
        assert summary["dropped"] == {}
    finally:
        proxy.cut()


def test_commands_are_written_read_back_and_answered(make_line: Any) -> None:
    line = make_line(broker="amqtt")  # its own device has no writable point: one more
    points = (
        "\n      - {name: sp, table: holding, address: 0, type: uint16, writable: true, "
        "sim: {constant: 10}}"
    )
    sim_port = free_port()
    dev = device("plc-w", sim_port, points)
    path = write_map(line.workdir / "writable.yaml", line.broker.port, [dev])
    sim = Process("simulate", str(path), log=line.workdir / "sim-w.log")
    commander = Commander(line.broker.port, "acme/#", version=3)
    gateway = None
    try:
        wait_port(sim_port)
        gateway = Process("run", str(path), log=line.workdir / "gw-w.log")
        wait_event(gateway, "broker connected")
        topic = "acme/plant-1/assembly/line-1/plc-w/sp/set"
        result = commander.first_command(topic, '{"value": 42, "id": "a1"}')
        assert (result["id"], result["value"], result["ok"]) == ("a1", 42, True)
        reading = line.collector.wait_for(
            lambda r: r["device"] == "plc-w" and r["point"] == "sp" and r["value"] == 42
        )
        assert reading["quality"] == "good"
        refused = commander.command(topic, '{"value": "many", "id": "a2"}')
        assert (refused["id"], refused["ok"]) == ("a2", False)
        assert "value" not in refused
    finally:
        if gateway is not None:
            gateway.stop()
        commander.close()
        sim.stop()
