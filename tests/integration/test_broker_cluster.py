"""A real broker cluster: RabbitMQ with its MQTT plugin, three nodes on loopback (its client-id
tracking is a Raft cluster that needs a majority of the nodes: RabbitMQ does not support the
plugin on two). Two gateways (two shards of one map) list nodes A and B; a subscriber on node B must
receive every reading; node A is killed and the gateways move to node B with nothing lost;
node A comes back and nothing more is duplicated."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import Process, free_port, until, wait_port
from tests.integration.line import COUNTERS, events
from tests.integration.plant import device, write_map
from tests.rabbitmq import RabbitCluster

pytestmark = pytest.mark.timeout(300)

A, B = 0, 1
WINDOW = 250  # the forwarder's window: at most this many messages in flight on node A


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"), nodes=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _kept(folder: Path) -> set[int]:
    """The seqs waiting in a stopped gateway's disk buffer."""
    database = sqlite3.connect(f"file:{folder}/buffer.sqlite3?mode=ro", uri=True)
    with contextlib.closing(database) as db:
        return {seq for (seq,) in db.execute("SELECT seq FROM records")}


class Subscriber:
    """A consumer on one node: persistent session, QoS 1, every reading kept."""

    def __init__(self, port: int) -> None:
        self.readings: list[dict[str, Any]] = []
        self.states: list[tuple[str, str]] = []  # (status topic, state), as they came
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"historian-{free_port()}", clean_session=False
        )
        self.client.on_connect = lambda c, *_: c.subscribe("acme/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError("the subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        payload = orjson.loads(message.payload)
        with self._lock:
            if "quality" in payload:
                self.readings.append(payload)
            elif message.topic.endswith("/status") and "state" in payload:
                self.states.append((message.topic, payload["state"]))

    def of(self, device: str) -> list[dict[str, Any]]:
        """The readings of one device (each shard's gateway has its own seqs)."""
        with self._lock:
            return [r for r in self.readings if r["device"] == device]

    def seqs(self, device: str) -> list[int]:
        return [r["seq"] for r in self.of(device)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_gateways_move_to_the_next_node_and_the_subscriber_misses_nothing(
    cluster: RabbitCluster, workdir: Path
) -> None:
    ports = {shard: free_port() for shard in ("a", "b")}
    plcs = {
        shard: device(f"plc-{shard}", port, COUNTERS, poll="100ms").replace(
            "protocol:", f"shard: {shard}\n    protocol:", 1
        )
        for shard, port in ports.items()
    }
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", 1883, list(plcs.values()))),
                  log=workdir / "sim.log")  # fmt: skip
    plant = write_map(workdir / "plant.yaml", cluster.mqtt_port(A), list(plcs.values()))
    one = f"url: {cluster.url(A)}"
    plant.write_text(plant.read_text().replace(one, f"url: [{cluster.url(A)}, {cluster.url(B)}]"))
    subscriber = Subscriber(cluster.mqtt_port(B))
    gateways: dict[str, Process] = {}
    ids = {shard: f"plc-{shard}" for shard in ports}  # the device each shard runs
    try:
        for port in ports.values():
            wait_port(port)
        for shard in ports:
            (workdir / shard).mkdir()
            gateways[shard] = Process(
                "run", str(plant), "--only", f"shard={shard}", log=workdir / shard / "gw.log"
            )
        for plc in ids.values():  # published on A, received on B
            until(lambda d=plc: len(subscriber.of(d)) > 200, f"{plc} through node B")

        cluster.kill(A)
        for shard, gateway in gateways.items():
            moved = until(
                lambda g=gateway: events(g, "broker connection lost: moving to the next broker"),
                f"shard {shard} leaving node A",
            )[0]
            assert moved["next"] == f"127.0.0.1:{cluster.mqtt_port(B)}"
            until(
                lambda g=gateway: [
                    e for e in events(g, "broker connected")
                    if e["broker"] == f"127.0.0.1:{cluster.mqtt_port(B)}"
                ],
                f"shard {shard} on node B",
            )  # fmt: skip
        on_b = {g: max(subscriber.seqs(g)) for g in ids.values()}
        for gateway_id, seq in on_b.items():
            until(lambda g=gateway_id, s=seq: max(subscriber.seqs(g)) > s + 200, "live on B")

        cluster.restart(A)
        back = {g: len(subscriber.of(g)) for g in ids.values()}
        for gateway_id, seen in back.items():
            until(lambda g=gateway_id, n=seen: len(subscriber.of(g)) > n + 200, "A back")
        for shard, gateway in gateways.items():
            assert gateway.stop() == 0, shard
            (summary,) = events(gateway, "delivery at shutdown")
            assert summary["dropped"] == {}
            # Every reading up to the last is at the subscriber, or kept on disk for the next
            # start (a stop waits only 0.5 s for the broker's last acknowledgements).
            kept = _kept(workdir / "data" / "buffer" / shard)
            assert len(kept) == summary["buffered"]
            whole = set(range(1, summary["last_seq"] + 1))
            until(lambda d=ids[shard], w=whole, k=kept: w <= set(subscriber.seqs(d)) | k,
                  f"{shard}'s readings")  # fmt: skip
            # The status followed the gateway to node B: online there, offline at the end.
            topic = f"acme/plant-1/assembly/_gateway/gw-test-{shard}/status"
            until(lambda t=topic: (t, "offline") in subscriber.states, f"{shard} offline")
            states = [state for t, state in subscriber.states if t == topic]
            assert states[-2:] == ["online", "offline"], states
    finally:
        for gateway in gateways.values():
            gateway.stop()
        sim.stop()
        subscriber.close()

    for shard, gateway_id in ids.items():
        seqs = subscriber.seqs(gateway_id)
        # Nothing lost: every seq from the first to the last, across the move.
        assert set(range(min(seqs), max(seqs) + 1)) <= set(seqs), shard
        assert min(seqs) == 1
        # Nothing duplicated beyond QoS 1: only what was in flight on node A when it died is
        # sent again, and nothing after node A came back.
        twice = [seq for seq, n in Counter(seqs).items() if n > 1]
        assert len(twice) <= WINDOW, (shard, len(twice))
        assert all(seq < max(seqs[: back[gateway_id]]) for seq in twice)
        # One counter, counting, in the order it was read.
        by_seq = sorted(subscriber.of(gateway_id), key=lambda r: r["seq"])
        values = [r["value"] for r in by_seq if r["point"] == "c0"]
        assert values == sorted(values) and values[-1] > values[0]
