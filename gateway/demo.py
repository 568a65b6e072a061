"""``factory-gateway demo``: the whole chain in one process, with a live table.

simulators -> gateway -> MQTT broker (embedded amqtt, or ``--broker``) -> a subscriber that fills
the table. The table shows what arrived *at the broker*, so the demo proves the full path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config.load import Config
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
    mqtt_config = config.mqtt.model_copy(update={"url": broker_url})
    # The demo keeps its buffer in memory: it leaves nothing behind in the repository.
    buffer_config = config.buffer.model_copy(update={"mode": "memory"})
    config = dataclasses.replace(config, mqtt=mqtt_config, buffer=buffer_config)

    from simulators.run import start_simulators

    try:
        simulator = await start_simulators(config)
    except BaseException:
        await _stop_broker(broker)
        raise
    table = LiveTable(config)
    subscriber = _subscribe(config, table)
    gateway = asyncio.create_task(Gateway(config).run(), name="gateway")
    try:
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            await asyncio.sleep(1.0)
            if gateway.done():
                gateway.result()  # surface the gateway's error
            table.print(broker_url)
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
        subscriber.disconnect()
        await asyncio.to_thread(subscriber.loop_stop)
        await simulator.stop()
        await _stop_broker(broker)


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
    """The latest reading of every point, as received from the broker."""

    def __init__(self, config: Config) -> None:
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.received = 0
        self.order = [(d.id, p.name) for d in config.devices for p in d.points]

    def on_message(self, payload: bytes | bytearray) -> None:
        try:
            reading = orjson.loads(payload)
            key = (reading["device"], reading["point"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        reading["received"] = time.monotonic()
        self.latest[key] = reading
        self.received += 1

    def print(self, broker_url: str) -> None:
        now = time.monotonic()
        lines = [
            f"factory-gateway demo - broker {broker_url} - {self.received} messages received"
            " - Ctrl-C to stop",
            "",
            f"{'DEVICE':<14} {'POINT':<18} {'VALUE':>14} {'UNIT':<8} {'QUALITY':<22} {'AGE':>6}",
        ]
        for key in self.order:
            r = self.latest.get(key)
            if r is None:
                lines.append(f"{key[0]:<14} {key[1]:<18} {'-':>14}")
                continue
            value = r.get("value")
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            quality = r.get("quality", "")
            if quality != "good":
                quality = f"{quality}: {r.get('reason', '')}"
            age = now - r["received"]
            unit = r.get("unit") or ""
            lines.append(
                f"{key[0]:<14} {key[1]:<18} {text:>14} {unit:<8} {quality:<22} {age:>5.1f}s"
            )
        clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
        print(clear + "\n".join(lines), flush=True)


def _subscribe(config: Config, table: LiveTable) -> mqtt.Client:
    """A separate MQTT client, as any consumer would be; messages are handed to the loop."""
    loop = asyncio.get_running_loop()
    h = config.gateway.hierarchy
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{config.gateway.id}-demo-viewer")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(f"{h.enterprise}/{h.site}/{h.area}/#", qos=0)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        loop.call_soon_threadsafe(table.on_message, message.payload)

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
