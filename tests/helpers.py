"""Test helpers: a real mosquitto on a free loopback port, an MQTT collector, subprocesses."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.testing import Mosquitto, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Collector", "Mosquitto", "Process", "free_port", "wait_port"]


class Collector:
    """Subscribes like any consumer would and keeps every message, decoded."""

    def __init__(self, port: int, topic: str = "#", persistent: bool = False) -> None:
        """``persistent``: a durable session, so the broker queues messages while it is away."""
        self.messages: list[tuple[str, Any, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{free_port()}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector could not subscribe")

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
        return [p for t, p, _ in self.snapshot() if isinstance(p, dict) and "point" in p]

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

    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--log-format", "json", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
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
