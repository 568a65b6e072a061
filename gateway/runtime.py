"""Builds the stages once, wires them, and runs them on one event loop.

    sources (one task per device) -> pipeline (transforms) -> encoder -> buffer -> forwarder
    -> MQTT transport (the readings' session)
    commands: MQTT transport (the commands' session) -> channel -> intake (bounded queue and
    rate) -> router -> source.write -> answer on the commands' session (+ the value read back,
    as a reading, into the encoder)

Every device runs in its own task, so a slow or dead device never delays another. The pump of
each device also publishes the device's connection state when it changes.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.commands import CommandRouter
from gateway.commands.channel import CommandChannel
from gateway.commands.intake import Intake
from gateway.config.load import Config
from gateway.delivery.buffer import Buffer, open_store
from gateway.delivery.encode_json import JsonEncoder, iso_time, kept_json
from gateway.delivery.forwarder import OFFLINE, Forwarder
from gateway.health import Health
from gateway.http_listener import HttpListener
from gateway.model import Reading, expand
from gateway.mqtt.client import Will
from gateway.mqtt.settings import command_session, data_session
from gateway.pipeline import Deadband, Transform
from gateway.registry import create_sources, reading_intervals
from gateway.source import Source, Writable
from gateway.topics import Topics

log = structlog.get_logger("gateway")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(
            config.mqtt.topic, config.gateway, config.devices, config.mqtt.batch_topic
        )
        settings = config.buffer
        self.buffer = Buffer(
            open_store(settings.mode, settings.path, settings.max_size),
            settings.max_size,
            settings.on_full,
            settings.replay_rate,
        )
        mqtt = config.mqtt
        will = Will(self.topics.status, OFFLINE, min(mqtt.qos, 1), mqtt.retain)
        session = data_session(mqtt, mqtt.client_id or config.gateway.id, will)
        self.encoder = JsonEncoder(self.topics, self.buffer, batch=mqtt.batch == "device")
        self.forwarder = Forwarder(
            session,
            self.buffer,
            mqtt.qos,
            self.topics.status,
            settings.sync_interval,
        )
        self.sources: list[Source] = create_sources(config.devices)
        self.deadband = Deadband(config.devices)
        self.transforms: list[Transform] = [self.deadband]
        writers = {s.device_id: s for s in self.sources if isinstance(s, Writable)}
        # Commands have a session of their own, when the map has a writable point.
        self.commands = (
            CommandChannel(command_session(session), self.topics.command_filter())
            if any(d.writable for d in config.devices)
            else None
        )
        self.router = CommandRouter(
            config.devices,
            writers,
            self.topics,
            self.commands.answer if self.commands is not None else _no_answer,
            self._publish_now,
            mqtt.response_prefix,
            config.commands.max_age,
        )
        self.intake = Intake(config.commands.rate, config.commands.queue)
        http = config.http
        self.health = Health(
            reading_intervals(config.devices),
            http.stale_after if http else None,
            lambda: self.forwarder.broker_connected,
            lambda: self.buffer.bytes,
            int(http.buffer_alarm) if http and http.buffer_alarm is not None else None,
        )
        self.listener = HttpListener(http.host, http.port, self.health) if http else None

    async def run(self) -> None:
        """Run until cancelled."""
        log.info(
            "gateway starting",
            gateway=self.config.gateway.id,
            devices=len(self.sources),
            points=sum(len(d.points) for d in self.config.devices),
            broker=self.config.mqtt.url,
        )
        self.health.running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                if self.listener is not None:
                    tasks.create_task(self.listener.run(), name="http")
                tasks.create_task(self.forwarder.run(), name="mqtt-forwarder")
                if self.commands is not None:
                    tasks.create_task(self.intake.run(self.router.handle), name="command-intake")
                    tasks.create_task(self.commands.run(self.intake.offer), name="commands")
                for source in self.sources:
                    tasks.create_task(self._pump(source), name=f"device:{source.device_id}")
        finally:
            self.health.running = False
            self.router.cancel()
            log.info("gateway stopped", published=self.forwarder.published)

    def _publish_now(self, reading: Reading) -> None:
        """A value read back after a command: published at once, whatever the deadband (it
        also becomes the deadband's reference, so the next poll does not repeat it)."""
        self.deadband.remember(reading)
        self.encoder.send([reading])

    async def _pump(self, source: Source) -> None:
        send = self.encoder.send
        room = self.buffer.room
        status_topic = self.topics.device_status(source.device_id)
        published_state: tuple[str, str | None] | None = None
        # Blocks of values go to the sink as they are unless a transform must see readings.
        transforms = [t for t in self.transforms if t.covers(source.device_id)]
        seen = self.health.seen
        try:
            async for batch in source.readings():
                seen(source.device_id, source.state, batch)
                if source.state != published_state:
                    published_state = source.state
                    self.forwarder.set_retained(status_topic, _device_state(*published_state))
                if transforms:
                    readings = expand(batch)
                    for transform in transforms:
                        readings = transform(readings)
                    batch = readings
                if batch:
                    send(batch)
                if not room.is_set():  # buffer full with on_full: block_oldest_first
                    await self.buffer.wait_for_room()
        finally:
            await source.close()


def _no_answer(topic: str, payload: bytes, correlation: bytes | None) -> None:
    """No writable point, no command session: nothing to answer."""


def _device_state(state: str, reason: str | None) -> bytes:
    """``{"state", "since", "reason"}``: docs/schemas/device-status.schema.json."""
    payload: dict[str, str] = {"state": state, "since": iso_time(time.time())}
    if reason is not None:
        payload["reason"] = reason
    return kept_json(payload)
