"""Processes and measurements shared by the benchmark scenarios.

The gateway and the simulators run as separate processes, so the gateway's CPU and memory are
read from /proc for its process alone, and an independent MQTT subscriber counts what arrives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.mosquitto import Mosquitto, no_delay, wait_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
SEQ = re.compile(rb'"seq":(\d+)')
GW_TS = re.compile(rb'"gw_ts":"([^"]+)"')
# Each value's source timestamp, in a per-point message or inside a device batch.
POINT_TS = re.compile(rb'"quality":"[a-z]+","ts":"([^"]+)"')
# The lean simulator's `clock` point: when it last changed its values, ms since the epoch mod 2^32.
CLOCK = re.compile(rb'"point":"clock","value":(\d+)|"clock":\{"value":(\d+)')


def free_port_block(count: int, start: int = 20000) -> int:
    """The first port of ``count`` consecutive free loopback ports."""
    base = start
    while base + count < 60000:
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    base = port + 1
                    break
        else:
            return base
    raise RuntimeError(f"no block of {count} free ports")


# The scenario's folders (maps, logs, the broker's files): removed when the scenario ends
# well, kept for a look when it fails (``python -m bench`` does both).
FOLDERS: list[Path] = []


def scratch(prefix: str) -> Path:
    """A new folder for a scenario's files, removed by ``remove_scratch`` after a good run."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    FOLDERS.append(folder)
    return folder


def remove_scratch() -> None:
    while FOLDERS:
        shutil.rmtree(FOLDERS.pop(), ignore_errors=True)


class Broker(Mosquitto):
    """mosquitto (amqtt is ~5x slower: it would measure itself) with unbounded queues, so a
    slow subscriber never makes the broker drop what we count, and ``set_tcp_nodelay`` (as
    docs/device-map.md recommends for commands: mosquitto's default Nagle adds ~40 ms)."""

    def __init__(self, nodelay: bool = True) -> None:
        super().__init__(
            scratch("bench-mosquitto-"),
            extra="max_queued_messages 0\nmax_inflight_messages 0\n"
            + ("set_tcp_nodelay true\n" if nodelay else ""),
        )


# The gateway's ``--loop`` (auto: uvloop when installed); ``python -m bench --loop`` sets it.
GATEWAY_LOOP = "auto"


def gateway_process(*args: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    options = ["--log-format", "json", "--log-level", "warning", "--loop", GATEWAY_LOOP]
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *options, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


class Counter:
    """An independent subscriber: counts readings and seq gaps/duplicates.

    It is ``mosquitto_sub`` (C, Debian's mosquitto-clients) printing payloads into a pipe that a
    thread scans for ``seq``: a Python MQTT client tops out near the gateway's own rate and
    would measure itself. Each line starts with the time mosquitto_sub received the message
    (``%U``), so a moment's lag of the scanning thread is not counted as latency.
    """

    FORMAT = "%U %p"  # mosquitto_sub's line: receive time, payload

    def __init__(self, port: int, topic: str, latency: bool = False, clock: bool = False) -> None:
        """``latency``: also keep, per reading, (receive - ts, gw_ts - ts) in seconds.
        ``clock``: keep receive - (the simulator's change time in a ``clock`` point), seconds."""
        self.lock = threading.Lock()
        self.latency = latency
        self.latencies: list[tuple[float, float]] = []
        self.clock = clock
        self.changes: list[float] = []  # change -> receive, seconds
        self.messages = 0
        self.values = 0  # readings: one per message, or every point of a device batch
        self.seqs: set[int] = set()
        self.duplicates = 0
        binary = shutil.which("mosquitto_sub")
        if binary is None:
            raise RuntimeError(
                "the benchmark needs mosquitto_sub: apt-get install mosquitto-clients"
            )
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-F", self.FORMAT],
            stdout=subprocess.PIPE,
        )
        # A burst (1,000 per-point messages at once) must not fill the pipe while this thread
        # scans: mosquitto_sub would stop reading its socket, and the wait would be counted as
        # the gateway's latency. 64 KiB by default; as large as the system allows.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, _pipe_max())  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # subscribed before the gateway starts

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, _, line = line.partition(b" ")
            found = SEQ.search(line)
            if found is None:
                continue  # status messages carry no seq
            seq = int(found.group(1))
            if self.latency and (gw := GW_TS.search(line)):
                received, gw_ts = float(stamp), _epoch(gw.group(1))
                stamps = [_epoch(t) for t in POINT_TS.findall(line)]
                with self.lock:
                    self.latencies.extend((received - ts, gw_ts - ts) for ts in stamps)
            if self.clock and (changed := CLOCK.search(line)):
                now_ms = int(float(stamp) * 1000) % 2**32
                with self.lock:
                    value = int(changed.group(1) or changed.group(2))
                    self.changes.append(((now_ms - value) % 2**32) / 1000)
            with self.lock:
                self.messages += 1
                self.values += line.count(b'"quality"')
                if seq in self.seqs:
                    self.duplicates += 1
                self.seqs.add(seq)

    def reset(self) -> None:
        with self.lock:
            self.latencies.clear()
            self.changes.clear()
            self.messages = 0
            self.values = 0
            self.seqs.clear()
            self.duplicates = 0

    def snapshot(self) -> int:
        with self.lock:
            return self.messages

    def lost(self) -> int:
        with self.lock:
            if not self.seqs:
                return 0
            return (max(self.seqs) - min(self.seqs) + 1) - len(self.seqs)

    def stop(self) -> None:
        end(self.proc, 10)


class SparkplugCounter(Counter):
    """``Counter`` for Sparkplug B: mosquitto_sub prints each payload in hex, this thread
    decodes it (protobuf's C decoder), counts DDATA metrics, and checks that ``seq`` goes up
    by one from each NBIRTH (``lost`` counts the messages a gap says are missing)."""

    FORMAT = "%U %t %x"

    def __init__(self, port: int, topic: str, latency: bool = False, clock: bool = False) -> None:
        self.gaps = 0
        self._last_seq: int | None = None
        self._clock_alias: int | None = None
        super().__init__(port, topic, latency=False, clock=clock)

    def _read(self) -> None:
        from gateway.delivery.sparkplug.sparkplug_b_pb2 import Payload

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, topic, raw = line.split(b" ", 2)
            kind = topic.split(b"/")[2]
            payload = Payload.FromString(bytes.fromhex(raw.strip().decode()))
            if kind == b"NDEATH":
                continue
            with self.lock:
                if kind == b"NBIRTH":
                    self._last_seq = payload.seq
                    continue
                if self._last_seq is not None and payload.seq != (self._last_seq + 1) % 256:
                    self.gaps += (payload.seq - self._last_seq - 1) % 256
                self._last_seq = payload.seq
                if kind == b"DBIRTH":
                    for metric in payload.metrics:
                        if metric.name == "clock":
                            self._clock_alias = metric.alias
                    continue
                if kind != b"DDATA":
                    continue
                self.messages += 1
                self.values += len(payload.metrics)
                if self.clock and self._clock_alias is not None:
                    for metric in payload.metrics:
                        if metric.alias == self._clock_alias:
                            now_ms = int(float(stamp) * 1000) % 2**32
                            self.changes.append(((now_ms - metric.int_value) % 2**32) / 1000)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.gaps = 0

    def lost(self) -> int:
        with self.lock:
            return self.gaps


def end(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate a process, and kill it if it has not ended within ``timeout``.

    mosquitto_sub handles SIGTERM by finishing its loop, which never happens while it is
    blocked writing into a full pipe: a run once left it, the gateway and the simulator behind.
    """
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


F_SETPIPE_SZ = 1031  # Linux's fcntl for a pipe's capacity


def _pipe_max() -> int:
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 1 << 20


def _epoch(text: bytes) -> float:
    return datetime.fromisoformat(text.decode().replace("Z", "+00:00")).timestamp()


def percentiles(values: list[float], *wanted: float) -> list[float]:
    """Nearest-rank percentiles, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return [float("nan")] * len(wanted)
    return [
        round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1) for p in wanted
    ]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def write_result(name: str, result: dict[str, Any]) -> Path:
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


class Requester:
    """An upstream application sending commands one at a time and timing each answer."""

    def __init__(self, port: int, answers: str) -> None:
        self._answered = threading.Event()
        self.last: dict[str, Any] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-cmd-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(answers, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        # Like the gateway, send small packets at once: with Nagle on, a command published
        # right after the PUBACK of the previous answer waits ~40 ms for the broker's ACK.
        self.client.on_socket_open = no_delay
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the command client could not subscribe")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.last = orjson.loads(message.payload)
        self._answered.set()

    def command(self, topic: str, value: Any, qos: int = 1) -> float:
        """Seconds from publishing the command to receiving its result."""
        self._answered.clear()
        started = time.perf_counter()
        self.client.publish(topic, orjson.dumps({"value": value}), qos=qos)
        if not self._answered.wait(10):
            raise RuntimeError(f"no answer to a command on {topic}")
        elapsed = time.perf_counter() - started
        if not self.last.get("ok"):
            raise RuntimeError(f"command refused: {self.last}")
        return elapsed

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Scraper:
    """Prometheus in miniature: GET /metrics every ``every`` seconds, on a thread of its own."""

    def __init__(self, port: int, every: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.scrapes = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with urllib.request.urlopen(self.url, timeout=10) as answer:
                self.bytes += len(answer.read())
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class PageWatcher:
    """The status page open in a headless chromium, the first device's points shown: what a
    commissioning engineer's tablet costs the gateway. Also what the page weighs."""

    def __init__(self, port: int) -> None:
        from tests.browser import chromium  # selenium: a dev dependency, as the bench is

        self.url = f"http://127.0.0.1:{port}/"
        self._stack = contextlib.ExitStack()
        self.browser = browser = self._stack.enter_context(chromium(1280, 900))
        browser.get(self.url)
        deadline = time.monotonic() + 30
        while not browser.execute_script("return !!document.querySelector('tr.device')"):
            if time.monotonic() > deadline:
                raise RuntimeError("the status page shows no device")
            time.sleep(0.2)
        browser.execute_script("document.querySelector('tr.device').click()")
        self.page_bytes = sum(
            len(urllib.request.urlopen(self.url + name, timeout=10).read())
            for name in ("", "assets/status.js", "assets/status.css")
        )

    def shown(self) -> int:
        """Point rows the page shows (for the result: the page really followed)."""
        return int(
            self.browser.execute_script(
                "return document.querySelectorAll('tr[data-point] td.value[data-value]').length"
            )
        )

    def stop(self) -> None:
        self._stack.close()


class EventReader:
    """The status page's event stream with ``device`` open, read on a thread of its own:
    what a page costs the gateway, without a browser on the same cores."""

    def __init__(self, port: int, device: str) -> None:
        self.url = f"http://127.0.0.1:{port}/events?open={device}"
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with urllib.request.urlopen(self.url, timeout=10) as stream:
            while not self._stop.is_set():
                self.bytes += len(stream.read1(65536))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def event_bytes_per_s(port: int, device: str, seconds: float = 5.0) -> float:
    """Bytes per second of the page's event stream with ``device`` open."""
    url = f"http://127.0.0.1:{port}/events?open={device}"
    received = 0
    with urllib.request.urlopen(url, timeout=10) as stream:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            received += len(stream.read1(65536))
    return received / seconds


def start_gateway(path: Path, counter: Counter, minimum: int = 1) -> tuple[Any, float]:
    """``factory-gateway run PATH`` (log beside the map); returns it once the counter has seen
    ``minimum`` messages, with the seconds that took (loading the map, connecting)."""
    launched = time.monotonic()
    gateway = gateway_process("run", str(path), log=path.parent / "gateway.log")
    while counter.snapshot() < minimum:
        if gateway.poll() is not None or time.monotonic() - launched > 300:
            gateway.kill()
            raise RuntimeError(f"the gateway did not start: see {path.parent / 'gateway.log'}")
        time.sleep(0.2)
    return gateway, time.monotonic() - launched


def warm_up(
    path: Path, counter: Counter, ports: Sequence[int], warmup: float, timeout: float = 300
) -> tuple[Any, float]:
    """Wait for the simulators' ports, start the gateway, let it run ``warmup`` seconds and
    zero the counter: what a measurement starts from. The gateway and its first value's
    delay, as ``start_gateway`` gives them."""
    for port in ports:
        wait_port(port, timeout=timeout)
    gateway, first_value_s = start_gateway(path, counter)
    time.sleep(warmup)
    counter.reset()
    return gateway, first_value_s


def stop_all(counter: Counter, gateway: Any, others: list[Any], broker: Broker) -> None:
    """End a scenario: the subscriber, the gateway (cleanly), the simulators, the broker.
    Each is ended even when an earlier one will not: nothing outlives the benchmark."""
    try:
        counter.stop()
    finally:
        try:
            if gateway is not None:
                end(gateway, 60)
        finally:
            try:
                for process in others:
                    if process.poll() is None:
                        process.terminate()
                for process in others:
                    end(process, 30)
            finally:
                broker.stop()
