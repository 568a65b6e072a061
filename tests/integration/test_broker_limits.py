"""What a broker refuses, announces or does on its own, against mosquitto configured to do it.

The three places plain paho did worse than the gateway must (a v5 broker's Maximum QoS below
``mqtt.qos``; QoS 2 windows after a reconnect are in test_mqtt_client), a last will the broker
will not keep (D1), commands a broker queued while the gateway was away (D2), a message that
makes the broker drop the connection (D3), and refusals that must say why (D4).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Commander, Mosquitto, Process, free_port, wait_port
from tests.integration.line import COUNTERS, LONG_TEXT, events, wait_event
from tests.integration.plant import device, write_map
from tests.integration.test_broker_link import tls_broker

STATUS = "acme/plant-1/assembly/_gateway/gw-test/status"
QOS_LOWERED = "the broker's maximum QoS is below mqtt.qos: readings are sent at its maximum"
PLAINER_WILL = "the broker refuses the last will: a plainer one is sent"
SET_ASIDE = "the broker closes the connection on this message: it is set aside"


def test_a_v5_broker_s_maximum_qos_lowers_the_qos_with_one_warning(make_line: Any) -> None:
    line = make_line(broker="max_qos 1\n")
    gateway = line.gateway("version: 5", qos=2)
    line.collector.wait_for(lambda r: r["seq"] > 300, timeout=30)
    line.wait_complete(300)
    assert gateway.stop() == 0
    (warning,) = events(gateway, QOS_LOWERED)
    assert (warning["maximum_qos"], warning["qos"]) == (1, 2)
    assert events(gateway, "broker connection lost") == []
    (connected,) = events(gateway, "broker connected")
    assert connected["maximum_qos"] == 1


@pytest.mark.parametrize("broker", ["retain_available false\n", "max_qos 0\n"])
def test_a_v5_broker_that_refuses_the_will_s_retain_or_qos_gets_a_plainer_one(
    make_line: Any, broker: str
) -> None:
    """D1: the will used to be retained at QoS 1 whatever the broker takes, so the CONNECT
    itself was refused, forever. An MQTT 5 broker says why; the gateway adapts, once."""
    line = make_line(broker=broker)
    gateway = line.gateway("version: 5")
    line.collector.wait_for(lambda r: r["seq"] > 100, timeout=30)
    line.wait_complete(100)
    # The status arrives, plain (not retained) where the broker keeps no retained ones.
    online = [m for m in line.collector.snapshot() if m[0] == STATUS]
    assert online and online[0][1]["state"] == "online"
    assert online[0][2] is False
    assert gateway.stop() == 0
    (plainer,) = events(gateway, PLAINER_WILL)
    expected = {"retain_available false\n": (False, 1), "max_qos 0\n": (True, 0)}[broker]
    assert (plainer["retain"], plainer["qos"]) == expected
    assert events(gateway, "broker refused connection") == []
    (connected,) = events(gateway, "broker connected")
    if "max_qos 0" in broker:
        assert connected["maximum_qos"] == 0
        assert len(events(gateway, QOS_LOWERED)) == 1


def test_a_3_1_1_broker_without_retained_messages_says_what_to_set(make_line: Any) -> None:
    """D1 on MQTT 3.1.1: mosquitto closes the connection of a client whose will is retained;
    the log says to set ``mqtt.retain: false``, and with it the gateway connects first time."""
    line = make_line(broker="retain_available false\n")
    refused = line.gateway("")
    first = wait_event(refused, "broker refused connection")
    assert first["level"] == "error"
    assert "mqtt.retain: false" in first["hint"]
    assert line.collector.readings() == []
    refused.stop()
    gateway = line.gateway("retain: false")
    line.collector.wait_for(lambda r: r["seq"] > 50, timeout=30)
    assert gateway.stop() == 0
    assert events(gateway, "broker refused connection") == []
    online = [m for m in line.collector.snapshot() if m[0] == STATUS]
    assert online and online[0][2] is False


def test_a_command_queued_by_the_broker_while_the_gateway_was_away_is_never_executed(
    workdir: Path,
) -> None:
    """D2: mosquitto with ``queue_qos0_messages`` keeps QoS 0 messages for an offline
    persistent session; the gateway's commands have a clean session of their own."""
    broker = Mosquitto(workdir, extra="queue_qos0_messages true\nmax_queued_messages 0\n")
    port = free_port()
    points = (
        "\n      - {name: sp, table: holding, address: 0, type: uint16, writable: true, "
        "sim: {constant: 10}}"
    )
    dev = device("plc-c", port, points)
    path = write_map(workdir / "gw.yaml", broker.port, [dev], "version: 5")
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    commander = Commander(broker.port, "acme/#")
    gateways: list[Process] = []
    topic = "acme/plant-1/assembly/line-1/plc-c/sp/set"
    try:
        wait_port(port)
        gateways.append(Process("run", str(path), log=workdir / "gw1.log"))
        assert commander.first_command(topic, '{"value": 20, "id": "live"}')["value"] == 20
        assert gateways[0].stop() == 0
        for qos in (0, 1):
            commander.client.publish(
                topic, '{"value": 99, "id": "stale"}', qos=qos
            ).wait_for_publish(5)
        gateways.append(Process("run", str(path), log=workdir / "gw2.log"))
        wait_event(gateways[1], "broker connected")
        # Commands are handled in the order they arrive: once a fresh one is answered, a
        # stale one delivered on connect would have been answered before it.
        fresh = commander.first_command(topic, '{"value": 30, "id": "fresh"}')
        assert (fresh["id"], fresh["value"], fresh["ok"]) == ("fresh", 30, True)
        answered = [p["id"] for t, p, _ in commander.answers if t == topic + "/result"]
        assert "stale" not in answered
        audit = events(gateways[1], "command")
        assert all(e.get("id") != "stale" for e in audit)
    finally:
        for gateway in gateways:
            gateway.stop()
        commander.close()
        sim.stop()
        broker.stop()


def test_a_huge_command_never_reaches_the_gateway_on_mqtt_5(workdir: Path) -> None:
    """The gateway announces ``mqtt.max_incoming`` (256 KiB) as its MQTT 5 Maximum Packet
    Size: the broker does not forward a 64 MiB command to it, so it costs the gateway nothing."""
    broker = Mosquitto(workdir)
    port = free_port()
    points = (
        "\n      - {name: sp, table: holding, address: 0, type: uint16, writable: true, "
        "sim: {constant: 10}}"
    )
    path = write_map(
        workdir / "gw.yaml", broker.port, [device("plc-h", port, points)], "version: 5"
    )
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    commander = Commander(broker.port, "acme/#")
    gateway = None
    topic = "acme/plant-1/assembly/line-1/plc-h/sp/set"
    try:
        wait_port(port)
        gateway = Process("run", str(path), log=workdir / "gw.log")
        assert commander.first_command(topic, '{"value": 11, "id": "before"}')["ok"] is True
        rss_before = _rss_kib(gateway)
        commander.client.publish(topic, b"7" * (64 * 1024 * 1024), qos=1).wait_for_publish(30)
        after = commander.first_command(topic, '{"value": 12, "id": "after"}')
        assert (after["id"], after["ok"]) == ("after", True)
        assert _rss_kib(gateway) - rss_before < 8 * 1024  # KiB: it never arrived
        errors = [p.get("error", "") for t, p, _ in commander.answers if isinstance(p, dict)]
        assert not any("too large" in e for e in errors)
    finally:
        if gateway is not None:
            gateway.stop()
        commander.close()
        sim.stop()
        broker.stop()


def _rss_kib(process: Process) -> int:
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_message_that_makes_the_broker_drop_the_connection_is_set_aside(
    make_line: Any,
) -> None:
    """D3: on MQTT 3.1.1 mosquitto closes the connection of a client that sends a packet over
    ``max_packet_size``. The backoff must grow (not reset on every CONNACK), and that message,
    not the others in flight with it, must be set aside and counted instead of resent first
    forever."""
    label = LONG_TEXT.replace("sim:", "deadband: 0, sim:")  # one label message, ~330 bytes
    line = make_line(broker="max_packet_size 300\n", points=COUNTERS + label)
    gateway = line.gateway("")
    aside_seq = wait_event(gateway, SET_ASIDE, 60)["seq"]
    resumed_at = max(line.seqs(), default=0)
    # Wait for every reading but the one set aside: the backlog of the dropped connections
    # comes with the live values, not necessarily before them.
    deadline = time.monotonic() + 30
    while missing := set(range(1, resumed_at + 150)) - line.seqs() - {aside_seq}:
        assert time.monotonic() < deadline, (
            f"{len(missing)} readings missing: {sorted(missing)[:10]}"
        )
        time.sleep(0.2)
    assert gateway.stop() == 0
    (aside,) = events(gateway, SET_ASIDE)
    assert aside["topic"].endswith("/plc-q/label")
    (summary,) = events(gateway, "delivery at shutdown")
    assert summary["dropped"] == {"kills_connection": 1}
    # Every other reading arrived, those in flight when the connections dropped too; the
    # label never did.
    readings = line.collector.readings()
    assert "label" not in {r["point"] for r in readings}
    missing = set(range(1, resumed_at + 150)) - {r["seq"] for r in readings}
    assert missing == {aside["seq"]}
    # Reconnects waited longer each time (1 s, then 2 s, +-20 %), not once a second.
    lost = [_time(e) for e in events(gateway, "broker connection lost")]
    connected = [_time(e) for e in events(gateway, "broker connected")]
    waits = [up - down for down, up in zip(lost, connected[1:], strict=False)]
    assert len(waits) >= 2 and waits[0] > 0.7 and waits[1] > 1.5, waits


def test_a_broker_that_speaks_only_mqtt_3_refuses_mqtt_5_and_the_log_says_so(
    make_line: Any,
) -> None:
    """D4: amqtt speaks MQTT 3.1.1 only."""
    line = make_line(broker="amqtt")
    gateway = line.gateway("version: 5")
    refused = wait_event(gateway, "broker refused connection", timeout=30)
    assert refused["level"] == "error"
    # amqtt answers a plain MQTT 5 CONNECT "unsupported protocol version", and one with
    # properties (the gateway's) not at all.
    assert refused["reason"] in (
        "the broker does not speak MQTT 5",
        "the broker did not answer CONNECT within 10 s",
    )
    assert "mqtt.version: 3" in refused["hint"]
    gateway.stop()


def test_a_broker_that_requires_a_client_certificate_says_so(workdir: Path) -> None:
    """D4: without a client certificate, TLS 1.3 ends the connection after the handshake."""
    broker, tls_port = tls_broker(workdir)
    path = write_map(workdir / "gw.yaml", broker.port, [device("plc-t", free_port(), COUNTERS)])
    path.write_text(
        path.read_text().replace(
            f"url: mqtt://127.0.0.1:{broker.port}",
            f"url: mqtts://127.0.0.1:{tls_port}\n  ca: pki/ca.crt",
        )
    )
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            found = events(gateway, "broker refused connection") + events(
                gateway, "TLS handshake with the broker failed"
            )
            if found:
                break
            assert time.monotonic() < deadline, gateway.output()[-2000:]
            time.sleep(0.1)
        assert found[0]["level"] == "error"
        assert "client certificate" in found[0]["hint"]
        assert "mqtt.cert" in found[0]["hint"]
    finally:
        gateway.stop()
        broker.stop()


def _time(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(event["timestamp"]).timestamp()
