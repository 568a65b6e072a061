"""Wires the stages together and runs them on one event loop.

    sources (one task per device) -> pipeline (transforms) -> publisher (sink task)

Every device runs in its own task, so a slow or dead device never delays another.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.config.load import Config
from gateway.mqtt.publisher import MqttPublisher
from gateway.pipeline import Deadband, Transform
from gateway.registry import create_sources
from gateway.source import Source
from gateway.topics import Topics

log = structlog.get_logger("gateway")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.topic, config.gateway, config.devices)
        self.publisher = MqttPublisher(
            config.mqtt, config.mqtt.client_id or config.gateway.id, self.topics
        )
        self.transforms: list[Transform] = [Deadband(config.devices)]
        self.sources: list[Source] = create_sources(config.devices)

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
            log.info("gateway stopped", published=self.publisher.published)

    async def _pump(self, source: Source) -> None:
        send = self.publisher.send
        transforms = self.transforms
        try:
            async for batch in source.readings():
                for transform in transforms:
                    batch = transform(batch)
                if batch:
                    send(batch)
        finally:
            await source.close()
