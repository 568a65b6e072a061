"""The gateway's one MQTT connection, on the event loop: connect, publish, acknowledge, reconnect.

A bare ``asyncio.Protocol`` speaking MQTT 3.1.1 or 5 through ``gateway/mqtt/packets.py``; no
thread, no client library. Why: at QoS 1 each reading is a PUBLISH and a PUBACK, and paho (even
driven from this loop, with its socket buffered) spent about half the gateway's CPU on them with
per-point messages; here a PUBLISH is one joined ``bytes`` and a PUBACK two bytes off the stream.

- **Writes** of one loop turn go out in one ``transport.write`` (a burst of a poll's messages is
  one system call). **Reads** are coalesced: after data arrives, reading pauses for
  ``READ_DELAY``, so thousands of PUBACKs a second cost a wakeup per millisecond, not per ack.
- **The session** is persistent (clean session off, a stable client id; MQTT 5: clean start off
  with a session expiry). Messages in flight are kept until acknowledged and sent again, in
  order and marked DUP, after a reconnect. The broker's MQTT 5 limits are obeyed: Receive
  Maximum caps the window, Maximum Packet Size refuses a message (``MessageTooLarge``),
  Maximum QoS and Retain Available downgrade (with a warning).
- **Liveness**: a PINGREQ when nothing was sent or received for ``keepalive``; no answer within
  another ``keepalive`` and the connection is dropped.
- **Reconnects** wait a capped (30 s), jittered backoff, so a fleet of gateways does not
  reconnect in lock-step after a broker restart. A TLS failure says why (an unknown CA, a wrong
  host name), from the handshake itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast

import structlog

from gateway.backoff import Backoff
from gateway.commands.request import Incoming
from gateway.config.schema import MqttSection
from gateway.errors import BrokerError, GatewayError, MessageTooLarge
from gateway.mqtt import packets
from gateway.mqtt.packets import (
    CONNACK,
    DISCONNECT,
    MAX_REMAINING,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    ProtocolError,
    reason_text,
)

log = structlog.get_logger("gateway.mqtt")

READ_DELAY = 0.001  # seconds between data arriving and reading it (see ``_Connection``)
# Messages sent and not yet acknowledged. A poll of 100 devices sends a burst of 100 device
# batches at once; a window of 250 lets a whole burst go out without waiting for acks (100
# measured slower on bursts). An MQTT 5 broker's Receive Maximum lowers it.
WINDOW = 250
V3_QOS2_WINDOW = 20  # see ``_limits``
CONNECT_TIMEOUT = 10.0  # TCP, TLS and CONNACK together
TICK = 1.0  # keep-alive check

# MQTT 5 user properties that name who sent a command (for the audit log).
CLIENT_PROPERTIES = ("client_id", "client", "user", "source")


class MqttLink:
    """One broker connection, reconnected until ``stop``."""

    def __init__(
        self,
        config: MqttSection,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[], None] | None = None,
        commands: tuple[str, Callable[[Incoming], None]] | None = None,
    ) -> None:
        """``commands``: (topic filter, handler) -- subscribed on every connect; each message
        is handed to the handler on the loop."""
        self.config = config
        self.client_id = client_id
        self.connected = asyncio.Event()
        # Flow control: the publisher waits on `room` when `sent - completed` reaches the window.
        self.sent = 0
        self.completed = 0
        self.wake_at: int | None = None
        self.room = asyncio.Event()
        self.window = WINDOW
        self.acked: list[int] = []  # message ids acknowledged, until ``take_acked``
        self.refused: list[tuple[int, str]] = []  # MQTT 5: ids the broker refused, and why
        self.tls_context = tls_context(config) if config.tls else None
        self._v5 = config.version == 5
        self._will = will
        self._on_connected = on_connected
        self._commands = commands
        self._loop = asyncio.get_running_loop()
        self._connection: _Connection | None = None
        self._inflight: dict[int, bytes] = {}  # mid -> its PUBLISH, until acknowledged
        # The broker's Receive Maximum (MQTT 5) bounds the QoS 1/2 messages on the wire; the
        # publisher's window stays below it, and states and answers beyond it wait in `_held`.
        self._receive_max = 65535
        self._on_wire = 0  # sent on this connection and not yet acknowledged
        self._held: deque[int] = deque()  # in flight, not yet sent on this connection
        self._released: set[int] = set()  # QoS 2: PUBREC answered with PUBREL, no PUBCOMP yet
        self._next_mid = 0
        self._incoming_qos2: set[int] = set()  # QoS 2 messages received, not yet released
        self._max_qos = 2
        self._retain = True
        self._max_packet = MAX_REMAINING + 5
        self._keepalive = int(config.keepalive)
        self._backoff = Backoff(initial=1.0, cap=30.0)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_error: str | None = None
        # MQTT 5 properties, encoded once: readings may expire (``message_expiry``); a retained
        # state must not, or the broker would forget a device's state that has not changed.
        self._properties = self._state_properties = b""
        if self._v5:
            found: list[tuple[int, object]] = [(packets.CONTENT_TYPE, "application/json")]
            self._state_properties = packets.properties(found)
            if config.message_expiry is not None:
                found.append((packets.MESSAGE_EXPIRY, int(config.message_expiry)))
            self._properties = packets.properties(found)
        self._log = log.bind(broker=f"{config.host}:{config.port}", client_id=client_id)

    # -- the publisher's interface -----------------------------------------------------------

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name="mqtt-link")

    @property
    def outstanding(self) -> int:
        """Messages sent and not yet acknowledged (at QoS 0: none once written)."""
        return self.sent - self.completed

    async def wait_for_room(self, low_water: int) -> None:
        """Wait until at most ``low_water`` messages are outstanding (or 1 s passed)."""
        self.room.clear()
        self.wake_at = low_water
        if self.outstanding > low_water:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.room.wait()
        self.wake_at = None

    async def wait_writable(self) -> None:
        """Wait while the socket's send buffer is full (or 1 s, or until disconnected)."""
        connection = self._connection
        if connection is not None and connection.paused:
            connection.drained.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await connection.drained.wait()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        """Send a buffered record: its id at QoS 1/2 (acknowledged later, see ``take_acked``),
        0 at QoS 0 (done once written); None when it cannot be taken now (not connected, or
        the socket's buffer is full: the caller waits, see ``wait_writable``).
        ``MessageTooLarge``: never deliverable to this broker. ``topic`` is trusted (the map's
        topics are checked at load)."""
        connection = self._connection
        if connection is None or connection.paused or not self.connected.is_set():
            return None
        properties = self._properties
        return self._send_publish(connection, topic.encode(), payload, qos, retain, properties)

    def publish_state(self, topic: str, payload: bytes) -> None:
        """A retained state (gateway status, device state), QoS 1, sent even while the socket's
        buffer is full; nothing when disconnected (the caller sends it again on connect)."""
        connection = self._connection
        if connection is None or not self.connected.is_set():
            return
        try:
            properties = self._state_properties
            self._send_publish(connection, topic.encode(), payload, 1, True, properties)
        except MessageTooLarge as exc:
            self._log.warning("state not published", topic=topic, reason=str(exc))

    def publish_answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """A command's result: QoS 1, not retained, not buffered (a late answer is useless,
        and a caller that got none reads its timeout as "unknown")."""
        connection = self._connection
        if connection is None or not self.connected.is_set():
            return
        try:
            topic_bytes = packets.check_topic(topic)  # a response topic comes from anyone
        except ValueError as exc:
            self._log.warning("command answer not published", topic=topic, reason=str(exc))
            return
        props = b""
        if self._v5:
            found: list[tuple[int, object]] = [(packets.CONTENT_TYPE, "application/json")]
            if correlation is not None:
                found.append((packets.CORRELATION_DATA, correlation))
            props = packets.properties(found)
        try:
            self._send_publish(connection, topic_bytes, payload, 1, False, props)
        except MessageTooLarge as exc:
            self._log.warning("command answer not published", topic=topic, reason=str(exc))

    def _send_publish(
        self,
        connection: _Connection,
        topic: bytes,
        payload: bytes,
        qos: int,
        retain: bool,
        props: bytes,
    ) -> int:
        """The one way a PUBLISH goes out: the broker's limits, a message id, in flight."""
        if qos > self._max_qos:
            qos = self._max_qos
        mid = self._new_mid() if qos else 0
        packet = packets.publish(topic, payload, qos, retain and self._retain, mid, props)
        if len(packet) > self._max_packet:
            raise MessageTooLarge(f"over the broker's maximum packet size ({self._max_packet} B)")
        self.sent += 1
        if not qos:
            self.completed += 1
            connection.send(packet)
            return 0
        self._inflight[mid] = packet
        if self._on_wire < self._receive_max:
            self._on_wire += 1
            connection.send(packet)
        else:
            self._held.append(mid)
        return mid

    def take_acked(self) -> tuple[list[int], list[tuple[int, str]]]:
        """Message ids acknowledged since the last call, and those the broker refused."""
        acked, self.acked = self.acked, []
        refused, self.refused = self.refused, []
        return acked, refused

    async def stop(self) -> None:
        """Send DISCONNECT (when connected), wait for the socket to close, stop the task."""
        self._stopping = True
        connection = self._connection
        if connection is not None:
            if self.connected.is_set():
                connection.send(packets.GOODBYE)
            connection.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(connection.closed)
            connection.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.connected.clear()
        self._log.info("broker disconnected")

    # -- connecting ------------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, serve the connection until it ends, wait, and again."""
        delay = 0.0
        while not self._stopping:
            if delay:
                await asyncio.sleep(delay)
            try:
                connection = await self._connect()
            except (BrokerError, OSError, TimeoutError, ssl.SSLError) as exc:
                self._failed(exc)
                delay = self._backoff.next_delay()
                continue
            self._up(connection)
            reason = await asyncio.shield(connection.closed)
            self._down(connection, reason)
            # Jitter: the first retry after a drop waits 0.8-1.2 s, then doubles up to 30 s.
            self._backoff.reset()
            delay = self._backoff.next_delay()

    async def _connect(self) -> _Connection:
        config = self.config
        connection = _Connection(self)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._loop.create_connection(
                    lambda: connection,
                    config.host,
                    config.port,
                    ssl=self.tls_context,
                    server_hostname=config.host if self.tls_context is not None else None,
                )
                connection.send_now(self._connect_packet())
                connack = await asyncio.shield(connection.connack)
        except BaseException:
            connection.abort()
            raise
        if connack.code:
            connection.abort()
            raise BrokerError(f"refused: {reason_text(connack.code, self._v5)}")
        self._limits(connack)
        connection.session_present = connack.session_present
        return connection

    def _connect_packet(self) -> bytes:
        config = self.config
        will = None
        if self._will is not None:
            will = (self._will[0], self._will[1], 1, True)
        connect_properties = packets.NO_PROPERTIES
        if self._v5:
            expiry = int(config.session_expiry)
            connect_properties = packets.properties([(packets.SESSION_EXPIRY, expiry)])
        return packets.connect(
            self.client_id,
            self._keepalive,
            self._v5,
            clean=False,
            username=config.username,
            password=config.password if config.username else None,
            will=will,
            connect_properties=connect_properties,
        )

    def _limits(self, connack: packets.Connack) -> None:
        """The broker's MQTT 5 limits for this connection (defaults: none)."""
        found = connack.properties
        # MQTT 3.1.1 has no Receive Maximum, but brokers still bound the QoS 2 messages a
        # client may leave unreleased (mosquitto: 20, and it disconnects a client that sends
        # more): with QoS 2 on 3.1.1 the window is that.
        unannounced = 65535 if self._v5 or self.config.qos < 2 else V3_QOS2_WINDOW
        self._receive_max = max(1, cast(int, found.get(packets.RECEIVE_MAXIMUM, unannounced)))
        self.window = min(WINDOW, self._receive_max)
        self._max_packet = cast(int, found.get(packets.MAXIMUM_PACKET_SIZE, MAX_REMAINING + 5))
        self._keepalive = cast(
            int, found.get(packets.SERVER_KEEP_ALIVE, int(self.config.keepalive))
        )
        max_qos = cast(int, found.get(packets.MAXIMUM_QOS, 2))
        if max_qos < self.config.qos and max_qos != self._max_qos:
            self._log.warning("the broker's maximum QoS is below mqtt.qos", max_qos=max_qos)
        self._max_qos = max_qos
        retain = bool(found.get(packets.RETAIN_AVAILABLE, 1))
        if not retain and self._retain:
            self._log.warning("the broker keeps no retained messages: states are sent plain")
        self._retain = retain

    def _up(self, connection: _Connection) -> None:
        """Connected: resend what is in flight, subscribe, tell the publisher."""
        self._connection = connection
        # The broker's MQTT 5 limits, where it set any: they shape the flow from now on.
        limits = {
            name: value
            for name, value, unlimited in (
                ("receive_maximum", self._receive_max, 65535),
                ("maximum_packet_size", self._max_packet, MAX_REMAINING + 5),
                ("maximum_qos", self._max_qos, 2),
            )
            if value != unlimited
        }
        self._log.info(
            "broker connected",
            keepalive=self._keepalive,
            session_present=connection.session_present,
            **limits,
        )
        self._last_error = None
        # In flight, in the order first sent. A broker that lost our session (it restarted
        # without persistence) gets even a released QoS 2 message again: at least once.
        if not connection.session_present:
            self._released.clear()  # the broker has none of them: each is sent whole again
        never_sent = set(self._held)
        self._inflight = {
            mid: packet if mid in never_sent else packets.as_duplicate(packet)
            for mid, packet in self._inflight.items()
        }
        self._on_wire = 0
        self._held = deque(self._inflight)
        self._send_held(connection)
        if self._commands is not None:
            topic_filter = self._commands[0]
            # QoS 0: the broker does not keep commands for us while we are away (a setpoint
            # must not be applied late); it is re-made on every connect. MQTT 5 keeps the
            # retain flag of live messages too, so a command published retained is refused at
            # once, not only when the broker replays it. A resumed session may hold the same
            # filter without Retain-As-Published (made by an MQTT 3.1.1 run): mosquitto then
            # keeps the old options, so it is unsubscribed first.
            if self._v5:
                connection.send(packets.unsubscribe(self._new_mid(), topic_filter, True))
            connection.send(packets.subscribe(self._new_mid(), topic_filter, 0, self._v5, True))
        connection.start_ticking()
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _down(self, connection: _Connection, reason: str) -> None:
        self._connection = None
        self.connected.clear()
        self._incoming_qos2.clear()
        self.room.set()  # a waiting publisher sees the disconnect
        if self._stopping:
            return
        self._log.warning("broker connection lost", reason=reason)
        self._last_error = reason

    def _failed(self, exc: BaseException) -> None:
        """A connection attempt failed: say why, once per distinct reason."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            if reason != self._last_error:
                ca = str(self.config.ca) if self.config.ca else "the system's CAs"
                self._log.error(
                    "broker certificate refused",
                    reason=reason,
                    hint=f"the broker's certificate must be signed by {ca} and name "
                    f"{self.config.host!r}",
                )
        elif isinstance(exc, ssl.SSLError):
            reason = exc.reason or str(exc)
            if reason != self._last_error:
                self._log.error("TLS handshake with the broker failed", reason=reason)
        elif isinstance(exc, BrokerError) and str(exc).startswith("refused: "):
            reason = str(exc).removeprefix("refused: ")
            if reason != self._last_error:
                self._log.warning("broker refused connection", reason=reason)
        else:
            reason = str(exc) or ("timeout" if isinstance(exc, TimeoutError) else repr(exc))
            if reason != self._last_error:
                self._log.warning("broker unreachable", reason=reason)
        self._last_error = reason

    def _send_held(self, connection: _Connection) -> None:
        """Send held messages, oldest first, while the broker's Receive Maximum allows: after
        a reconnect each again (marked DUP), or its PUBREL for a QoS 2 message the broker
        already has."""
        held, inflight = self._held, self._inflight
        while held and self._on_wire < self._receive_max:
            mid = held.popleft()
            packet = inflight.get(mid)
            if packet is None:
                continue  # acknowledged meanwhile
            self._on_wire += 1
            connection.send(packets.ack(PUBREL, mid) if mid in self._released else packet)

    def _new_mid(self) -> int:
        mid, inflight = self._next_mid, self._inflight
        while True:
            mid = mid % 65535 + 1
            if mid not in inflight:
                self._next_mid = mid
                return mid

    # -- what arrives (called by the connection, on the loop) -------------------------------

    def _completed(self, mid: int, code: int) -> None:
        """PUBACK, PUBCOMP (or a refusing PUBREC): message ``mid`` is done."""
        if self._inflight.pop(mid, None) is None:
            return  # not ours, or acknowledged twice
        self._released.discard(mid)
        self._on_wire -= 1
        if self._held and self._connection is not None:
            self._send_held(self._connection)
        if code < 0x80:
            self.acked.append(mid)
        else:
            self.refused.append((mid, reason_text(code)))
        self.completed += 1
        # Wake the publisher once the window has drained to the low-water mark it asked for,
        # not per acknowledgement.
        wake_at = self.wake_at
        if wake_at is not None and self.sent - self.completed <= wake_at:
            self.wake_at = None
            self.room.set()

    def _received(self, connection: _Connection, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind in (PUBACK, PUBCOMP):
            if len(body) == 2:
                self._completed((body[0] << 8) | body[1], 0)
            else:
                ack = packets.read_ack(body, self._v5)
                self._completed(ack.mid, ack.codes[0])
        elif kind == PUBREC:
            ack = packets.read_ack(body, self._v5)
            if ack.codes[0] >= 0x80:
                self._completed(ack.mid, ack.codes[0])
            elif ack.mid in self._inflight:
                self._released.add(ack.mid)
                connection.send(packets.ack(PUBREL, ack.mid))
        elif kind == PUBLISH:
            self._message(connection, packets.read_publish(first, body, self._v5))
        elif kind == PUBREL:
            mid = packets.read_ack(body, self._v5).mid
            self._incoming_qos2.discard(mid)
            connection.send(packets.ack(PUBCOMP, mid))
        elif kind == SUBACK:
            ack = packets.read_ack(body, self._v5, listed=True)
            for code in ack.codes:
                if code >= 0x80:
                    self._log.warning(
                        "command subscription refused", reason=reason_text(code, self._v5)
                    )
        elif kind in (UNSUBACK, PINGRESP):
            pass  # liveness only (``last_received``)
        elif kind == CONNACK:
            if connection.connack.done():
                raise ProtocolError("a second CONNACK")
            connection.connack.set_result(packets.read_connack(body, self._v5))
        elif kind == DISCONNECT and self._v5:
            code, found = packets.read_disconnect(body)
            detail = found.get(packets.REASON_STRING)
            reason = reason_text(code) + (f" ({detail})" if detail else "")
            connection.lose(f"the broker disconnected: {reason}")
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _message(self, connection: _Connection, message: packets.Message) -> None:
        if message.qos == 1:
            connection.send(packets.ack(PUBACK, message.mid))
        elif message.qos == 2:
            connection.send(packets.ack(PUBREC, message.mid))
            if message.mid in self._incoming_qos2:
                return  # the same message again before its PUBREL
            self._incoming_qos2.add(message.mid)
        if self._commands is not None:
            # call_soon: a handler's failure is the loop's to report, not the connection's.
            self._loop.call_soon(self._commands[1], _incoming(message))


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the broker: bytes in and out, liveness."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.loop = link._loop
        self.transport: asyncio.Transport | None = None
        self.session_present = False
        self.connack: asyncio.Future[packets.Connack] = self.loop.create_future()
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self.paused = False  # the transport's send buffer is full
        self.drained = asyncio.Event()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._rest = b""
        self._reading_paused = False
        self._ticking: asyncio.TimerHandle | None = None
        self.last_sent = self.last_received = self.loop.time()
        self._ping_sent: float | None = None

    # -- out ---------------------------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        """Queue a packet; everything queued in one loop turn goes out in one write."""
        self._out.append(packet)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def send_now(self, packet: bytes) -> None:
        self.send(packet)
        self.flush()

    def flush(self) -> None:
        self._flush_handle = None
        transport, out = self.transport, self._out
        if not out or transport is None:
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        self.last_sent = self.loop.time()

    def close(self) -> None:
        """Send what is queued, then close (the DISCONNECT of a clean stop goes out)."""
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        self.lose("closed")

    def lose(self, reason: str) -> None:
        """The connection is over (``reason`` is what the link logs)."""
        if not self.closed.done():
            self.closed.set_result(reason)
        if not self.connack.done():
            self.connack.set_exception(BrokerError(reason))
            self.connack.exception()  # retrieved: an attempt that timed out never awaits it
        if self._ticking is not None:
            self._ticking.cancel()
        self._out.clear()
        self.drained.set()
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    # -- liveness ------------------------------------------------------------------------------

    def start_ticking(self) -> None:
        self._ticking = self.loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        """A PINGREQ when the line was quiet for ``keepalive``; no answer: the link is dead."""
        keepalive = self.link._keepalive
        now = self.loop.time()
        if self._ping_sent is not None:
            if self.last_received > self._ping_sent:
                self._ping_sent = None
            elif now - self._ping_sent > max(keepalive, 1):
                self.lose(f"no answer to a keep-alive ping for {max(keepalive, 1)} s")
                return
        # A tick early: the broker drops a client that is silent for 1.5 x keepalive.
        quiet = max(keepalive - TICK, TICK)
        if (
            keepalive
            and self._ping_sent is None
            and (now - self.last_sent >= quiet or now - self.last_received >= quiet)
        ):
            self._ping_sent = now
            self.send(packets.PING)
        self._ticking = self.loop.call_later(TICK, self._tick)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's is not an asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle would hold an answer written while our previous packet is unacknowledged
            # for the peer's delayed ACK, ~40 ms on Linux.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        if self._rest:
            data = self._rest + data
        link = self.link
        completed, received = link._completed, link._received
        try:
            found, self._rest = packets.split(data)
            for first, body in found:
                if first == 0x40 and len(body) == 2:  # a plain PUBACK
                    completed((body[0] << 8) | body[1], 0)
                elif self.transport is None:
                    return
                else:
                    received(self, first, body)
        except BrokerError as exc:
            link._log.warning("broker sent something that is not MQTT", reason=str(exc))
            self.lose(f"protocol error: {exc}")
            return
        # Coalesce: at thousands of messages a second each PUBACK comes in a segment of its
        # own, and a wakeup per PUBACK costs more than the PUBACK.
        transport = self.transport
        if transport is not None and not self._reading_paused and self.connack.done():
            self._reading_paused = True
            transport.pause_reading()
            self.loop.call_later(READ_DELAY, self._resume_reading)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.drained.set()

    def eof_received(self) -> bool | None:
        self.lose("the broker closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lose(f"connection lost: {exc}" if exc else "connection lost")


def _incoming(message: packets.Message) -> Incoming:
    found = message.properties
    response_topic = found.get(packets.RESPONSE_TOPIC)
    correlation = found.get(packets.CORRELATION_DATA)
    user = dict(cast(list[tuple[str, str]], found.get(packets.USER_PROPERTY, [])))
    client = next((user[k] for k in CLIENT_PROPERTIES if k in user), None)
    return Incoming(
        message.topic,
        message.payload,
        message.retain,
        response_topic if isinstance(response_topic, str) else None,
        correlation if isinstance(correlation, bytes) else None,
        client,
    )


def tls_context(config: MqttSection) -> ssl.SSLContext:
    """Verify the broker against ``ca`` (or the system's CAs); present ``cert``/``key``."""
    try:
        context = ssl.create_default_context(cafile=str(config.ca) if config.ca else None)
        if config.insecure:
            context.check_hostname = False
        if config.cert is not None and config.key is not None:
            context.load_cert_chain(str(config.cert), str(config.key))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot load the broker TLS files (ca, cert, key): {exc}") from None
    return context
