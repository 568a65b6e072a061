"""The forwarder: buffer -> MQTT transport, within the broker's limits, deleted when acknowledged.

It publishes what the buffer hands out (live readings and, after an outage, the backlog marked
``"replayed": true``) and keeps at most a window of messages unacknowledged, sized from the
broker's Receive Maximum (20 for QoS 2 on MQTT 3.1.1): paho by itself would resend everything it
holds at once after a reconnect, and brokers drop what is over their limit. Every
``sync_interval`` it tells the buffer what was acknowledged. Messages the broker will never take
are dropped and counted, never retried: refused (an MQTT 5 reason code), over its Maximum Packet
Size, or one that makes the broker drop the connection. Retained states (gateway status, device
states) share the window, the newest of each topic only, and are sent again on every connect.
Every 10 s the gateway status carries the delivery accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

import orjson
import structlog

from gateway.delivery.buffer import Buffer, Record
from gateway.delivery.encode_json import iso_time, mark_replayed
from gateway.errors import BrokerError, MessageTooLarge, NotConnected
from gateway.mqtt.client import Broker, Message, MqttClient, Settings
from gateway.stats import AGE_SECONDS, Histogram

if TYPE_CHECKING:
    from gateway.delivery.sparkplug.session import EdgeNode

log = structlog.get_logger("gateway.mqtt")

OFFLINE = orjson.dumps({"state": "offline"})
STATUS_EVERY = 10.0
# Messages sent and not yet acknowledged. A poll of 100 devices sends a burst of 100 device
# batches at once; a window of 250 lets a whole burst go out without waiting for acks.
WINDOW = 250
V3_QOS2_WINDOW = 20  # brokers bound unreleased QoS 2 messages (mosquitto: 20) and drop the rest
HELD = 10.0  # seconds a connection must last to count as healthy
STRIKES = 2  # connections a message, sent alone, may end before it is set aside


class Forwarder:
    """A ``Listener`` of the transport; ``run`` drains the buffer to the broker until cancelled."""

    def __init__(
        self,
        settings: Settings,
        buffer: Buffer,
        qos: int,
        status_topic: str,
        sync_interval: float = 0.2,
        sparkplug: EdgeNode | None = None,
    ) -> None:
        """``sparkplug``: the edge node's session, for ``mqtt.format: sparkplug`` (births and
        deaths instead of retained states, a seq on every message, QoS 0)."""
        self.settings = settings
        self.sparkplug = sparkplug
        self.buffer = buffer
        self.qos = qos
        self.status_topic = status_topic
        self.sync_interval = sync_interval
        self.started = iso_time(time.time())
        # message id -> (record, sent as replayed), or None for a retained state
        self.inflight: dict[int, tuple[Record, bool] | None] = {}
        self.retained: dict[str, bytes] = {}  # device states: topic -> latest payload
        self.window = WINDOW
        self._client: MqttClient | None = None
        self._states: dict[str, bytes] = {}  # retained states waiting for room
        self._control: deque[tuple[str, bytes]] = deque()  # Sparkplug births, in order
        # Sparkplug deaths the births decided, sent once the records before them are out.
        self._deferred: deque[tuple[str, bytes]] = deque()
        self._born = asyncio.Event()  # Sparkplug: births sent on this connection, data may go
        self._watermark = 0  # Sparkplug: records before the births are history to the host
        # Sparkplug's QoS 0: records written, waiting for a round trip to confirm them.
        self._written: list[int] = []
        self._confirming = False  # a round trip is on its way
        self._deadline: asyncio.TimerHandle | None = None  # ... and when it is given up
        self._acked: list[int] = []  # seqs acknowledged since the last sync
        self._qos = qos
        # States (and the will) follow mqtt.qos up to 1, and mqtt.retain (Settings.will).
        will = settings.will
        self._state_qos = will.qos if will is not None else min(qos, 1)
        self._retain = will.retain if will is not None else True
        self._connected = asyncio.Event()
        self._room = asyncio.Event()  # set when the window drained to ``_low_water``
        self._low_water: int | None = None
        self._connected_at = 0.0
        self._probing = False  # one message at a time, to find one that ends the connection
        self._suspect: tuple[int, int] | None = None  # (seq, connections it ended alone)
        self._stopping = False
        self._refusals: set[tuple[str, str]] = set()  # (kind, reason) logged already
        self.connections = 0  # sessions the broker accepted (for /metrics: reconnects)
        self.since = time.time()  # when the session came up or went down (the status page)
        self._switch = asyncio.Event()  # new settings: end this session, start another
        self._leaving = True  # the new settings name another broker
        # Seconds from a message's oldest source timestamp to the broker's acknowledgement.
        self.ack_age = Histogram(AGE_SECONDS)
        self._sampled: list[float] = []  # source timestamps acknowledged this loop turn

    @property
    def broker_url(self) -> str:
        """The broker the session is on, or tries next."""
        client = self._client
        return client.url if client is not None else ""

    @property
    def published(self) -> int:
        return self.buffer.outcomes.delivered

    def set_retained(self, topic: str, payload: bytes) -> None:
        """A device state: published retained as soon as there is room, and on every connect."""
        self.retained[topic] = payload
        self._queue_state(topic, payload)

    # -- the run ---------------------------------------------------------------------------

    def switch(self, settings: Settings, qos: int) -> None:
        """Connect with new settings (a reloaded map): the current session ends cleanly,
        what it had in flight goes back to the buffer and is sent on the new one. The status
        says "offline" on the broker the gateway leaves, not when it stays on the same one
        (new credentials, say): it stays on the broker it is on while the new list has it."""
        client = self._client
        self._leaving = client is None or client.server not in settings.servers
        self.settings, self.qos = settings, qos
        self._switch.set()

    async def run(self) -> None:
        try:
            while True:
                self._switch.clear()
                switching = False
                on = self._client.server if self._client is not None else None
                async with MqttClient(self.settings, self, start=on) as client:
                    self._client = client
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            jobs = [
                                tasks.create_task(self._sync(), name="buffer-sync"),
                                tasks.create_task(self._report(), name="gateway-status"),
                                tasks.create_task(self._drain_forever(client), name="drain"),
                            ]
                            await self._switch.wait()
                            switching = True
                            for job in jobs:
                                job.cancel()
                    finally:
                        await self._shutdown(client, offline=self._leaving or not switching)
                # The session is over, whether or not the broker saw it end.
                self._connected.clear()
                self._room.set()
                self._probing, self._suspect = False, None
                self._give_back()
                self._stopping = False
                log.info("reconnecting with the new broker settings")
        finally:
            self._collect()
            stats = self.buffer.stats()
            self.buffer.close()
            log.info("delivery at shutdown", **stats)
            if self.buffer.count and self.buffer.store.durable:
                log.info("readings kept for the next start", buffered=self.buffer.count)

    async def _drain_forever(self, client: MqttClient) -> None:
        buffer = self.buffer
        while True:
            await self._connected.wait()
            if self.sparkplug is not None and not self._born.is_set():
                await self._born.wait()  # the primary host is not online: data waits
                continue
            if (
                not buffer.pending()
                and not self._states
                and not self._control
                and not self._deferred
            ):
                buffer.ready.clear()
                await buffer.ready.wait()
                continue
            await self._drain(client)
            await asyncio.sleep(0)  # whatever ended the drain, let the loop turn

    async def _drain(self, client: MqttClient) -> None:
        """Publish while connected and there is room in the window: states first."""
        buffer, qos, inflight = self.buffer, self._qos, self.inflight
        if self.sparkplug is not None and not self._born.is_set():
            return  # no data before the births
        sent = 0
        while self._connected.is_set():
            window = self._window()
            if len(inflight) >= window:
                # Hysteresis: wait until half the window is acknowledged, then a burst.
                self._collect()
                await self._wait_for_room(window // 2)
                continue
            if self._control:
                self._send_control(client, self._control)
                continue
            if self._deferred and not buffer.waiting_below(self._watermark):
                self._send_control(client, self._deferred)
                continue
            if self._states:
                self._send_state(client)
                continue
            item = buffer.next()
            if item is None:
                return
            record, replayed = item
            edge = self.sparkplug
            if edge is not None:
                if not self._sendable(edge, record):
                    sent += 1  # settled here: it counts for the loop's turns all the same
                    if sent % 200 == 0:
                        self._collect()
                        await asyncio.sleep(0)
                    continue
                historical = replayed or record.seq < self._watermark
                payload = edge.finish(record.topic, record.payload, historical)
            else:
                payload = mark_replayed(record.payload) if replayed else record.payload
            buffer.handed(record)
            try:
                mid = client.publish(record.topic, payload, qos, expires=True)
            except MessageTooLarge as exc:
                if edge is not None:
                    edge.unsent()
                    edge.not_born(record.topic)
                self._refused([record.seq], "too_large", str(exc))
                continue
            except NotConnected:
                buffer.returned(record, replayed)
                return
            inflight[mid] = (record, replayed)
            sent += 1
            if sent % 200 == 0:
                self._collect()
                await asyncio.sleep(0)  # let polls run during a long drain

    def _sendable(self, edge: EdgeNode, record: Record) -> bool:
        """Whether a stored Sparkplug record goes out; one that does not is settled here."""
        kind = edge.kind_of(record.topic)
        if kind is None:  # left by a run with another map or format
            self.buffer.handed(record)
            self._refused([record.seq], "not_this_node", "not a message of this edge node",
                          "messages of another edge node dropped")  # fmt: skip
            return False
        if kind != "DDATA":
            if record.seq < self._watermark:  # of an earlier session: its births say it now
                self.buffer.handed(record)
                self.buffer.discarded([record.seq])
                return False
            return True
        if not edge.resolves(record.topic):
            self.buffer.handed(record)
            self._refused([record.seq], "no_birth", "its device's DBIRTH was not published",
                          "DDATA of a device without a birth dropped")  # fmt: skip
            return False
        return True

    def _window(self) -> int:
        """The window, or 1 while looking for a message that ends the connection."""
        if self._probing and time.monotonic() - self._connected_at >= HELD:
            self._probing = False
            self._suspect = None
            log.info("the connection holds again: the window is back", window=self.window)
        return 1 if self._probing else self.window

    async def _wait_for_room(self, low_water: int) -> None:
        """Wait until at most ``low_water`` messages are in flight (or 1 s passed)."""
        self._room.clear()
        self._low_water = low_water
        if len(self.inflight) > low_water:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._room.wait()
        self._low_water = None

    def _queue_state(self, topic: str, payload: bytes) -> None:
        self._states[topic] = payload
        self.buffer.ready.set()

    def _send_control(self, client: MqttClient, queue: deque[tuple[str, bytes]]) -> None:
        topic, payload = queue.popleft()
        assert self.sparkplug is not None
        try:
            mid = client.publish(topic, self.sparkplug.finish(topic, payload), 0)
        except NotConnected:
            self.sparkplug.unsent()
            return  # the births of the next connection say it all again
        except BrokerError as exc:
            self.sparkplug.unsent()
            self.sparkplug.not_born(topic)  # its data must wait for a birth that gets through
            log.error("Sparkplug message not published", topic=topic, reason=str(exc))
            return
        self.inflight[mid] = None

    def _send_state(self, client: MqttClient) -> None:
        topic, payload = next(iter(self._states.items()))
        del self._states[topic]
        try:
            mid = client.publish(topic, payload, self._state_qos, retain=self._retain)
        except NotConnected:
            return  # sent again on connect
        except BrokerError as exc:
            log.warning("state not published", topic=topic, reason=str(exc))
            return
        self.inflight[mid] = None

    # -- what the transport reports ----------------------------------------------------------

    @property
    def broker_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def held(self) -> str | None:
        """Why nothing is published on a connection that is up, or None."""
        edge = self.sparkplug
        if edge is None or self._born.is_set() or edge.host_online:
            return None
        return f"waiting for the primary host {edge.primary_host} to be online"

    def connected(self, broker: Broker) -> None:
        receive_maximum = broker.receive_maximum or WINDOW
        if self.settings.version != 5 and self.qos == 2:
            receive_maximum = V3_QOS2_WINDOW
        self.window = max(1, min(WINDOW, receive_maximum))
        if broker.maximum_qos < self.qos and self._qos != broker.maximum_qos:
            log.warning(
                "the broker's maximum QoS is below mqtt.qos: readings are sent at its maximum",
                maximum_qos=broker.maximum_qos,
                qos=self.qos,
            )
        self._qos = min(self.qos, broker.maximum_qos)
        will = self.settings.will
        self._state_qos = min(will.qos if will is not None else 1, broker.maximum_qos)
        retain = will.retain if will is not None else True
        if retain and not broker.retain_available and self._retain:
            log.warning("the broker keeps no retained messages: states are sent plain")
        self._retain = retain and broker.retain_available
        self._connected_at = time.monotonic()
        self.since = time.time()
        self.connections += 1
        self._written.clear()  # of a session whose end was never reported (a hung switch)
        self._confirming = False
        self.buffer.connected()
        if self.sparkplug is not None:
            edge = self.sparkplug
            edge.session_started(str(self._client.server) if self._client is not None else "")
            self._born.clear()
            self._control.clear()
            self._deferred.clear()
            if self._client is not None:
                for topic_filter, qos in edge.subscriptions():
                    self._client.subscribe(topic_filter, qos)
            if edge.host_online:
                self._birth(edge)
            else:
                log.info("waiting for the primary host to be online", host=edge.primary_host)
        else:
            self._states = {self.status_topic: self._status(), **self.retained}
        self._connected.set()
        self.buffer.ready.set()

    def disconnected(self, reason: str, by_broker: bool) -> None:
        if self._connected.is_set():
            self.since = time.time()
        self._connected.clear()
        self._born.clear()
        self._room.set()  # a waiting drain sees the disconnect
        if by_broker and not self._stopping:
            self._look_for_a_culprit()
        if self.sparkplug is not None:
            # A clean session, at QoS 0: what was written but not confirmed may never have
            # reached the broker. It is sent again after the next births, as history.
            self._written.clear()
            self._confirming = False
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._give_back()

    def acknowledged(self, mid: int) -> None:
        inflight = self.inflight
        if mid not in inflight:
            return  # not ours (a resend after a reset)
        if self.sparkplug is not None and inflight[mid] is not None:
            self._written.append(mid)  # QoS 0: written, not yet known to be read
            self._confirm()
            return
        self._settle(mid)

    def _confirm(self) -> None:
        """A round trip to the broker for every record written since the last one: when it
        is answered, the broker has read them, and they are delivered (as a PUBACK says at
        QoS 1). One at a time; the next covers what was written meanwhile."""
        client = self._client
        if self._confirming or not self._written or client is None:
            return
        assert self.sparkplug is not None
        mids, self._written = self._written, []
        try:
            answer = client.round_trip(self.sparkplug.round_trip_filter)
        except NotConnected:
            return  # they go back to the buffer with the disconnect
        self._confirming = True
        session = self.connections
        # A broker that keeps the connection but never answers would hold them for ever.
        keepalive = self.settings.keepalive
        wait = float(keepalive) if keepalive > 0 else 60.0
        self._deadline = asyncio.get_running_loop().call_later(
            wait, self._unanswered, client, session, wait
        )

        def confirmed(answer: asyncio.Future[None]) -> None:
            if session != self.connections or answer.cancelled():
                return  # the connection ended: they went back to the buffer
            self._confirming = False
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            for mid in mids:
                if mid in self.inflight:
                    self._settle(mid)
            self._confirm()

        answer.add_done_callback(confirmed)

    def _unanswered(self, client: MqttClient, session: int, wait: float) -> None:
        self._deadline = None
        if session != self.connections or not self._confirming:
            return
        log.warning(
            "the broker does not confirm what it was sent: reconnecting",
            waited_s=wait,
            in_flight=len(self.inflight),
        )
        client.drop("no answer to a round trip")  # what it holds is sent again

    def _settle(self, mid: int) -> None:
        """Message ``mid`` is the broker's: a record is delivered."""
        inflight = self.inflight
        entry = inflight.pop(mid)
        if entry is not None:
            record = entry[0]
            self._acked.append(record.seq)
            if not self._sampled:
                asyncio.get_running_loop().call_soon(self._measure_age)
            self._sampled.append(record.sampled or record.created)
        self._made_room()

    def refused(self, mid: int, reason: str) -> None:
        if mid not in self.inflight:
            return
        entry = self.inflight.pop(mid)
        if entry is None:
            log.warning("the broker refuses a state", reason=reason)
        else:
            self._refused([entry[0].seq], "refused_by_broker", reason)
        self._made_room()

    def lost(self, mid: int) -> None:
        entry = self.inflight.pop(mid, None)
        if entry is not None:
            self.buffer.returned(*entry)
        self._made_room()

    def received(self, message: Message) -> None:
        """The readings' session subscribes only to a Sparkplug edge node's NCMD, DCMD and
        its primary host's STATE."""
        edge = self.sparkplug
        if edge is None:
            return
        online = edge.host_state(message.topic, message.payload)
        if online is True and not self._born.is_set():
            log.info("the primary host is online: births, then what waited", host=edge.primary_host)
            self.buffer.connected()  # what waited for the host is sent as historical
            self._birth(edge)
        elif (
            online is False
            and self._client is not None
            and (self._born.is_set() or edge.servers > 1)
        ):
            # [tck-id-operational-behavior-edge-node-termination-host-offline], [tck-id-
            # operational-behavior-primary-application-state-with-multiple-servers-walk]: the
            # server is left (the broker publishes the NDEATH will), for the next one when
            # there are several; data waits in the buffer.
            log.warning("the primary host is offline: leaving the server", host=edge.primary_host)
            self._born.clear()
            self._client.drop("the primary host is offline on this server")
        elif not self._born.is_set():
            return  # no command before this connection's births (a DCMD is never run late)
        elif edge.device_command(message.topic, message.payload):
            pass  # its writes are under way
        elif edge.next_server_asked(message.topic, message.payload) and self._client is not None:
            log.warning("a Sparkplug host asks the node to move to its next server")
            self._born.clear()
            self._client.drop("a host asked for the next server")
        elif edge.rebirth_asked(message.topic, message.payload):
            log.info("rebirth asked for by a Sparkplug host")
            self._birth(edge)  # the births replace whatever birth or death was still queued

    def _birth(self, edge: EdgeNode) -> None:
        births, deaths = edge.births()
        self._control, self._deferred = deque(births), deque(deaths)
        # What was encoded before these births (given back by a lost connection, say) goes
        # out after them as history: the births carry the current values.
        self._watermark = self.buffer.next_seq
        self._born.set()
        self.buffer.ready.set()

    def _made_room(self) -> None:
        low_water = self._low_water
        if low_water is not None and len(self.inflight) <= low_water:
            self._low_water = None
            self._room.set()

    # -- a message the broker will not take --------------------------------------------------

    def _look_for_a_culprit(self) -> None:
        """A broker closes the connection on a message it cannot take (on MQTT 3.1.1: over its
        size limit, or a QoS it does not take), and paho would send it first on every
        connection. After a connection that did not hold, messages go one at a time; one that
        ends ``STRIKES`` connections alone is set aside and counted."""
        client = self._client
        records = [entry for entry in self.inflight.values() if entry is not None]
        if client is None or not records or time.monotonic() - self._connected_at >= HELD:
            return
        if not self._probing:
            self._probing = True
            log.warning(
                "the broker dropped the connection soon after it was made: "
                "messages go one at a time until it holds",
                in_flight=len(records),
            )
            self._restart_session(client, records)
            return
        if len(records) != 1:
            return
        record = records[0][0]
        seq, strikes = self._suspect or (record.seq, 0)
        strikes = strikes + 1 if seq == record.seq else 1
        self._suspect = (record.seq, strikes)
        if strikes < STRIKES:
            return  # paho sends it again first on the next connection
        self._suspect = None
        log.error(
            "the broker closes the connection on this message: it is set aside",
            seq=record.seq,
            topic=record.topic,
            size=record.size,
            qos=self._qos,
            hint="an MQTT 3.1.1 broker does this with a message over its size limit or a QoS "
            "it does not take (mosquitto: max_packet_size, message_size_limit, max_qos)",
        )
        self._restart_session(client, [])
        self._refused([record.seq], "kills_connection", "the broker closed the connection")

    def _measure_age(self) -> None:
        """The acknowledgements of one loop turn, aged at one clock reading: messages of one
        poll share their source timestamp, so a run of them is one histogram step."""
        now = time.time()
        sampled, self._sampled = self._sampled, []
        # A device clock ahead of the gateway's would make ages negative: counted as 0.
        run_ts, run = sampled[0], 0
        for ts in sampled:
            if ts != run_ts:
                self.ack_age.observe(max(now - run_ts, 0.0), run)
                run_ts, run = ts, 0
            run += 1
        self.ack_age.observe(max(now - run_ts, 0.0), run)

    def _give_back(self) -> None:
        """A session ended for good: what it had in flight goes back to the buffer."""
        entries = [e for e in self.inflight.values() if e is not None]
        self.inflight.clear()
        for record, replayed in reversed(entries):
            self.buffer.returned(record, replayed)

    def _restart_session(self, client: MqttClient, resend: list[tuple[Record, bool]]) -> None:
        """A new session (paho forgets what it holds); ``resend`` goes back to the buffer."""
        client.reset_session()
        self.inflight.clear()
        for record, replayed in reversed(resend):
            self.buffer.returned(record, replayed)

    # -- accounting --------------------------------------------------------------------------

    def _collect(self) -> None:
        """Hand the buffer what was acknowledged since the last call."""
        if self._acked:
            acked, self._acked = self._acked, []
            self.buffer.acknowledged(acked)

    def _refused(
        self,
        seqs: list[int],
        kind: str,
        reason: str,
        event: str = "the broker refuses messages: they are dropped",
    ) -> None:
        """Messages that will never be delivered: dropped, counted, logged once per reason."""
        if (kind, reason) not in self._refusals:
            self._refusals.add((kind, reason))
            log.error(event, kind=kind, reason=reason)
        self.buffer.dropped(seqs, kind)

    async def _sync(self) -> None:
        """Every ``sync_interval``: delete what was acknowledged, commit, fsync."""
        while True:
            await asyncio.sleep(self.sync_interval)
            self._collect()
            await self.buffer.sync()

    async def _report(self) -> None:
        """The gateway status (retained) and a log line with the accounting, every 10 s."""
        last_dropped: dict[str, object] = {}
        overflowed = self.buffer.outcomes.dropped["buffer_full"]
        while True:
            await asyncio.sleep(STATUS_EVERY)
            stats = self.buffer.stats()
            connected = self._connected.is_set()
            if connected and self.sparkplug is None:
                self._queue_state(self.status_topic, self._status(stats))
            full = self.buffer.outcomes.dropped["buffer_full"]
            if full != overflowed and self.sparkplug is not None and self._born.is_set():
                # A full buffer may have dropped a device's birth or death: the births say
                # every device's state again.
                log.warning("the buffer dropped messages: births again", dropped=full - overflowed)
                self._birth(self.sparkplug)
            overflowed = full
            dropped = stats["dropped"]
            if dropped != last_dropped or (stats["buffered"] and not connected):
                log.info("delivery", connected=connected, **stats)
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

    async def _shutdown(self, client: MqttClient, offline: bool = True) -> None:
        """Commit, give what is in flight a moment, say offline (unless ``offline`` is false:
        a new session on the same broker follows); the client then disconnects.

        Nothing is lost by stopping: what is not acknowledged stays in the buffer (on disk, or
        for ``buffer.mode: memory`` it is flushed for up to 2 s first).
        """
        self._stopping = True
        buffer = self.buffer
        buffer.flush()
        if not self._connected.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5 if buffer.store.durable else 2.0):
                if not buffer.store.durable:
                    while buffer.pending() and self._connected.is_set():
                        await self._drain(client)
                        await asyncio.sleep(0.01)
                await self._wait_for_room(0)
        if not offline and self.sparkplug is None:
            self._collect()
            return
        # "offline" goes out whatever the window: a clean DISCONNECT follows, so the broker
        # will not publish the will, and the retained status must not stay "online".
        if self.sparkplug is not None:
            topic, payload = self.sparkplug.death()
            with contextlib.suppress(BrokerError):
                self.inflight[client.publish(topic, payload, 1)] = None
        else:
            self._states = {self.status_topic: OFFLINE}
            self._send_state(client)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await self._wait_for_room(0)
        self._collect()
