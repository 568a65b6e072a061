"""The gateway's MQTT transport against mosquitto: what the other tests do not ask of it.

QoS 0 and 2 (the others run at QoS 1), a broker that requires a password, the limits an MQTT 5
broker announces (Maximum Packet Size, Receive Maximum, Server Keep Alive), and a broker that
stops answering without closing the connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Proxy
from tests.integration.line import COUNTERS, LONG_TEXT, wait_buffered, wait_event
from tests.integration.line import events as _events


@pytest.mark.parametrize("version", [3, 5])
def test_qos_2_delivers_every_reading_through_a_broker_restart(
    make_line: Any, version: int
) -> None:
    """mosquitto takes at most 20 unreleased QoS 2 messages from a client (its Receive Maximum
    on MQTT 5) and drops the rest; paho alone resends all it holds after a reconnect. With a
    backlog of hundreds, every one must arrive: the window stays within the broker's limit."""
    line = make_line()
    gateway = line.gateway(f"version: {version}", qos=2)
    line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
    line.broker.stop()
    wait_event(gateway, "broker connection lost")
    wait_buffered(line.workdir, 300)  # the outage lasts until 300 readings wait
    line.broker.start()
    resumed_at = max(line.seqs())
    line.collector.wait_for(lambda r: r["seq"] > resumed_at + 500, timeout=30)
    seqs = line.wait_complete(resumed_at + 450)
    reading = line.collector.readings()[-1]
    assert reading["quality"] == "good" and isinstance(reading["value"], int)
    assert len(seqs) > 700
    assert gateway.stop() == 0
    (summary,) = _events(gateway, "delivery at shutdown")
    assert summary["dropped"] == {}


@pytest.mark.parametrize("version", [3, 5])
def test_qos_2_through_a_restart_of_a_broker_that_forgets_sessions(
    make_line: Any, version: int
) -> None:
    """Without persistence the broker forgets the session and the QoS 2 messages it had not
    released; paho would complete them with a bare PUBREL. Each of those is sent again."""
    line = make_line(persistence=False)
    # The gateway reaches the broker through a proxy, so that it comes back only after the
    # collector has subscribed again: the broker forgets the collector's session too.
    proxy = Proxy(line.broker.port)
    try:
        gateway = line.gateway(f"version: {version}", qos=2, port=proxy.port)
        line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
        proxy.cut()
        subscribed = line.collector.subscriptions
        line.broker.stop()
        wait_event(gateway, "broker connection lost")
        wait_buffered(line.workdir, 300)
        line.broker.start()
        line.collector.wait_subscribed(more_than=subscribed)
        proxy.restore()
        resumed_at = max(line.seqs())
        line.collector.wait_for(lambda r: r["seq"] > resumed_at + 500, timeout=30)
        line.wait_complete(resumed_at + 450)
        assert gateway.stop() == 0
        (summary,) = _events(gateway, "delivery at shutdown")
        assert summary["dropped"] == {}
    finally:
        proxy.cut()
    connected = _events(gateway, "broker connected")
    assert [e["session_present"] for e in connected] == [False, False]


def test_qos_0_publishes_every_reading_while_connected(make_line: Any) -> None:
    line = make_line()
    line.gateway("", qos=0)
    line.collector.wait_for(lambda r: r["seq"] > 300, timeout=30)
    seqs = line.wait_complete(300)
    assert len(seqs & set(range(1, 301))) >= 290  # from the first few on: none lost after
    values = [r["value"] for r in line.collector.readings() if r["point"] == "c3"]
    assert values == sorted(values) and values[-1] > values[0]  # the counter, counting


@pytest.mark.parametrize("version", [3, 5])
def test_a_broker_with_passwords_refuses_a_wrong_one_and_says_why(
    make_line: Any, workdir: Path, version: int
) -> None:
    passwords = workdir / "passwords"
    passwords.touch()
    for user in ("gateway", "platform"):
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, "s3cret"], check=True)
    line = make_line(
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


def test_mqtt5_limits_of_the_broker_are_kept(make_line: Any) -> None:
    """Maximum Packet Size: a message over it is dropped and counted (the broker would cut
    the connection), the rest flows; Receive Maximum and Server Keep Alive are taken."""
    line = make_line(
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
    make_line: Any,
) -> None:
    line = make_line()
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
