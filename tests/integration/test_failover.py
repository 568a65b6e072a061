"""Several brokers in ``mqtt.url``: the session is on one at a time and moves to the next when
it is lost, nothing lost, the status and the will following it. Two independent mosquittos
here (the cluster's own test is test_broker_cluster.py); a relay in front of the first cuts
its connection while the broker itself stays up, so its will can be seen."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pysparkplug as ps
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import Collector, Mosquitto, Process, Proxy, free_port, until, wait_port
from tests.integration.line import COUNTERS, events, wait_event
from tests.integration.plant import device, write_map

STATUS = "acme/plant-1/assembly/_gateway/gw-test/status"


def _brokers(workdir: Path) -> tuple[Mosquitto, Mosquitto]:
    first = Mosquitto(workdir / "a", extra="max_queued_messages 0\n")
    try:
        return first, Mosquitto(workdir / "b", extra="max_queued_messages 0\n")
    except BaseException:
        first.stop()
        raise


def _listing(path: Path, ports: list[int]) -> Path:
    """The map at ``path`` with ``mqtt.url`` a list of these brokers, in this order."""
    text = path.read_text()
    one = f"url: mqtt://127.0.0.1:{ports[0]}"
    assert one in text
    urls = ", ".join(f"mqtt://127.0.0.1:{port}" for port in ports)
    path.write_text(text.replace(one, f"url: [{urls}]"))
    return path


def _on(http: int) -> tuple[str, str]:
    """The broker the status page and /metrics say the session is on."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/status.json", timeout=5) as answer:
        page = json.loads(answer.read())["gateway"]["broker"]["url"]
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as answer:
        line = next(x for x in answer.read().decode().splitlines() if x.startswith("factory_"
                    "gateway_broker_info{"))  # fmt: skip
    return page, line.split('"')[1]


def _statuses(collector: Collector) -> list[str]:
    return [p["state"] for t, p, _ in collector.snapshot() if t == STATUS]


@pytest.mark.parametrize("qos", [1, 2])
def test_the_session_moves_to_the_next_broker_and_back_and_nothing_is_lost(
    workdir: Path, qos: int
) -> None:
    """a -> b -> a: back on a, the gateway starts a new session there (a QoS 2 message it had
    released on b must not be completed by a's old session without being delivered)."""
    for sub in ("a", "b"):
        (workdir / sub).mkdir()
    a, b = _brokers(workdir)
    relay = Proxy(a.port)  # the gateway reaches a through it
    port = free_port()
    plc = device("plc-q", port, COUNTERS, poll="100ms")
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", a.port, [plc])),
                  log=workdir / "sim.log")  # fmt: skip
    on_a = on_b = None
    gateway: Process | None = None
    try:
        wait_port(port)
        on_a, on_b = Collector(a.port, "acme/#", True), Collector(b.port, "acme/#", True)
        http = free_port()
        path = write_map(workdir / "gw.yaml", relay.port, [plc],
                         sections=f"http: {{listen: 127.0.0.1:{http}}}")  # fmt: skip
        path.write_text(path.read_text().replace("  qos: 1\n", f"  qos: {qos}\n"))
        path = _listing(path, [relay.port, b.port])
        gateway = Process("run", str(path), log=workdir / "gw.log")
        on_a.wait_for(lambda r: r["seq"] > 100, timeout=30)
        assert on_b.readings() == []  # one session at a time
        until(lambda: _statuses(on_a)[-1:] == ["online"], "online on a")
        until(lambda: _on(http) == (f"mqtt://127.0.0.1:{relay.port}",) * 2, "the page's broker")

        relay.cut()  # a stays up, the gateway's connection to it is gone
        moved = wait_event(gateway, "broker connection lost: moving to the next broker")
        assert (moved["broker"], moved["next"]) == (
            f"127.0.0.1:{relay.port}",
            f"127.0.0.1:{b.port}",
        )
        until(
            lambda: any(e["broker"] == f"127.0.0.1:{b.port}"
                        for e in events(gateway, "broker connected")),
            "connected to b",
        )  # fmt: skip
        # The will fired on the broker it left; the status follows it to the next one.
        until(lambda: _statuses(on_a)[-1:] == ["offline"], "the will on a")
        until(lambda: _statuses(on_b)[-1:] == ["online"], "online on b")
        until(lambda: _on(http) == (f"mqtt://127.0.0.1:{b.port}",) * 2, "the page's broker")
        cut_at = max(r["seq"] for r in on_a.readings())
        on_b.wait_for(lambda r: r["seq"] > cut_at + 100, timeout=30)

        relay.restore()
        b.stop()  # the next one is a again
        until(
            lambda: (
                [e["broker"] for e in events(gateway, "broker connected")][-1:]
                == [f"127.0.0.1:{relay.port}"]
            ),
            "back on a",
        )
        on_a.wait_for(lambda r: r["seq"] > cut_at + 300, timeout=30, since=len(on_a.readings()))
        b.start()
        until(lambda: on_b.subscriptions > 1, "the collector back on b")
        last = max(r["seq"] for r in on_a.readings())
        assert gateway.stop() == 0
        (summary,) = events(gateway, "delivery at shutdown")
        assert summary["dropped"] == {}
    finally:
        if gateway is not None:
            gateway.stop()
        for collector in (on_a, on_b):
            if collector is not None:
                collector.close()
        sim.stop()
        relay.cut()
        a.stop()
        b.stop()
    # Every reading, on one broker or the other, in one sequence: nothing lost across the two
    # moves (at least once: a few may have been sent to both).
    readings = on_a.readings() + on_b.readings()
    seqs = {r["seq"] for r in readings}
    first = min(seqs)
    assert first <= 10
    assert set(range(first, last + 1)) <= seqs
    values = [r["value"] for r in sorted(readings, key=lambda r: r["seq"]) if r["point"] == "c0"]
    assert values == sorted(values)  # one counter, counting, across both brokers


GROUP, NODE = "plant-1", "gw-test"


def _host(port: int, host_id: str) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    """A Sparkplug host's client on one broker: it publishes STATE and keeps what the node
    sends."""
    seen: list[tuple[str, bytes]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{host_id}-{port}")
    client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
    client.on_message = lambda _c, _u, m: seen.append((m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, seen


def _state(client: mqtt.Client, host_id: str, online: bool, timestamp: int) -> None:
    body = json.dumps({"online": online, "timestamp": timestamp})
    client.publish(f"spBv1.0/STATE/{host_id}", body, qos=1, retain=True).wait_for_publish()


def _births(seen: list[tuple[str, bytes]]) -> list[Any]:
    return [ps.NBirth.decode(p) for t, p in list(seen) if t.endswith(f"/NBIRTH/{NODE}")]


def _deaths(seen: list[tuple[str, bytes]]) -> list[Any]:
    return [ps.NDeath.decode(p) for t, p in list(seen) if t.endswith(f"/NDEATH/{NODE}")]


def _metric(payload: Any, name: str) -> Any:
    return next((m.value for m in payload.metrics if m.name == name), None)


def test_a_sparkplug_node_walks_to_the_server_where_its_primary_host_is_online(
    workdir: Path,
) -> None:
    """[tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk]:
    STATE offline on the current server moves the node to the next; so does a host's
    ``Node Control/Next Server``."""
    for sub in ("a", "b"):
        (workdir / sub).mkdir()
    a, b = _brokers(workdir)
    host_id = f"scada-{free_port()}"
    port = free_port()
    plc = device("press", port, COUNTERS, poll="200ms")
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", a.port, [plc])),
                  log=workdir / "sim.log")  # fmt: skip
    hosts: list[mqtt.Client] = []
    gateway: Process | None = None
    try:
        host_a, seen_a = _host(a.port, host_id)
        hosts.append(host_a)
        host_b, seen_b = _host(b.port, host_id)
        hosts.append(host_b)
        wait_port(port)
        _state(host_a, host_id, True, 1000)
        _state(host_b, host_id, True, 500)  # connected to b earlier than to a
        section = f"sparkplug: {{group_id: {GROUP}, primary_host_id: {host_id}}}"
        path = write_map(workdir / "gw.yaml", a.port, [plc], mqtt="format: sparkplug",
                         sections=section)  # fmt: skip
        gateway = Process("run", str(_listing(path, [a.port, b.port])), log=workdir / "gw.log")
        born = until(lambda: _births(seen_a), "NBIRTH on a")[0]
        # A node with several servers can be sent to the next one.
        assert _metric(born, "Node Control/Next Server") is False

        _state(host_a, host_id, False, 2000)  # the host lost its session to a
        until(lambda: _deaths(seen_a), "the NDEATH will on a")
        moved = until(lambda: _births(seen_b), "NBIRTH on b")[0]
        # b's STATE is older than a's last one: another server's clock of the host's sessions.
        assert _metric(moved, "bdSeq") == _metric(born, "bdSeq") + 1
        event = wait_event(gateway, "broker connection lost: moving to the next broker")
        assert event["reason"] == "the primary host is offline on this server"

        _state(host_a, host_id, True, 3000)  # back on a
        now = ps.get_current_timestamp()
        ask = ps.Metric(
            timestamp=now, name="Node Control/Next Server", datatype=ps.DataType.BOOLEAN, value=True
        )
        command = ps.NCmd(timestamp=now, metrics=(ask,)).encode(include_dtypes=True)
        host_b.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", command, qos=1)
        until(lambda: _deaths(seen_b), "the NDEATH will on b")
        until(lambda: len(_births(seen_a)) == 2, "NBIRTH on a again")
        assert gateway.stop() == 0
    finally:
        if gateway is not None:
            gateway.stop()
        for client in hosts:
            client.publish(f"spBv1.0/STATE/{host_id}", b"", retain=True).wait_for_publish(5)
            client.loop_stop()
            client.disconnect()
        sim.stop()
        a.stop()
        b.stop()
