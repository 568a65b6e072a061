"""paho-mqtt driven by our event loop: the one MQTT connection of the gateway.

paho does not get a thread of its own. Its socket is watched by the event loop (``add_reader``;
``add_writer`` while paho has something to send), and ``loop_misc`` runs every second for the
keep-alive. A second thread made the two take turns on the GIL, with a hand-off per
acknowledgement: the profile of a loaded gateway had paho's thread holding the GIL most of the
time. Only the blocking part of a (re)connect -- TCP connect and TLS handshake -- runs in a
worker thread; the socket callbacks it triggers are handed to the loop, in ``_on_loop``, the one
place where a thread meets the loop.

The session is persistent (clean session off, a stable client id; MQTT 5: clean start off with a
session expiry), so QoS 1/2 messages paho holds are resent after a reconnect. We reconnect with
capped backoff whose first delay after a drop is randomized, so a fleet of gateways does not
reconnect in lock-step after a broker restart. A TLS failure is diagnosed once, on the loop, with
a handshake of our own, so the log says *why* (an unknown CA, a wrong host name).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

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
from gateway.mqtt.paho_pubacks import lighten_pubacks

log = structlog.get_logger("gateway.mqtt")

READ_DELAY = 0.001  # seconds between data arriving and reading it (see ``_readable``)
# Messages handed to paho and not yet acknowledged. A poll of 100 devices sends a burst of 100
# device batches at once; a window of 250 lets a whole burst go out without waiting for acks
# (100 measured slower on bursts). paho's own in-flight limit is off (``max_inflight 0``): it
# scanned every in-flight message on each PUBACK, which made big windows expensive.
WINDOW = 250


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
        lighten_pubacks()
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
        # The publisher keeps its own window (WINDOW). paho's limit is off: with one, every
        # acknowledgement makes paho scan all its in-flight messages for a queued one to send.
        client.max_inflight_messages_set(0)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_want_write
        client.on_socket_unregister_write = self._socket_done_writing
        self._loop_thread = threading.get_ident()
        self._reconnecting: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._delay = 0.0  # before the next connection attempt
        self._closed = asyncio.Event()
        self._closed.set()
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
        self._reconnect_after(0.0)
        self._housekeeping = self._loop.create_task(self._keep_alive())

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
        """Send DISCONNECT (when connected), wait for the socket to close, stop our tasks."""
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._client.socket() is not None:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._closed.wait()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        sock = self._client.socket()
        if sock is not None:  # the broker did not let us say goodbye
            self._unwatch(sock)
            with contextlib.suppress(OSError):
                sock.close()

    # -- driving paho from the loop -------------------------------------------------------------

    def _on_loop(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on the event loop, soon: paho calls back from the loop itself, or
        from the worker thread of a (re)connect."""
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(function, *args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    def _socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        no_delay(client, userdata, sock)
        # paho reads and writes through buffers: see ``BufferedSocket``.
        client._sock = sock = BufferedSocket(sock)
        self._on_loop(self._watch, sock)

    def _socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _socket_want_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._watch_writes, sock)

    def _socket_done_writing(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._unwatch_writes, sock)

    def _watch(self, sock: Any) -> None:
        current: Any = self._client.socket()
        if sock is current:  # not a socket closed since
            self._closed.clear()
            with contextlib.suppress(ValueError, OSError):
                self._loop.add_reader(current, self._readable, current)

    def _unwatch(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._client.socket() is None:
            self._closed.set()

    def _watch_writes(self, sock: Any) -> None:
        current: Any = self._client.socket()
        if sock is current:
            with contextlib.suppress(ValueError, OSError):
                self._loop.add_writer(current, self._writable, current)

    def _unwatch_writes(self, sock: Any) -> None:
        if isinstance(sock, BufferedSocket) and sock.unsent():
            return  # paho is done, the socket is not: ``_writable`` stops watching
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _writable(self, sock: Any) -> None:
        """paho writes all it has into the socket's buffer, then one ``send`` takes it out."""
        if self._client.socket() is not sock:
            return
        self._client.loop_write()
        flushed = sock.flush() if isinstance(sock, BufferedSocket) else True  # narrows the type
        if flushed and not self._client.want_write():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(cast(Any, sock))

    def _readable(self, sock: Any) -> None:
        """Data arrived: read it ``READ_DELAY`` later, together with what follows.

        At thousands of messages a second each PUBACK comes in a segment of its own, and a
        wakeup per PUBACK costs more than the PUBACK. The socket is not watched meanwhile.
        """
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
        self._loop.call_later(READ_DELAY, self._read_and_watch, sock)

    def _read_and_watch(self, sock: Any) -> None:
        if self._client.socket() is not sock:
            return  # closed meanwhile
        try:
            self._read()
        finally:  # whatever paho raised, the socket stays watched
            if self._client.socket() is sock:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.add_reader(cast(Any, sock), self._readable, sock)

    def _read(self) -> None:
        client = self._client
        client.loop_read()
        # TLS: what the SSL layer already decrypted does not wake the selector again.
        sock = client.socket()
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            self._loop.call_soon(self._read)

    async def _keep_alive(self) -> None:
        """paho's keep-alive (PINGREQ, and a dead connection detected) needs a tick."""
        while True:
            await asyncio.sleep(1.0)
            self._client.loop_misc()

    def _reconnect_after(self, delay: float) -> None:
        if self._stopping or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = self._loop.create_task(self._reconnect(delay))

    async def _reconnect(self, delay: float) -> None:
        """Connect (TCP, TLS, CONNECT) off the loop; on failure retry with capped backoff.
        Once connected, the CONNACK (or the broker closing on us) arrives on the loop."""
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self._client.reconnect)
                return
            except Exception as exc:  # OSError, ssl.SSLError, socket.timeout, a DNS failure...
                self._unreachable(str(exc) or type(exc).__name__)
            delay = self._delay = min(max(2 * self._delay, 1.0), 30.0)

    # -- paho's callbacks (on the loop) ---------------------------------------------------------

    def _paho_connect(self, client: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self._commands is not None and not reason.is_failure:
            # QoS 0: the broker does not keep commands for us while we are away (a setpoint
            # must not be applied late); it is re-made on every connect.
            # MQTT 5 keeps the retain flag of live messages too, so a command published
            # retained is refused at once, not only when the broker replays it.
            if self._v5:
                # A resumed session may hold the same filter without Retain-As-Published
                # (made by an MQTT 3.1.1 run): mosquitto then keeps the old options.
                client.unsubscribe(self._commands[0])
                options = SubscribeOptions(qos=0, retainAsPublished=True)
                client.subscribe(self._commands[0], options=options)
            else:
                client.subscribe(self._commands[0], qos=0)
        self._on_loop(self._connected, reason.is_failure, str(reason))

    def _paho_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            incoming = _incoming(message)
        except Exception:  # never let a malformed message stop paho's thread
            return
        if self._commands is not None:
            self._on_loop(self._commands[1], incoming)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._on_loop(self._disconnected, str(reason))

    def _paho_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self.acked.append(mid)
        self.completed += 1
        # Wake the publisher once the window has drained to the low-water mark it asked for,
        # not per acknowledgement.
        if self.wake_at is not None and self.sent - self.completed <= self.wake_at:
            self.wake_at = None
            self.room.set()

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
        self._delay = 0.0
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _disconnected(self, reason: str) -> None:
        """The connection ended (lost, refused by the broker, or closed by us)."""
        if self._stopping:
            self._log.info("broker disconnected")
            self.connected.clear()
            return
        if self.connected.is_set():
            self._log.warning("broker connection lost", reason=reason)
            self._last_error = reason
            self.connected.clear()
            # Jitter: the first retry after a drop waits 0.5-1.5 s, then doubles up to 30 s.
            self._delay = random.uniform(0.5, 1.5)
        else:
            self._unreachable(reason)
            self._delay = min(max(2 * self._delay, 1.0), 30.0)
        self._reconnect_after(self._delay)

    def _unreachable(self, reason: str) -> None:
        if self.tls_context is not None and not self._diagnosing and not self._stopping:
            self._diagnosing = True
            self._loop.create_task(self._diagnose_tls())
        if reason != self._last_error:
            self._log.warning("broker unreachable", reason=reason)
        self._last_error = reason
        self.connected.clear()


def no_delay(_c: Any, _u: Any, sock: Any) -> None:
    """paho's ``on_socket_open``: send small packets at once. paho leaves Nagle's algorithm on,
    so a packet written while the previous one is unacknowledged (an answer after a PUBACK)
    waits for the peer's delayed ACK, ~40 ms on Linux."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BufferedSocket:
    """A socket read in large chunks and written in large chunks, for paho.

    paho reads each packet's fixed header a byte at a time (three or more system calls per
    4-byte PUBACK) and sends each packet with a system call of its own. Here ``recv`` is
    served from one large read of what the kernel holds, and ``send`` only collects: the link
    calls ``flush`` once paho has written everything it had, one system call for all of it.
    Everything else is the socket's own.
    """

    __slots__ = ("_data", "_out", "_position", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._position = 0
        self._out = bytearray()

    def recv(self, size: int) -> bytes:
        data, position = self._data, self._position
        if position >= len(data):
            data = self._data = self._sock.recv(65536)  # BlockingIOError, SSL errors: as is
            position = 0
        chunk = data[position : position + size]
        self._position = position + len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes read but not yet taken (plus, for TLS, what the SSL layer holds)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._data) - self._position + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._out += data
        return len(data)

    def flush(self) -> bool:
        """Send what was collected, as much as the kernel takes now; True when all is out.

        A broken connection drops what is left: paho learns of it from the next read, and
        QoS 1 messages are sent again after the reconnect (the buffer keeps them until acked).
        """
        out = self._out
        if out:
            try:
                sent = self._sock.send(out)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError:
                out.clear()
                return True
            del out[:sent]
        return not out

    def unsent(self) -> int:
        return len(self._out)

    def close(self) -> None:
        """paho closes right after writing DISCONNECT: send what is collected first."""
        self.flush()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


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
