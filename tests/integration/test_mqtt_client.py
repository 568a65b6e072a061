"""The gateway's own MQTT client against mosquitto: what the other tests do not ask of it.

QoS 0 and 2 (the others run at QoS 1), a broker that requires a password, the limits an MQTT 5
broker announces (Maximum Packet Size, Receive Maximum, Server Keep Alive), and a broker that
stops answering without closing the connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import device, write_map

COUNTERS = "".join(
    f"\n      - {{name: c{i}, table: holding, address: {i}, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
    for i in range(10)
)
# 60 registers of text: a per-point message of ~330 bytes
LONG_TEXT = (
    "\n      - {name: label, table: holding, address: 100, type: string, length: 60, "
    f"sim: {{constant: {'L' * 120}}}}}"
)


class Plant:
    """mosquitto (with ``broker`` config lines), one simulated device, a subscriber."""

    def __init__(
        self,
        workdir: Path,
        broker: str = "",
        points: str = COUNTERS,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        # mosquitto's own log beside the others, for a failure's report
        log = f"log_dest file {workdir}/mosquitto.log\n"
        self.broker = Mosquitto(workdir, extra="max_queued_messages 0\n" + log + broker)
        self.port = free_port()
        self.device = device("plc-q", self.port, points, poll="100ms")
        sim_map = write_map(workdir / "sim.yaml", self.broker.port, [self.device])
        self.sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
        self.gateways: list[Process] = []
        try:
            wait_port(self.port)
            self.collector = Collector(self.broker.port, "acme/#", persistent=True, login=login)
        except BaseException:
            self.sim.stop()
            self.broker.stop()
            raise

    def gateway(self, mqtt: str, qos: int = 1) -> Process:
        n = len(self.gateways) + 1
        path = write_map(self.workdir / f"gw{n}.yaml", self.broker.port, [self.device], mqtt=mqtt)
        path.write_text(path.read_text().replace("  qos: 1\n", f"  qos: {qos}\n"))
        gateway = Process("run", str(path), log=self.workdir / f"gw{n}.log")
        self.gateways.append(gateway)
        return gateway

    def seqs(self) -> set[int]:
        return {r["seq"] for r in self.collector.readings()}

    def wait_complete(self, upto: int, timeout: float = 60) -> set[int]:
        """Wait until every seq from the first received to ``upto`` arrived; the seqs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seqs = self.seqs()
            if seqs and set(range(min(seqs), upto + 1)) <= seqs:
                return seqs
            time.sleep(0.2)
        seqs = self.seqs()
        missing = sorted(set(range(min(seqs, default=0), upto + 1)) - seqs)
        raise AssertionError(f"{len(missing)} seqs missing up to {upto}: {missing[:10]}...")

    def close(self) -> None:
        self.collector.close()
        for gateway in self.gateways:
            gateway.stop()
        self.sim.stop()
        self.broker.stop()


def _events(process: Process, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(x) for x in process.output().splitlines() if x.startswith("{"))
    return [e for e in lines if e.get("event") == event]


@pytest.fixture
def plant(workdir: Path) -> Any:
    made: list[Plant] = []

    def make(
        broker: str = "", points: str = COUNTERS, login: tuple[str, str] | None = None
    ) -> Plant:
        made.append(Plant(workdir, broker, points, login))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_qos_2_delivers_every_reading_through_a_broker_restart(plant: Any) -> None:
    line = plant()
    line.gateway("", qos=2)
    line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
    line.broker.stop()
    time.sleep(2)
    line.broker.start()
    resumed_at = max(line.seqs())
    line.collector.wait_for(lambda r: r["seq"] > resumed_at + 300, timeout=30)
    seqs = line.wait_complete(resumed_at + 250)
    reading = line.collector.readings()[-1]
    assert reading["quality"] == "good" and isinstance(reading["value"], int)
    assert len(seqs) > 500


def test_qos_0_publishes_every_reading_while_connected(plant: Any) -> None:
    line = plant()
    line.gateway("", qos=0)
    line.collector.wait_for(lambda r: r["seq"] > 300, timeout=30)
    seqs = line.wait_complete(300)
    assert len(seqs & set(range(1, 301))) >= 290  # from the first few on: none lost after
    values = [r["value"] for r in line.collector.readings() if r["point"] == "c3"]
    assert values == sorted(values) and values[-1] > values[0]  # the counter, counting


@pytest.mark.parametrize("version", [3, 5])
def test_a_broker_with_passwords_refuses_a_wrong_one_and_says_why(
    plant: Any, workdir: Path, version: int
) -> None:
    passwords = workdir / "passwords"
    passwords.touch()
    for user in ("gateway", "platform"):
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, "s3cret"], check=True)
    line = plant(
        broker=f"allow_anonymous false\npassword_file {passwords}\n",
        login=("platform", "s3cret"),
    )
    wrong = line.gateway(f"version: {version}\nusername: gateway\npassword: wrong")
    deadline = time.monotonic() + 15
    while not _events(wrong, "broker refused connection") and time.monotonic() < deadline:
        time.sleep(0.1)
    (refused,) = _events(wrong, "broker refused connection")  # once, not per retry
    assert refused["reason"] in ("not authorized", "bad user name or password")
    assert "wrong" not in wrong.output()  # the password never reaches the log
    assert line.collector.readings() == []
    wrong.stop()
    line.gateway(f"version: {version}\nusername: gateway\npassword: s3cret")
    reading = line.collector.wait_for(lambda r: r["point"] == "c0", timeout=15)
    assert reading["quality"] == "good"


def test_mqtt5_limits_of_the_broker_are_kept(plant: Any) -> None:
    """Maximum Packet Size: a message over it is dropped and counted (the broker would cut
    the connection), the rest flows; Receive Maximum and Server Keep Alive are taken."""
    line = plant(
        broker="max_packet_size 300\nmax_inflight_messages 3\nmax_keepalive 10\n",
        points=COUNTERS + LONG_TEXT,
    )
    gateway = line.gateway("version: 5\nkeepalive: 60s")
    line.collector.wait_for(lambda r: r["seq"] > 400, timeout=30)
    assert gateway.stop() == 0
    (connected,) = _events(gateway, "broker connected")
    assert connected["keepalive"] == 10  # the broker's, not the map's 60 s
    assert (connected["receive_maximum"], connected["maximum_packet_size"]) == (3, 300)
    readings = line.collector.readings()
    assert {r["point"] for r in readings} == {f"c{i}" for i in range(10)}
    (summary,) = _events(gateway, "delivery at shutdown")
    too_large = summary["dropped"]["too_large"]
    label_polls = too_large  # one label reading per poll, each over 300 bytes
    assert label_polls > 30
    # Every seq is delivered or counted as too large: none lost to the broker's limits.
    seqs = {r["seq"] for r in readings}
    assert max(seqs) - min(seqs) + 1 - len(seqs) <= too_large + summary["buffered"]
    assert len(_events(gateway, "the broker refuses messages: they are dropped")) == 1
    assert _events(gateway, "broker connection lost") == []


def test_a_broker_that_hangs_is_left_after_the_keep_alive_and_nothing_is_lost(
    plant: Any,
) -> None:
    line = plant()
    gateway = line.gateway("keepalive: 2s")
    line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
    os.kill(line.broker.proc.pid, signal.SIGSTOP)  # the connection stays open; no answers
    try:
        deadline = time.monotonic() + 15
        while not _events(gateway, "broker connection lost") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(line.broker.proc.pid, signal.SIGCONT)
    (lost, *_) = _events(gateway, "broker connection lost")
    assert "keep-alive" in lost["reason"]
    resumed_at = max(line.seqs())
    line.collector.wait_for(lambda r: r["seq"] > resumed_at + 300, timeout=60)
    line.wait_complete(resumed_at + 250)
