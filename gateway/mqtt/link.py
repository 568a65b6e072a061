"""paho-mqtt's network thread meets our event loop here, and only here.

paho runs its network loop in a thread of its own (``loop_start``); its callbacks are handed to
the asyncio loop with ``call_soon_threadsafe``, except acknowledgements, which are many: their
message ids go into a deque (thread-safe appends and pops) that the loop drains in batches.
``publish`` is called from the event loop; paho guards its state with its own locks.

The session is persistent (clean session off, a stable client id; MQTT 5: clean start off with a
session expiry), so QoS 1/2 messages paho holds are resent after a reconnect. paho reconnects by
itself; we re-randomize its first delay after every drop, so a fleet of gateways does not
reconnect in lock-step after a broker restart. A TLS failure is diagnosed once, on the loop, with
a handshake of our own, so the log says *why* (an unknown CA, a wrong host name).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.commands.request import Incoming
from gateway.config.schema import MqttSection
from gateway.errors import GatewayError

log = structlog.get_logger("gateway.mqtt")

WINDOW = 1000  # messages handed to paho and not yet acknowledged


class MqttLink:
    """One broker connection; paho reconnects by itself with capped backoff."""

    def __init__(
        self,
        config: MqttSection,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[], None] | None = None,
        commands: tuple[str, Callable[[Incoming], None]] | None = None,
    ) -> None:
        """``commands``: (topic filter, handler) -- subscribe on every connect and hand each
        message to the handler on the loop."""
        self.config = config
        self.connected = asyncio.Event()
        # Flow control: `sent` is counted on the loop, `completed` in paho's thread (one writer
        # each); the publisher waits on `room` when `sent - completed` reaches the window.
        self.sent = 0
        self.completed = 0
        self.wake_at: int | None = None
        self.room = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._on_connected = on_connected
        self._last_error: str | None = None
        self._stopping = False
        self.acked: deque[int] = deque()  # mids acknowledged, appended by paho's thread
        v5 = config.version == 5
        if v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=False,
                protocol=mqtt.MQTTv311,
            )
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        self.tls_context: ssl.SSLContext | None = None
        if config.tls:
            self.tls_context = tls_context(config)
            client.tls_set_context(self.tls_context)
            client.tls_insecure_set(config.insecure)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # NOTES: an in-flight window of 20-100 is fastest; a huge one halves QoS 1 throughput.
        client.max_inflight_messages_set(100)
        # Bound paho's own queue (a safety net: the publisher keeps to WINDOW): beyond it,
        # records wait in the buffer.
        client.max_queued_messages_set(2 * WINDOW)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_connect_fail = self._paho_connect_fail
        client.on_message = self._paho_message
        client.on_socket_open = no_delay
        self._commands = commands
        self._client = client
        self._v5 = v5
        # MQTT 5 properties: one object for every reading (packed per publish by paho).
        self.properties: Properties | None = None
        if v5:
            self.properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            self.properties.ContentType = "application/json"
            if config.message_expiry is not None:
                self.properties.MessageExpiryInterval = int(config.message_expiry)
        self._log = log.bind(broker=f"{config.host}:{config.port}", client_id=client_id)
        self._diagnosing = False

    def start(self) -> None:
        connect: dict[str, Any] = {}
        if self._v5:
            session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            session.SessionExpiryInterval = int(self.config.session_expiry)
            connect = {"clean_start": False, "properties": session}
        self._client.connect_async(
            self.config.host, self.config.port, int(self.config.keepalive), **connect
        )
        self._client.loop_start()

    @property
    def outstanding(self) -> int:
        """Messages handed to paho and not yet acknowledged (or, at QoS 0, written)."""
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

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False
    ) -> tuple[int, int]:
        """Hand a message to paho: (rc, mid). At QoS 1/2, MQTT_ERR_NO_CONN still means paho
        holds the message and sends it on reconnect; MQTT_ERR_QUEUE_SIZE means it does not."""
        info = self._client.publish(
            topic, payload, qos=qos, retain=retain, properties=self.properties
        )
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and qos):
            self.sent += 1
        return info.rc, info.mid

    def publish_answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """A command's result: QoS 1, not retained, not buffered (a late answer is useless,
        and a caller that got none reads its timeout as "unknown")."""
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = "application/json"
            if correlation is not None:
                properties.CorrelationData = correlation
        try:
            info = self._client.publish(topic, payload, qos=1, properties=properties)
        except ValueError as exc:  # paho refuses a malformed topic
            self._log.warning("command answer not published", topic=topic, reason=str(exc))
            return
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.sent += 1

    def take_acked(self) -> list[int]:
        """Message ids acknowledged since the last call."""
        acked, pop = [], self.acked.popleft
        while self.acked:
            acked.append(pop())
        return acked

    async def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        # loop_stop joins paho's thread: do it off the event loop.
        await asyncio.to_thread(self._client.loop_stop)

    # -- paho thread side: hand everything over to the loop -----------------------------------

    def _paho_connect(self, client: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self._commands is not None and not reason.is_failure:
            # QoS 0: the broker does not keep commands for us while we are away (a setpoint
            # must not be applied late); it is re-made on every connect.
            # MQTT 5 keeps the retain flag of live messages too, so a command published
            # retained is refused at once, not only when the broker replays it.
            if self._v5:
                options = SubscribeOptions(qos=0, retainAsPublished=True)
                client.subscribe(self._commands[0], options=options)
            else:
                client.subscribe(self._commands[0], qos=0)
        self._loop.call_soon_threadsafe(self._connected, reason.is_failure, str(reason))

    def _paho_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            incoming = _incoming(message)
        except Exception:  # never let a malformed message stop paho's thread
            return
        if self._commands is not None:
            self._loop.call_soon_threadsafe(self._commands[1], incoming)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, str(reason))

    def _paho_connect_fail(self, _c: Any, _u: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, "connection failed")

    def _paho_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self.acked.append(mid)
        self.completed += 1
        # Waking the loop costs a syscall, a loop turn and a GIL hand-off: only once the window
        # has drained to the low-water mark the publisher asked for, not per acknowledgement.
        if self.wake_at is not None and self.sent - self.completed <= self.wake_at:
            self.wake_at = None
            self._loop.call_soon_threadsafe(self.room.set)

    # -- loop side ------------------------------------------------------------------------------

    async def _diagnose_tls(self) -> None:
        """Say why a TLS connection fails: paho only reports that it did."""
        try:
            async with asyncio.timeout(10):
                _, writer = await asyncio.open_connection(
                    self.config.host,
                    self.config.port,
                    ssl=self.tls_context,
                    server_hostname=None if self.config.insecure else self.config.host,
                )
                writer.close()
        except ssl.SSLCertVerificationError as exc:
            ca = str(self.config.ca) if self.config.ca else "the system's CAs"
            self._log.error(
                "broker certificate refused",
                reason=exc.verify_message,
                hint=f"the broker's certificate must be signed by {ca} and name "
                f"{self.config.host!r}",
            )
        except ssl.SSLError as exc:
            self._log.error("TLS handshake with the broker failed", reason=exc.reason or str(exc))
        except (OSError, TimeoutError):
            pass  # not a TLS problem: the broker is unreachable, reported as such
        finally:
            self._diagnosing = False

    def _connected(self, failed: bool, reason: str) -> None:
        if failed:
            if reason != self._last_error:
                self._log.warning("broker refused connection", reason=reason)
                self._last_error = reason
            return
        self._log.info("broker connected")
        self._last_error = None
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _disconnected(self, reason: str) -> None:
        # Jitter: the first retry after a drop waits 0.5-1.5 s (then paho doubles, up to 30 s).
        # (paho types the delays as int; it sleeps on floats just as well)
        delay: Any = random.uniform(0.5, 1.5)
        self._client.reconnect_delay_set(min_delay=delay, max_delay=30)
        if self.tls_context is not None and not self._diagnosing and not self._stopping:
            self._diagnosing = True
            self._loop.create_task(self._diagnose_tls())
        if self._stopping:
            self._log.info("broker disconnected")
        elif self.connected.is_set():
            self._log.warning("broker connection lost", reason=reason)
        elif reason != self._last_error:
            self._log.warning("broker unreachable", reason=reason)
        self._last_error = reason
        self.connected.clear()


def no_delay(_c: Any, _u: Any, sock: Any) -> None:
    """paho's ``on_socket_open``: send small packets at once. paho leaves Nagle's algorithm on,
    so a packet written while the previous one is unacknowledged (an answer after a PUBACK)
    waits for the peer's delayed ACK, ~40 ms on Linux."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# MQTT 5 user properties that name who sent a command (for the audit log).
CLIENT_PROPERTIES = ("client_id", "client", "user", "source")


def _incoming(message: mqtt.MQTTMessage) -> Incoming:
    properties = getattr(message, "properties", None)
    response_topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    user = dict(getattr(properties, "UserProperty", None) or [])
    client = next((str(user[k]) for k in CLIENT_PROPERTIES if k in user), None)
    return Incoming(
        message.topic,
        bytes(message.payload),
        bool(message.retain),
        response_topic if isinstance(response_topic, str) else None,
        bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
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
