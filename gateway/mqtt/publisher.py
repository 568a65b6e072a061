"""The MQTT sink: a bounded queue of readings drained to the broker.

Readings get their ``seq`` when they enter the queue, so a reading dropped from a full queue
leaves a gap a consumer can see. While the broker is unreachable the queue holds up to
``mqtt.queue_size`` readings, dropping the oldest; the drop count is logged. (Durable,
disk-backed buffering is a separate stage.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson
import paho.mqtt.client as mqtt
import structlog

from gateway.config.schema import MqttSection
from gateway.encode import encode_reading, iso_time
from gateway.model import Reading
from gateway.mqtt.link import WINDOW, MqttLink
from gateway.topics import Topics

log = structlog.get_logger("gateway.mqtt")

ONLINE = orjson.dumps({"state": "online"})
OFFLINE = orjson.dumps({"state": "offline"})


class MqttPublisher:
    """A ``Sink``: ``send`` enqueues (never blocks the pipeline), ``run`` drains to the broker."""

    def __init__(self, config: MqttSection, client_id: str, topics: Topics) -> None:
        self.config = config
        self.client_id = client_id
        self.topics = topics
        self.queue: deque[tuple[int, Reading]] = deque()
        self.seq = 0
        self.dropped = 0
        self.published = 0
        self._wakeup = asyncio.Event()
        self._link: MqttLink | None = None

    def send(self, batch: list[Reading]) -> None:
        queue, limit = self.queue, self.config.queue_size
        for reading in batch:
            self.seq += 1
            if len(queue) >= limit:
                queue.popleft()
                if self.dropped == 0:
                    log.warning("reading queue full, dropping oldest", queue_size=limit)
                self.dropped += 1
            queue.append((self.seq, reading))
        self._wakeup.set()

    async def run(self) -> None:
        link = MqttLink(
            self.config,
            self.client_id,
            will=(self.topics.status, OFFLINE),
            on_connected=self._announce,
        )
        self._link = link
        link.start()
        try:
            while True:
                await link.connected.wait()
                if not self.queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._drain(link)
        finally:
            self._link = None
            await self._shutdown(link)

    def _announce(self) -> None:
        if self._link is not None:
            self._link.publish(self.topics.status, ONLINE, qos=1, retain=True)
        if self.dropped:
            log.warning(
                "readings were dropped while the broker was unreachable", dropped=self.dropped
            )

    async def _drain(self, link: MqttLink) -> None:
        queue, qos, topics = self.queue, self.config.qos, self.topics
        gw_ts = iso_time(time.time())
        sent = 0
        while queue and link.connected.is_set():
            if link.outstanding >= WINDOW:
                # Hysteresis: wait until half the window is acknowledged, then send a burst.
                await link.wait_for_room(WINDOW // 2)
                gw_ts = iso_time(time.time())
                continue
            seq, reading = queue[0]
            payload = encode_reading(reading, seq, gw_ts)
            rc = link.publish(topics.point(reading.device, reading.point), payload, qos)
            if rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                await link.wait_for_room(WINDOW // 2)
                continue
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return  # not connected any more: the reading stays queued
            queue.popleft()
            self.published += 1
            sent += 1
            if sent % 500 == 0:
                await asyncio.sleep(0)  # let polls run during a long drain
                gw_ts = iso_time(time.time())

    async def _shutdown(self, link: MqttLink) -> None:
        """Flush what is queued (briefly), say offline, disconnect."""
        if link.connected.is_set():
            try:
                async with asyncio.timeout(2.0):
                    while self.queue and link.connected.is_set():
                        await self._drain(link)
                        await asyncio.sleep(0.01)
            except TimeoutError:
                log.warning("shutdown with readings still queued", queued=len(self.queue))
            link.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            await asyncio.sleep(0.05)
        await link.stop()
