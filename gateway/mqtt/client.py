"""The transport: one MQTT session through paho-mqtt, driven from the asyncio event loop.

paho does the protocol (packets, QoS flows, keep-alive, resends after a reconnect); this module
connects, reconnects with a capped, jittered backoff, registers paho's socket with the loop
through paho's public external-loop callbacks, and tells a ``Listener`` what happened. It knows
MQTT and bytes, nothing of readings, config or commands; it imports only paho and the gateway's
leaf utilities (``errors``, ``backoff``).

paho's blocking part (TCP connect and TLS handshake) runs in the loop's default executor, the one
thread of this module; everything else runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.backoff import Backoff
from gateway.errors import BrokerError, MessageTooLarge

log = structlog.get_logger("gateway.mqtt")

CONNECT_TIMEOUT = 10.0  # TCP and TLS
CONNACK_TIMEOUT = 10.0  # then the broker's answer to CONNECT
MISC_EVERY = 1.0  # paho's loop_misc: keep-alive pings and their timeout
HELD = 10.0  # a connection that lasted this long resets the reconnect backoff
MAX_PACKET = 268_435_460  # MQTT's own limit: 256 MiB of remaining length and its header
# MQTT 5 reason codes the gateway acts on (by number: paho's names are text).
PACKET_ID_NOT_FOUND = 0x92
KEEP_ALIVE_TIMEOUT = 0x8D
UNSUPPORTED_VERSION = (0x01, 0x84)  # 3.1.1's "unacceptable protocol version", and MQTT 5's
RETAIN_NOT_SUPPORTED = 0x9A
QOS_NOT_SUPPORTED = 0x9B
REFUSED_LOGIN = (0x04, 0x05, 0x86, 0x87)  # bad user name or password, not authorized


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: published by the broker when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the transport needs, in MQTT's own terms."""

    host: str
    port: int
    client_id: str
    version: int = 3  # 3 = MQTT 3.1.1, or 5
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    ca_file: str | None = None  # the CA the TLS context trusts, named in errors
    client_certificate: bool = False  # the TLS context presents one
    persistent: bool = True  # keep the session (and what is in flight) across reconnects
    session_expiry: int = 86_400  # MQTT 5, with ``persistent``
    will: Will | None = None
    content_type: str | None = None  # MQTT 5: on every message
    message_expiry: int | None = None  # MQTT 5: on messages published with ``expires``
    name: str = "data"  # in the logs: which of the gateway's sessions this is


@dataclass(frozen=True, slots=True)
class Broker:
    """What the broker said in its CONNACK (MQTT 5 limits; None where it set none)."""

    session_present: bool
    receive_maximum: int | None = None
    maximum_packet_size: int | None = None
    maximum_qos: int = 2
    retain_available: bool = True
    keepalive: int | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the broker, protocol-neutral from here on."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


class Listener(Protocol):
    """What the transport reports, on the event loop."""

    def connected(self, broker: Broker) -> None: ...

    def disconnected(self, reason: str) -> None: ...

    def acknowledged(self, mid: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2): the broker has message ``mid``."""

    def refused(self, mid: int, reason: str | None) -> None:
        """The broker will not take message ``mid`` (MQTT 5 reason), or (``None``) it lost
        it with its session: send it again."""

    def received(self, message: Message) -> None: ...


class MqttClient:
    """One MQTT session, reconnected until the ``async with`` block ends."""

    def __init__(self, settings: Settings, listener: Listener) -> None:
        self.settings = settings
        self.listener = listener
        self.broker: Broker | None = None  # set while connected
        self.maximum_packet_size = MAX_PACKET
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._v5 = settings.version == 5
        self._will = settings.will
        self._fresh = True  # the next connection starts a new session (see ``reset_session``)
        self._client = self._new_client()
        self._tasks: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, bool, Properties | None]] | None = None
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._misc: asyncio.TimerHandle | None = None
        self._socket: int | None = None  # the file descriptor of paho's socket, while watched
        self._write_soon = False  # a loop_write is scheduled for the end of this loop turn
        self._write_waits = False  # the socket took not all: waiting until it is writable
        self._drained = asyncio.Event()
        self._drained.set()
        self._qos2: set[int] = set()  # QoS 2 messages in flight
        self._doubtful: set[int] = set()  # ... that the broker may have lost with its session
        self._last_error: str | None = None
        self._stopping = False
        props = self._properties
        self._plain = props(expiring=False)
        self._expiring = props(expiring=True)
        self._sizes = {id(p): _properties_size(p) for p in (self._plain, self._expiring)}
        self._log = log.bind(
            broker=f"{settings.host}:{settings.port}", client_id=settings.client_id
        )
        if settings.name != "data":
            self._log = self._log.bind(session=settings.name)

    # -- the boundary ------------------------------------------------------------------------

    async def __aenter__(self) -> MqttClient:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._task = self._tasks.create_task(self._keep_connected(), name="mqtt-client")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Send DISCONNECT when connected (the will is not published), close, stop."""
        self._stopping = True
        if self.connected:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._closed)
        if self._task is not None:
            self._task.cancel()
        self._close_socket()
        if self._tasks is not None:
            await self._tasks.__aexit__(*exc_info)
        self._log.info("broker disconnected")

    @property
    def connected(self) -> bool:
        return self.broker is not None

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        expires: bool = False,
        correlation: bytes | None = None,
    ) -> int:
        """Hand a message to paho: its id (0 at QoS 0, done once written). ``expires``: with
        the settings' ``message_expiry``. ``MessageTooLarge``: over the broker's maximum packet
        size, never deliverable. ``BrokerError``: not connected, or an invalid topic."""
        if self.broker is None:
            raise BrokerError("not connected")
        properties = self._expiring if expires else self._plain
        if correlation is not None and self._v5:
            properties = self._properties(expiring=expires)
            if properties is not None:
                properties.CorrelationData = correlation
            size = _properties_size(properties)
        else:
            size = self._sizes.get(id(properties), 0)
        wire = len(topic.encode()) + len(payload) + size + (4 if qos else 2)
        if wire + _length_size(wire) + 1 > self.maximum_packet_size:
            raise MessageTooLarge(
                f"over the broker's maximum packet size ({self.maximum_packet_size} B)"
            )
        try:
            info = self._client.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # a topic with wildcards, or not UTF-8
            raise BrokerError(f"cannot publish on {topic!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerError(f"not sent: {paho.error_string(info.rc)}")
        if qos == 2:
            self._qos2.add(info.mid)
        self._drained.clear()
        return info.mid if qos else 0

    def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        """Subscribe (MQTT 5: with Retain As Published, so a retained command is seen as one)."""
        if self._v5:
            options = SubscribeOptions(qos=qos, retainAsPublished=True)
            self._client.subscribe(topic_filter, options=options)
        else:
            self._client.subscribe(topic_filter, qos)

    async def drained(self) -> None:
        """Wait until paho has written everything it was handed (or 1 s, or a disconnect)."""
        if not self._drained.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._drained.wait()

    def reset_session(self) -> None:
        """Drop the connection and every message in flight; the next connection starts a new
        session. The listener hands again what it still wants delivered."""
        self._fresh = True
        self._qos2.clear()
        self._doubtful.clear()
        old, self._client = self._client, self._new_client()
        self._close_socket()
        # Without loop callbacks paho writes the DISCONNECT at once and closes its socket.
        old.on_disconnect = old.on_socket_close = None
        old.on_socket_register_write = old.on_socket_unregister_write = None
        old.disconnect()
        if not self._closed.done():
            self._closed.set_result("the session was reset")

    # -- connecting --------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        backoff = Backoff(initial=1.0, cap=30.0)
        while not self._stopping:
            try:
                broker = await self._connect()
            except (BrokerError, OSError, TimeoutError, ValueError) as exc:
                self._failed(exc)
                self._close_socket()
                if not (isinstance(exc, _Refused) and exc.retry_now):
                    await asyncio.sleep(backoff.next_delay())
                continue
            since = time.monotonic()
            self._up(broker)
            reason = await asyncio.shield(self._closed)
            self._down(reason)
            if self._stopping:
                return
            # A broker that accepts and then drops the connection (a message it cannot take)
            # must not be reconnected to once a second forever.
            if time.monotonic() - since >= HELD:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _connect(self) -> Broker:
        settings, client = self.settings, self._client
        self._closed = self._loop.create_future()
        self._connack = self._loop.create_future()
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if settings.persistent:
                properties.SessionExpiryInterval = settings.session_expiry
        clean: bool = self._fresh or not settings.persistent
        if self._will is not None:
            will = self._will
            client.will_set(will.topic, will.payload, will.qos, will.retain, self._plain)
        else:
            client.will_clear()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if not self._v5 and clean and settings.persistent:
                # MQTT 3.1.1 has no "clean start, then keep": a first connection that cleans
                # the broker's copy of an old session, then the persistent one.
                await self._clean_v3_session()
            await self._loop.run_in_executor(
                None,
                lambda: client.connect(
                    settings.host,
                    settings.port,
                    settings.keepalive,
                    clean_start=clean if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                ),
            )
        try:
            async with asyncio.timeout(CONNACK_TIMEOUT):
                code, session_present, found = await asyncio.shield(self._connack)
        except _Unanswered:
            raise self._unanswered() from None
        except TimeoutError:
            raise _Refused(
                f"the broker did not answer CONNECT within {CONNACK_TIMEOUT:g} s",
                "a broker that does not speak MQTT 5 may stay silent like this: try mqtt.version: 3"
                if self._v5
                else None,
            ) from None
        if code.is_failure:
            refused = _connack_reason(code, self._v5)
            refused.retry_now = self._adjust_will(code)
            raise refused
        self._fresh = False
        broker = _broker(session_present, found)
        now, configured = self._will, self.settings.will
        if not self._v5 and now is not None and configured is not None and now != configured:
            # MQTT 3.1.1 announces nothing: what the will had to give up, states give up too.
            qos = 0 if configured.qos and not now.qos else 2
            broker = replace(broker, retain_available=now.retain, maximum_qos=qos)
        return broker

    def _unanswered(self) -> _Refused:
        """The broker closed the connection without a CONNACK: say what does that."""
        settings, will = self.settings, self._will
        if settings.tls is not None and not settings.client_certificate:
            return _Refused(
                "the broker closed the TLS connection without answering",
                "a broker that requires a client certificate does this: set mqtt.cert and mqtt.key",
            )
        if not self._v5 and will is not None and (will.retain or will.qos):
            # An MQTT 3.1.1 broker that keeps no retained messages, or takes no QoS 1,
            # closes the connection of a client whose will asks for them.
            plain = Will(will.topic, will.payload, will.qos, retain=False)
            if not will.retain:
                plain = Will(will.topic, will.payload, 0, retain=False)
            self._log.warning(
                "the broker closed the connection without answering: trying a plainer will",
                retain=plain.retain,
                qos=plain.qos,
                hint="set mqtt.retain: false (or mqtt.qos: 0) for a broker that takes no "
                "retained messages (or no QoS 1)",
            )
            self._will = plain
            refused = _Refused("the broker closed the connection without answering")
            refused.retry_now = True
            return refused
        return _Refused(
            "the broker closed the connection without answering",
            "the broker's log says why (a client id, protocol version or will it refuses)",
        )

    async def _clean_v3_session(self) -> None:
        """Connect and disconnect with clean session set: the broker forgets the old session."""
        settings = self.settings
        cleaner = paho.Client(CallbackAPIVersion.VERSION2, settings.client_id, clean_session=True)
        self._configure(cleaner)
        done: asyncio.Future[bool] = self._loop.create_future()

        def answered(c: paho.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
            if not done.done():
                done.set_result(not code.is_failure)

        cleaner.on_connect = answered
        await self._loop.run_in_executor(
            None, lambda: cleaner.connect(settings.host, settings.port, settings.keepalive)
        )
        sock = cleaner.socket()
        if sock is None:
            return
        fd = sock.fileno()
        self._loop.add_reader(fd, cleaner.loop_read)
        try:
            if await done:
                cleaner.disconnect()  # written at once: paho has no loop callbacks here
            # A refusal is the same as the real connection's: let that one say why.
        finally:
            self._loop.remove_reader(fd)
            sock.close()

    def _adjust_will(self, code: ReasonCode) -> bool:
        """A broker that refuses the will's retain or QoS: try again without (one warning)."""
        will = self._will
        if will is None or not self._v5:
            return False
        if code.value == RETAIN_NOT_SUPPORTED and will.retain:
            self._log.warning("the broker keeps no retained messages: the will is sent plain")
            self._will = Will(will.topic, will.payload, will.qos, retain=False)
            return True
        if code.value == QOS_NOT_SUPPORTED and will.qos:
            self._log.warning("the broker refuses the will's QoS: the will is sent at QoS 0")
            self._will = Will(will.topic, will.payload, 0, will.retain)
            return True
        return False

    def _up(self, broker: Broker) -> None:
        self.broker = broker
        if broker.maximum_packet_size is not None:
            self.maximum_packet_size = broker.maximum_packet_size
        limits = {
            name: value
            for name, value in (
                ("receive_maximum", broker.receive_maximum),
                ("maximum_packet_size", broker.maximum_packet_size),
                ("maximum_qos", broker.maximum_qos if broker.maximum_qos < 2 else None),
            )
            if value is not None
        }
        self._log.info(
            "broker connected",
            keepalive=broker.keepalive or self.settings.keepalive,
            session_present=broker.session_present,
            **limits,
        )
        self._last_error = None
        if not broker.session_present and not self._v5:
            # The broker lost our session: paho resends a released QoS 2 message as a bare
            # PUBREL, which completes without the message. Each of those is sent again.
            self._doubtful = set(self._qos2)
        self._misc = self._loop.call_later(MISC_EVERY, self._on_misc)
        self.listener.connected(broker)

    def _down(self, reason: str) -> None:
        self.broker = None
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._close_socket()
        self._drained.set()
        if not self._stopping:
            self._log.warning("broker connection lost", reason=reason)
            self._last_error = reason
        self.listener.disconnected(reason)

    def _failed(self, exc: BaseException) -> None:
        """A connection attempt failed: say why, once per distinct reason."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            if reason != self._last_error:
                ca = self.settings.ca_file or "the system's CAs"
                self._log.error(
                    "broker certificate refused",
                    reason=reason,
                    hint=f"the broker's certificate must be signed by {ca} and name "
                    f"{self.settings.host!r}",
                )
        elif isinstance(exc, ssl.SSLError):
            reason = exc.reason or str(exc)
            if reason != self._last_error:
                hint = None
                if not self.settings.client_certificate:
                    hint = "a broker that requires a client certificate refuses the handshake: "
                    hint += "set mqtt.cert and mqtt.key"
                self._log.error("TLS handshake with the broker failed", reason=reason, hint=hint)
        elif isinstance(exc, _Refused):
            reason = exc.reason
            if reason != self._last_error:
                level = self._log.error if exc.hint else self._log.warning
                level("broker refused connection", reason=reason, hint=exc.hint)
        else:
            reason = str(exc) or ("timeout" if isinstance(exc, TimeoutError) else repr(exc))
            if reason != self._last_error:
                self._log.warning("broker unreachable", reason=reason)
        self._last_error = reason

    # -- paho's client and its callbacks -----------------------------------------------------

    def _new_client(self) -> paho.Client:
        settings = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            settings.client_id,
            clean_session=None if self._v5 else not settings.persistent,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            reconnect_on_failure=False,
        )
        self._configure(client)
        # The forwarder keeps the window; paho's own limit only paces its resends.
        client.max_inflight_messages_set(65535)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _configure(self, client: paho.Client) -> None:
        settings = self.settings
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls)
            client.tls_insecure_set(not settings.tls.check_hostname)
        client.connect_timeout = CONNECT_TIMEOUT

    def _properties(self, expiring: bool) -> Properties | None:
        if not self._v5:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if self.settings.content_type:
            properties.ContentType = self.settings.content_type
        if expiring and self.settings.message_expiry is not None:
            properties.MessageExpiryInterval = self.settings.message_expiry
        return properties

    def _on_loop(self, call: Callable[[], None]) -> None:
        """paho calls some callbacks from the connecting thread: run them on the loop."""
        if threading.get_ident() == self._thread:
            call()
        else:
            self._loop.call_soon_threadsafe(call)

    def _on_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Nagle would hold a packet written while the previous one is unacknowledged for the
        # peer's delayed ACK (~40 ms on Linux).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()

        def watch() -> None:
            if client is self._client:
                self._close_socket()
                self._socket = fd
                self._loop.add_reader(fd, client.loop_read)

        self._on_loop(watch)

    def _on_socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unwatch() -> None:
            if client is self._client and fd == self._socket:
                self._close_socket()

        self._on_loop(unwatch)

    def _close_socket(self) -> None:
        fd, self._socket = self._socket, None
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
            self._write_waits = False

    def _on_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        # paho has something to send: write it at the end of this loop turn, everything handed
        # over meanwhile in one go; wait for the socket only when it takes no more.
        fd = sock.fileno()

        def write_soon() -> None:
            if client is self._client and fd == self._socket and not self._write_soon:
                self._write_soon = True
                self._loop.call_soon(self._write, fd)

        self._on_loop(write_soon)

    def _write(self, fd: int) -> None:
        self._write_soon = False
        if fd != self._socket:
            return
        client = self._client
        client.loop_write()
        if fd == self._socket and client.want_write() and not self._write_waits:
            self._write_waits = True
            self._loop.add_writer(fd, client.loop_write)

    def _on_unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unwatch() -> None:
            if client is self._client and fd == self._socket and self._write_waits:
                self._write_waits = False
                self._loop.remove_writer(fd)
            self._drained.set()

        self._on_loop(unwatch)

    def _on_misc(self) -> None:
        self._misc = None
        self._client.loop_misc()
        if self.broker is not None and self._socket is not None:
            self._misc = self._loop.call_later(MISC_EVERY, self._on_misc)

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_result((code, flags.session_present, properties))

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.DisconnectFlags,
        code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        reason = _disconnect_reason(code, flags.is_disconnect_packet_from_server)
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(_Unanswered(reason))
            connack.exception()  # retrieved: an attempt that timed out never awaits it
        if not self._closed.done():
            self._closed.set_result(reason)

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        code: ReasonCode,
        _properties: Properties,
    ) -> None:
        qos2 = self._qos2
        if qos2 and mid in qos2:
            qos2.discard(mid)
            doubtful = mid in self._doubtful
            self._doubtful.discard(mid)
            if doubtful or code.value == PACKET_ID_NOT_FOUND:
                self.listener.refused(mid, None)
                return
        if code.is_failure:
            self.listener.refused(mid, code.getName())
        else:
            self.listener.acknowledged(mid)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        found = message.properties
        response_topic = correlation = None
        user: tuple[tuple[str, str], ...] = ()
        if found is not None:
            response_topic = getattr(found, "ResponseTopic", None)
            correlation = getattr(found, "CorrelationData", None)
            user = tuple(getattr(found, "UserProperty", ()))
        try:
            topic = message.topic
        except UnicodeDecodeError:
            return  # paho's own check lets it through; no topic of ours is not UTF-8
        self.listener.received(
            Message(
                topic,
                bytes(message.payload),
                bool(message.retain),
                response_topic,
                correlation,
                user,
            )
        )


class _Unanswered(BrokerError):
    """The connection ended before the broker answered CONNECT."""


class _Refused(BrokerError):
    """The broker answered CONNECT with a refusal."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.retry_now = False  # the will was adjusted to what the broker takes


def _broker(session_present: bool, found: Properties | None) -> Broker:
    def get(name: str) -> Any:
        return getattr(found, name, None) if found is not None else None

    maximum_qos, retain = get("MaximumQoS"), get("RetainAvailable")
    return Broker(
        session_present,
        receive_maximum=get("ReceiveMaximum"),
        maximum_packet_size=get("MaximumPacketSize"),
        maximum_qos=2 if maximum_qos is None else int(maximum_qos),
        retain_available=retain is None or bool(retain),
        keepalive=get("ServerKeepAlive"),
    )


def _connack_reason(code: ReasonCode, v5: bool) -> _Refused:
    """A refused CONNECT, in words an operator can act on."""
    value = code.value
    if value in UNSUPPORTED_VERSION:
        other = "3.1.1 (mqtt.version: 3)" if v5 else "5 (mqtt.version: 5)"
        return _Refused(
            f"the broker does not speak MQTT {'5' if v5 else '3.1.1'}",
            f"try MQTT {other}, or a broker that speaks both",
        )
    if value in REFUSED_LOGIN:
        return _Refused("not authorized" if value in (0x05, 0x87) else "bad user name or password")
    return _Refused(code.getName().lower())


def _disconnect_reason(code: ReasonCode, from_broker: bool) -> str:
    if code.value == KEEP_ALIVE_TIMEOUT:
        return "no answer to a keep-alive ping"
    if from_broker:
        return f"the broker disconnected: {code.getName().lower()}"
    return "the connection was lost" if code.is_failure else "closed"


def _properties_size(properties: Properties | None) -> int:
    """Bytes the properties take in a PUBLISH (with their length); 0 on MQTT 3.1.1."""
    return 0 if properties is None else len(properties.pack())  # type: ignore[no-untyped-call]


def _length_size(length: int) -> int:
    """Bytes of MQTT's variable-length encoding of ``length``."""
    return 1 if length < 128 else 2 if length < 16_384 else 3 if length < 2_097_152 else 4
