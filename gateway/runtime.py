"""Wires the stages together and runs them on one event loop.

    sources (one task per device) -> pipeline (transforms) -> buffer -> publisher (sink task)
    commands: MQTT -> router -> source.write -> result on MQTT (+ the value read back, as a
    reading, into the buffer)

Every device runs in its own task, so a slow or dead device never delays another. The pump of
each device also publishes the device's connection state when it changes.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.buffer import Buffer, open_store
from gateway.commands import CommandRouter
from gateway.config.load import Config
from gateway.encode import iso_time, kept_json
from gateway.model import Reading, expand
from gateway.mqtt.publisher import MqttPublisher
from gateway.pipeline import Deadband, Transform
from gateway.registry import create_sources
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
            open_store(settings.mode, settings.path),
            settings.max_size,
            settings.on_full,
            settings.replay_rate,
        )
        self.publisher = MqttPublisher(
            config.mqtt,
            config.mqtt.client_id or config.gateway.id,
            self.topics,
            self.buffer,
            settings.sync_interval,
        )
        self.sources: list[Source] = create_sources(config.devices)
        self.deadband = Deadband(config.devices)
        self.transforms: list[Transform] = [self.deadband]
        writers = {s.device_id: s for s in self.sources if isinstance(s, Writable)}
        self.router = CommandRouter(
            config.devices, writers, self.topics, self.publisher.answer, self._publish_now
        )
        self.publisher.commands = (self.router.subscription, self.router.handle)

    async def run(self) -> None:
        """Run until cancelled."""
        log.info(
            "gateway starting",
            gateway=self.config.gateway.id,
            devices=len(self.sources),
            points=sum(len(d.points) for d in self.config.devices),
            broker=self.config.mqtt.url,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.publisher.run(), name="mqtt-publisher")
                for source in self.sources:
                    tasks.create_task(self._pump(source), name=f"device:{source.device_id}")
        finally:
            self.router.cancel()
            log.info("gateway stopped", published=self.publisher.published)

    def _publish_now(self, reading: Reading) -> None:
        """A value read back after a command: published at once, whatever the deadband (it
        also becomes the deadband's reference, so the next poll does not repeat it)."""
        self.deadband.remember(reading)
        self.publisher.send([reading])

    async def _pump(self, source: Source) -> None:
        send = self.publisher.send
        room = self.buffer.room
        status_topic = self.topics.device_status(source.device_id)
        published_state: tuple[str, str | None] | None = None
        # Blocks of values go to the sink as they are unless a transform must see readings.
        transforms = [t for t in self.transforms if t.covers(source.device_id)]
        try:
            async for batch in source.readings():
                if source.state != published_state:
                    published_state = source.state
                    self.publisher.set_retained(status_topic, _device_state(*published_state))
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


def _device_state(state: str, reason: str | None) -> bytes:
    """``{"state", "since", "reason"}``: docs/schemas/device-status.schema.json."""
    payload: dict[str, str] = {"state": state, "since": iso_time(time.time())}
    if reason is not None:
        payload["reason"] = reason
    return kept_json(payload)
