"""Test helpers: a real mosquitto on a free loopback port, an MQTT collector, subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mosquitto import Mosquitto, free_port, no_delay, wait_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "Amqtt",
    "Collector",
    "Commander",
    "Mosquitto",
    "Process",
    "Proxy",
    "free_port",
    "until",
    "wait_port",
]

T = TypeVar("T")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``factory-gateway ARGS`` run to its end (60 s at most), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env} if env else None,
    )


def until(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """The first truthy result of ``check()``, polled every 0.1 s; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


class Amqtt:
    """amqtt (a second broker, written by others, MQTT 3.1.1 only) on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "amqtt.yaml"
        self.conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        self.log = workdir / "amqtt.log"
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        amqtt = Path(sys.executable).with_name("amqtt")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(amqtt), "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Proxy:
    """A TCP relay (socat) in front of a broker: ``cut`` drops every connection through it and
    refuses new ones, as a network outage does, while the broker and its other clients go on."""

    def __init__(self, target_port: int) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed: run `make test`, which installs it")
        self.socat = socat
        self.target = target_port
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restore()

    def restore(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.socat,
                f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
                f"TCP:127.0.0.1:{self.target}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its forked relays are killed with it
        )
        wait_port(self.port)

    def cut(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        """Connections stay open but nothing passes: a broker that hangs. ``cut`` ends it."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)


class Collector:
    """Subscribes like any consumer would and keeps every message, decoded."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        persistent: bool = False,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``persistent``: a durable session, so the broker queues messages while it is away;
        ``login``: user name and password."""
        self.messages: list[tuple[str, Any, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{free_port()}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.subscriptions = 0  # how many times it has subscribed (once per connection)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector could not subscribe")

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1
        self._subscribed.set()

    def wait_subscribed(self, more_than: int, timeout: float = 15.0) -> None:
        """Wait until it has subscribed more than ``more_than`` times (after a reconnect)."""
        deadline = time.monotonic() + timeout
        while self.subscriptions <= more_than:
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector did not subscribe again in {timeout}s")
            time.sleep(0.05)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = message.payload
        with self._lock:
            self.messages.append((message.topic, payload, bool(message.retain)))

    def snapshot(self) -> list[tuple[str, Any, bool]]:
        with self._lock:
            return list(self.messages)

    def readings(self) -> list[dict[str, Any]]:
        return [p for _, p, _ in self.snapshot() if isinstance(p, dict) and "quality" in p]

    def wait_for_message(self, predicate: Callable[[str, Any], bool], timeout: float = 15.0) -> Any:
        """The payload of the first message (any topic) for which ``predicate(topic,
        payload)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for topic, payload, _retained in self.snapshot():
                if predicate(topic, payload):
                    return payload
            time.sleep(0.05)
        raise AssertionError(f"no matching message within {timeout}s")

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0, since: int = 0
    ) -> dict[str, Any]:
        """The first reading (from index ``since``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reading in self.readings()[since:]:
                if predicate(reading):
                    return reading
            time.sleep(0.05)
        raise AssertionError(f"no matching reading within {timeout}s")

    def close(self) -> None:
        self.client.disconnect()
        # paho races here: its network thread may end (and clear its handle) while loop_stop
        # joins it. The thread ending is all we want.
        with contextlib.suppress(AttributeError):
            self.client.loop_stop()


class Process:
    """``factory-gateway ...`` in a subprocess, output kept in a file for failure reports."""

    def __init__(self, *args: str, log: Path, env: dict[str, str] | None = None) -> None:
        """``env``: more environment variables."""
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--log-format", "json", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **env} if env else None,
        )

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does to a device."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Commander:
    """An upstream platform sending commands and collecting every answer."""

    def __init__(
        self,
        port: int,
        results: str | list[str] = "#",
        version: int = 5,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``version``: 3 for MQTT 3.1.1 (no response topic, correlation or user property);
        ``login``: user name and password."""
        self.answers: list[tuple[str, Any, bytes | None]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.v5 = version == 5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"cmd-{free_port()}",
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
        )
        self.client.on_socket_open = no_delay  # as an application should: no 40 ms Nagle waits
        filters = [results] if isinstance(results, str) else results
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("commander could not subscribe")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = message.payload
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            self.answers.append((message.topic, payload, correlation))

    def send(
        self,
        topic: str,
        payload: bytes | str,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        client_id: str | None = None,
        retain: bool = False,
    ) -> int:
        """Publish a command; returns how many answers had arrived before it (for ``answer``)."""
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
        if client_id is not None:
            properties.UserProperty = ("client_id", client_id)
        with self._lock:
            before = len(self.answers)
        self.client.publish(
            topic, payload, qos=1, retain=retain, properties=properties if self.v5 else None
        ).wait_for_publish(5)
        return before

    def answer(self, topic: str, since: int = 0, timeout: float = 10.0) -> tuple[Any, bytes | None]:
        """The first answer on ``topic`` after index ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for answer_topic, payload, correlation in self.answers[since:]:
                    if answer_topic == topic:
                        return payload, correlation
            time.sleep(0.001)
        raise AssertionError(f"no answer on {topic} within {timeout}s")

    def command(self, topic: str, payload: bytes | str, timeout: float = 10.0) -> Any:
        """Send a command and return its result (from ``{topic}/result``)."""
        since = self.send(topic, payload)
        return self.answer(topic + "/result", since, timeout)[0]

    def first_command(self, topic: str, payload: bytes | str, timeout: float = 30.0) -> Any:
        """``command``, sent again every 2 s until answered: a gateway that just started may
        not have subscribed yet (a command nobody subscribed to is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            since = self.send(topic, payload)
            try:
                return self.answer(topic + "/result", since, timeout=2.0)[0]
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def close(self) -> None:
        self.client.disconnect()
        with contextlib.suppress(AttributeError):
            self.client.loop_stop()
