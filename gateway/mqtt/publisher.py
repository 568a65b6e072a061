"""The MQTT sink: readings -> records in the buffer -> broker, deleted when acknowledged.

``send`` encodes each reading (or, with ``mqtt.batch: device``, each device's poll cycle) with
its ``seq`` and ``gw_ts`` and adds it to the buffer; it never blocks. ``run`` connects, publishes
what the buffer hands out (live readings, and after an outage the backlog, marked
``"replayed": true``), keeps at most the link's window of messages unacknowledged, and every
``sync_interval`` tells the buffer which were acknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2;
at QoS 0, once written: "may lose") and which the broker refused (MQTT 5: a reason code, or a
message over its maximum packet size): those are dropped and counted, never retried. Every
10 s it publishes the gateway status (retained) with
the delivery accounting. Device states are retained messages of their own, outside the buffer:
only the latest matters, and it is re-published on every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from weakref import WeakKeyDictionary

import orjson
import structlog

from gateway.buffer import Buffer, Record
from gateway.commands.request import Incoming
from gateway.config.schema import MqttSection
from gateway.encode import (
    block_values,
    encode_batch,
    encode_reading,
    iso_time,
    mark_replayed,
    point_templates,
    split_by_point,
)
from gateway.errors import MessageTooLarge
from gateway.model import Block, Points, Sample
from gateway.mqtt.link import MqttLink
from gateway.topics import Topics

log = structlog.get_logger("gateway.mqtt")

OFFLINE = orjson.dumps({"state": "offline"})
STATUS_EVERY = 10.0


class MqttPublisher:
    """A ``Sink``: ``send`` buffers (never blocks the pipeline), ``run`` drains to the broker."""

    def __init__(
        self,
        config: MqttSection,
        client_id: str,
        topics: Topics,
        buffer: Buffer,
        sync_interval: float = 0.2,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.topics = topics
        self.buffer = buffer
        self.sync_interval = sync_interval
        self.inflight: dict[int, int] = {}  # message id -> seq
        self.retained: dict[str, bytes] = {}  # device states: topic -> latest payload
        self.started = iso_time(time.time())
        self._link: MqttLink | None = None
        self._batch = config.batch == "device"
        self._point_templates: WeakKeyDictionary[Points, list[tuple[str, bytes]]] = (
            WeakKeyDictionary()
        )
        self._refusals: set[tuple[str, str]] = set()  # (kind, reason) logged already
        # (topic filter, handler) of commands; set before ``run`` to receive them.
        self.commands: tuple[str, Callable[[Incoming], None]] | None = None

    @property
    def published(self) -> int:
        return self.buffer.outcomes.delivered

    # -- from the pipeline ----------------------------------------------------------------

    def send(self, batch: Sequence[Sample]) -> None:
        now = time.time()
        gw_ts = iso_time(now)
        buffer, topics = self.buffer, self.topics
        if self._batch:
            for group in split_by_point(batch):
                seq = buffer.take_seq()
                payload = encode_batch(group, seq, gw_ts)
                buffer.add(Record(seq, topics.device(group[0].device), payload, now))
            return
        gw_bytes = gw_ts.encode()
        for sample in batch:
            if isinstance(sample, Block):
                self._send_block(sample, gw_bytes, now)
                continue
            seq = buffer.take_seq()
            payload = encode_reading(sample, seq, gw_ts)
            buffer.add(Record(seq, topics.point(sample.device, sample.point), payload, now))

    def _send_block(self, block: Block, gw_ts: bytes, now: float) -> None:
        """One message per value of a block, from templates rendered once per set of points."""
        templates = self._point_templates.get(block.points)
        if templates is None:
            templates = self._point_templates[block.points] = point_templates(block, self.topics)
        ts = iso_time(block.ts).encode()
        buffer = self.buffer
        take_seq, add = buffer.take_seq, buffer.add
        for (topic, template), value in zip(templates, block_values(block), strict=True):
            seq = take_seq()
            add(Record(seq, topic, template % (value, ts, gw_ts, seq), now))

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained state now if connected, and again on every (re)connect."""
        self.retained[topic] = payload
        link = self._link
        if link is not None:
            link.publish_state(topic, payload)

    def answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """A command's result (see ``MqttLink.publish_answer``)."""
        if self._link is not None:
            self._link.publish_answer(topic, payload, correlation)

    # -- to the broker ---------------------------------------------------------------------

    async def run(self) -> None:
        link = MqttLink(
            self.config,
            self.client_id,
            will=(self.topics.status, OFFLINE),
            on_connected=self._on_connected,
            commands=self.commands,
        )
        self._link = link
        link.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._acknowledge_and_sync(link), name="buffer-sync")
                tasks.create_task(self._report(link), name="gateway-status")
                await self._drain_forever(link)
        finally:
            self._link = None
            await self._shutdown(link)

    def _on_connected(self) -> None:
        link = self._link
        if link is None:
            return
        self.buffer.connected()
        link.publish_state(self.topics.status, self._status())
        for topic, payload in self.retained.items():
            link.publish_state(topic, payload)

    async def _drain_forever(self, link: MqttLink) -> None:
        buffer = self.buffer
        while True:
            await link.connected.wait()
            if not buffer.pending():
                buffer.ready.clear()
                await buffer.ready.wait()
                continue
            await self._drain(link)

    async def _drain(self, link: MqttLink) -> None:
        buffer, qos = self.buffer, self.config.qos
        sent = 0
        while link.connected.is_set():
            window = link.window
            if link.outstanding >= window:
                # Hysteresis: wait until half the window is acknowledged, then send a burst.
                self._collect_acks(link)
                await link.wait_for_room(window // 2)
                continue
            item = buffer.next()
            if item is None:
                return
            record, replayed = item
            payload = mark_replayed(record.payload) if replayed else record.payload
            try:
                mid = link.publish(record.topic, payload, qos)
            except MessageTooLarge as exc:
                buffer.handed(record)
                self._refused([record.seq], "too_large", str(exc))
                continue
            if mid is None:  # not connected any more, or the socket's buffer is full
                buffer.returned(record)
                await link.wait_writable()
                continue
            # At QoS 1/2 the link keeps it (and resends it after a reconnect) until acknowledged.
            buffer.handed(record)
            if mid:
                self.inflight[mid] = record.seq
            else:
                buffer.acknowledged([record.seq])
            sent += 1
            if sent % 500 == 0:
                self._collect_acks(link)
                await asyncio.sleep(0)  # let polls run during a long drain

    def _collect_acks(self, link: MqttLink) -> None:
        mids, refused = link.take_acked()
        pop = self.inflight.pop
        if mids:
            self.buffer.acknowledged([s for s in (pop(m, None) for m in mids) if s is not None])
        for mid, reason in refused:
            seq = pop(mid, None)
            if seq is not None:
                self._refused([seq], "refused_by_broker", reason)

    def _refused(self, seqs: list[int], kind: str, reason: str) -> None:
        """Messages the broker will never take: dropped, counted, logged once per reason."""
        if (kind, reason) not in self._refusals:
            self._refusals.add((kind, reason))
            log.error("the broker refuses messages: they are dropped", kind=kind, reason=reason)
        self.buffer.dropped(seqs, kind)

    async def _acknowledge_and_sync(self, link: MqttLink) -> None:
        """Every ``sync_interval``: delete what was acknowledged, commit, fsync."""
        while True:
            await asyncio.sleep(self.sync_interval)
            self._collect_acks(link)
            await self.buffer.sync()

    async def _report(self, link: MqttLink) -> None:
        """The gateway status (retained) and a log line with the accounting, every 10 s."""
        last_dropped: dict[str, object] = {}
        while True:
            await asyncio.sleep(STATUS_EVERY)
            stats = self.buffer.stats()
            link.publish_state(self.topics.status, self._status(stats))
            dropped = stats["dropped"]
            quiet = not stats["buffered"] or link.connected.is_set()
            if dropped != last_dropped or not quiet:
                log.info("delivery", connected=link.connected.is_set(), **stats)
                last_dropped = dict(dropped) if isinstance(dropped, dict) else {}

    def _status(self, stats: dict[str, object] | None = None) -> bytes:
        return orjson.dumps(
            {
                "state": "online",
                "since": self.started,
                "ts": iso_time(time.time()),
                **(stats if stats is not None else self.buffer.stats()),
            }
        )

    async def _shutdown(self, link: MqttLink) -> None:
        """Commit everything, give in-flight messages a moment, say offline, disconnect.

        Nothing is lost by stopping: what is not acknowledged stays in the buffer (on disk, or
        for ``buffer.mode: memory`` it is flushed for up to 2 s first).
        """
        buffer = self.buffer
        buffer.flush()
        if link.connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5 if buffer.store.durable else 2.0):
                    if not buffer.store.durable:
                        while buffer.pending() and link.connected.is_set():
                            await self._drain(link)
                            await asyncio.sleep(0.01)
                    await link.wait_for_room(0)
            link.publish_state(self.topics.status, OFFLINE)
            await asyncio.sleep(0.05)
        self._collect_acks(link)
        await link.stop()
        self._collect_acks(link)
        stats = buffer.stats()
        buffer.close()
        log.info("delivery at shutdown", **stats)
        if buffer.count and buffer.store.durable:
            log.info("readings kept for the next start", buffered=buffer.count)
