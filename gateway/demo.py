"""``factory-gateway demo``: the whole chain in one process, with a live table.

simulators -> gateway -> MQTT broker (embedded amqtt, or ``--broker``) -> a subscriber that fills
the table. The table shows what arrived *at the broker*, so the demo proves the full path: JSON
messages, or with ``--format sparkplug`` Sparkplug B births, data and deaths decoded as a host
would (names and units from the births, values by alias).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import paho.mqtt.client as mqtt
import structlog
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config.load import Config
from gateway.config.schema import SparkplugSection
from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.payload import QUALITY_CODES, metric_value
from gateway.delivery.sparkplug.topics import NAMESPACE
from gateway.runtime import Gateway

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
log = structlog.get_logger("gateway.demo")


async def run_demo(
    config: Config, broker_url: str | None, port: int, duration: float | None
) -> None:
    broker: Any = None
    if broker_url is None:
        port = port or _free_port()
        broker = await _start_embedded_broker(port)
        broker_url = f"mqtt://127.0.0.1:{port}"
    mqtt_config = config.mqtt.model_copy(update={"url": [broker_url]})
    # The demo keeps its buffer in memory and its files (Sparkplug's bdSeq) in a temporary
    # folder: it leaves nothing behind in the repository.
    state = tempfile.TemporaryDirectory(prefix="factory-gateway-demo-")
    buffer_config = config.buffer.model_copy(update={"mode": "memory", "path": Path(state.name)})
    config = dataclasses.replace(config, mqtt=mqtt_config, buffer=buffer_config)

    from simulators.run import start_simulators

    try:
        simulator = await start_simulators(config)
    except BaseException:
        await _stop_broker(broker)
        state.cleanup()
        raise
    table = LiveTable(config)
    view = SparkplugView(table, config) if config.sparkplug is not None else JsonView(table, config)
    subscriber = _subscribe(config, view)
    running = Gateway(config)
    gateway = asyncio.create_task(running.run(), name="gateway")
    try:
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            await asyncio.sleep(1.0)
            if gateway.done():
                gateway.result()  # surface the gateway's error
            listener = running.listener
            page = listener.url if listener is not None and listener.listening else "not served"
            table.print(f"broker {broker_url} - status page {page} - {view.summary()}")
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
        subscriber.disconnect()
        await asyncio.to_thread(subscriber.loop_stop)
        await simulator.stop()
        await _stop_broker(broker)
        state.cleanup()


def with_format(config: Config, format: str | None) -> Config:
    """The map with ``mqtt.format`` set (``demo --format``); Sparkplug's group is the map's
    site and its edge node the gateway's id unless the map has a ``sparkplug:`` section."""
    if format is None or format == config.mqtt.format:
        return config
    sparkplug = None
    if format == "sparkplug":
        sparkplug = SparkplugSection(group_id=config.gateway.hierarchy.site)
    mqtt_config = config.mqtt.model_copy(update={"format": format})
    return dataclasses.replace(config, mqtt=mqtt_config, sparkplug=sparkplug)


async def _stop_broker(broker: Any) -> None:
    if broker is not None:
        # amqtt can wait on lingering sessions at shutdown; the demo must still exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await broker.shutdown()


async def _start_embedded_broker(port: int) -> Any:
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise SystemExit(
            "the embedded broker needs amqtt: pip install 'factory-gateway[demo]', "
            "or pass --broker mqtt://host:port"
        ) from None
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    log.info("embedded broker started", url=f"mqtt://127.0.0.1:{port}")
    return broker


class LiveTable:
    """The latest value of every point, as received from the broker."""

    def __init__(self, config: Config) -> None:
        self.latest: dict[tuple[str, str], Row] = {}
        self.order = [(d.id, p.name) for d in config.devices for p in d.points]

    def update(self, device: str, point: str, value: Any, unit: str | None, quality: str) -> None:
        self.latest[(device, point)] = Row(value, unit or "", quality, time.monotonic())

    def print(self, header: str) -> None:
        now = time.monotonic()
        lines = [
            f"factory-gateway demo - {header} - Ctrl-C to stop",
            "",
            f"{'DEVICE':<14} {'POINT':<18} {'VALUE':>14} {'UNIT':<8} {'QUALITY':<22} {'AGE':>6}",
        ]
        for key in self.order:
            r = self.latest.get(key)
            if r is None:
                lines.append(f"{key[0]:<14} {key[1]:<18} {'-':>14}")
                continue
            text = f"{r.value:.3f}" if isinstance(r.value, float) else str(r.value)
            age = now - r.received
            lines.append(
                f"{key[0]:<14} {key[1]:<18} {text:>14} {r.unit:<8} {r.quality:<22} {age:>5.1f}s"
            )
        clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
        print(clear + "\n".join(lines), flush=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    value: Any
    unit: str
    quality: str  # "good", or the quality and its reason
    received: float  # monotonic


class View(Protocol):
    """What the demo's subscriber hands messages to: a decoder of one format."""

    topic: str  # the subscription

    def on_message(self, topic: str, payload: bytes | bytearray) -> None: ...

    def summary(self) -> str: ...


class JsonView:
    """The gateway's JSON messages, one per point."""

    def __init__(self, table: LiveTable, config: Config) -> None:
        self.table = table
        self.received = 0
        h = config.gateway.hierarchy
        self.topic = f"{h.enterprise}/{h.site}/{h.area}/#"

    def on_message(self, topic: str, payload: bytes | bytearray) -> None:
        try:
            reading = orjson.loads(payload)
            device, point = reading["device"], reading["point"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        quality = reading.get("quality", "")
        if quality != "good":
            quality = f"{quality}: {reading.get('reason', '')}"
        self.table.update(device, point, reading.get("value"), reading.get("unit"), quality)
        self.received += 1

    def summary(self) -> str:
        return f"{self.received} messages received"


class SparkplugView:
    """One edge node's Sparkplug B messages, decoded as a host does: a DBIRTH names each
    metric, its alias, datatype and unit; DDATA refers to them by alias; absent quality is
    good; historical values are not the current ones; DDEATH and NDEATH make the device's
    or the node's metrics stale."""

    def __init__(self, table: LiveTable, config: Config) -> None:
        assert config.sparkplug is not None
        self.table = table
        self.node = config.sparkplug.edge_node_id or config.gateway.id
        group = config.sparkplug.group_id
        self.topic = f"{NAMESPACE}/{group}/+/{self.node}/#"
        # Per device: alias -> (name, datatype, unit), from its last DBIRTH.
        self.metrics: dict[str, dict[int, tuple[str, int, str | None]]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.bd_seq: int | None = None
        self.seq: int | None = None
        self.gaps = 0
        # The Quality property's codes the map says, as the table shows them.
        codes = QUALITY_CODES[config.sparkplug.quality_codes]
        self.qualities = {
            codes.bad: "bad",
            codes.uncertain: "uncertain",
            codes.stale: "uncertain: stale",
            codes.good: "good",
        }

    def on_message(self, topic: str, payload: bytes | bytearray) -> None:
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[3] != self.node:
            return
        kind, device = parts[2], parts[4] if len(parts) == 5 else None
        try:
            message = pb.Payload.FromString(payload)
        except DecodeError:
            return
        self.counts[kind] += 1
        if kind in ("NBIRTH", "NDEATH"):
            for metric in message.metrics:
                if metric.name == "bdSeq":
                    self.bd_seq = metric.long_value
        if kind == "NDEATH":
            for name in self.metrics:
                self._stale(name, "bad: edge node offline (NDEATH)")
            return
        if kind == "NBIRTH":
            self.seq = message.seq
            return
        self._follow(message.seq)
        if device is None:
            return
        if kind == "DBIRTH":
            self.metrics[device] = {
                m.alias: (m.name, m.datatype, _property(m, "engUnit")) for m in message.metrics
            }
        if kind == "DDEATH":
            self._stale(device, "bad: device offline (DDEATH)")
            return
        if kind in ("DBIRTH", "DDATA"):
            self._show(device, message.metrics)

    def _follow(self, seq: int) -> None:
        """Counts a ``seq`` that is not the one after the last: a message lost on the way."""
        if self.seq is not None and seq != (self.seq + 1) % 256:
            self.gaps += 1
        self.seq = seq

    def _show(self, device: str, metrics: Sequence[pb.Payload.Metric]) -> None:
        known = self.metrics.get(device, {})
        for metric in metrics:
            name, datatype, unit = known.get(metric.alias, (metric.name, metric.datatype, None))
            if not name or metric.is_historical:
                continue  # an alias no DBIRTH named; a value of the past, not the current
            code = _property(metric, "Quality")
            quality = self.qualities.get(code, f"code {code}") if code is not None else "good"
            self.table.update(device, name, _value(metric, datatype), unit, quality)

    def _stale(self, device: str, quality: str) -> None:
        for key, row in list(self.table.latest.items()):
            if key[0] == device:
                self.table.latest[key] = dataclasses.replace(row, quality=quality)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return (
            f"Sparkplug B edge node {self.node}, bdSeq {self.bd_seq}: {counts or 'nothing yet'}"
            f", {self.gaps} seq gaps"
        )


def _property(metric: pb.Payload.Metric, key: str) -> Any:
    """A metric property's value (the Quality code as the signed Int32 it is); None when the
    metric has no such property."""
    for name, value in zip(metric.properties.keys, metric.properties.values, strict=False):
        if name != key:
            continue
        if value.type == pb.Int32:
            return value.int_value - (1 << 32) if value.int_value >= 1 << 31 else value.int_value
        return value.string_value
    return None


def _value(metric: pb.Payload.Metric, datatype: int) -> Any:
    if metric.is_null:
        return None
    try:
        return metric_value(metric, datatype)
    except ValueError:  # a type the table does not unpack (arrays, datetimes, bytes)
        which = metric.WhichOneof("value")
        return getattr(metric, which) if which else None


def _subscribe(config: Config, view: View) -> mqtt.Client:
    """A separate MQTT client, as any consumer would be; messages are handed to the loop."""
    loop = asyncio.get_running_loop()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{config.gateway.id}-demo-viewer")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(view.topic, qos=0)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        loop.call_soon_threadsafe(view.on_message, message.topic, message.payload)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async(config.mqtt.host, config.mqtt.port)
    client.loop_start()
    return client


def _free_port() -> int:
    """A TCP port free on loopback now, for the embedded broker."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
