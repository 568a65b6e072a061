"""The transport: one MQTT session through paho-mqtt, driven from the asyncio event loop.

paho does the protocol (packets, QoS flows, keep-alive, resends after a reconnect). This module
connects and reconnects with a capped, jittered backoff, puts paho's socket on the loop through
paho's public external-loop callbacks, and tells a ``Listener`` what happened. It knows MQTT
and bytes, nothing of readings, config or commands: it imports paho and the gateway's leaf
modules only (``errors``, ``backoff``, and ``reasons`` beside it).

paho's blocking part, the TCP connect and TLS handshake, runs in a short-lived thread of its
own; everything else runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.backoff import Backoff
from gateway.errors import (
    BrokerError,
    MessageTooLarge,
    NotConnected,
    Refused,
    TransportFailed,
)
from gateway.mqtt import reasons

log = structlog.get_logger("gateway.mqtt")

CONNECT_TIMEOUT = 10.0  # paho's, for the TCP connect and for the TLS handshake
CONNACK_TIMEOUT = 10.0  # then for the broker's answer to CONNECT
MISC_EVERY = 1.0  # paho's loop_misc: keep-alive pings and their timeout
HELD = 10.0  # a connection that lasted this long resets the reconnect backoff
MAX_PACKET = 268_435_460  # MQTT's own limit: 256 MiB of remaining length and its header


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: published by the broker when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Server(NamedTuple):
    """One broker's address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the transport needs, in MQTT's own terms."""

    # The brokers, tried in turn: the session is on one at a time, and moves to the next
    # when it is lost (the members of a cluster, say).
    servers: tuple[Server, ...]
    client_id: str
    version: Literal[3, 5] = 3  # 3 = MQTT 3.1.1
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    ca_file: str | None = None  # the CA the TLS context trusts, named in errors
    client_certificate: bool = False  # the TLS context presents one
    persistent: bool = True  # keep the session (and what is in flight) across reconnects
    session_expiry: int = 86_400  # MQTT 5, with ``persistent``
    will: Will | None = None
    # A will made anew for every CONNECT (Sparkplug's NDEATH carries a number that changes with
    # each connection); instead of ``will``.
    will_provider: Callable[[], Will] | None = None
    content_type: str | None = None  # MQTT 5: on every message
    message_expiry: int | None = None  # MQTT 5: on messages published with ``expires``
    max_incoming: int | None = None  # MQTT 5: the broker sends no larger packet (bytes)
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
    """What the transport reports, on the event loop, as it happens."""

    def connected(self, broker: Broker) -> None: ...

    def disconnected(self, reason: str, by_broker: bool) -> None:
        """The connection is gone; nothing can be published until ``connected``.
        ``by_broker``: the broker ended it (not a keep-alive timeout, not us)."""

    def acknowledged(self, mid: int) -> None:
        """The broker has message ``mid`` (PUBACK, PUBCOMP), or at QoS 0 it was written."""

    def refused(self, mid: int, reason: str) -> None:
        """The broker will never take message ``mid`` (an MQTT 5 reason code)."""

    def lost(self, mid: int) -> None:
        """Message ``mid`` may be gone with the broker's session, or was never written:
        send it again."""

    def received(self, message: Message) -> None: ...


class MqttClient:
    """One MQTT session, reconnected until the ``async with`` block ends."""

    def __init__(self, settings: Settings, listener: Listener, start: Server | None = None) -> None:
        """``start``: the broker to try first, when the list has it (the one a session that
        this one replaces was on); otherwise the list's first."""
        self.settings = settings
        self.listener = listener
        self.broker: Broker | None = None  # set while connected
        self.maximum_packet_size = MAX_PACKET
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._v5 = settings.version == 5
        self._will = settings.will
        # The broker of the session a connection may resume: the persistent session is resumed
        # on that broker only, a new one starts on any other (and after ``reset_session``).
        self._session_on: Server | None = None
        self._client = self._new_client()
        self._tasks: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, bool, Properties | None]] | None = None
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._connecting: asyncio.Future[None] | None = None  # the connect thread's end
        self._misc: asyncio.TimerHandle | None = None
        self._socket: int | None = None  # the file descriptor of paho's socket, while watched
        self._write_soon = False  # a loop_write is scheduled for the end of this loop turn
        self._write_waits = False  # the socket took not all: waiting until it is writable
        self._qos0: set[int] = set()  # QoS 0 messages handed to paho, not yet written
        self._qos2: set[int] = set()  # QoS 2 messages in flight
        self._doubtful: set[int] = set()  # ... that the broker may have lost with its session
        self._round_trips: dict[int, asyncio.Future[None]] = {}  # UNSUBSCRIBE id -> its answer
        # The broker connected to, or tried next (by its place in the list).
        self._at = settings.servers.index(start) if start in settings.servers else 0
        self.server = settings.servers[self._at]
        self._last_errors: dict[Server, str] = {}  # each broker's last failure, said once
        self._stopping = False
        self._plain = self._properties(expiring=False)
        self._expiring = self._properties(expiring=True)
        self._shared_sizes = {id(p): _properties_size(p) for p in (self._plain, self._expiring)}
        self._log = self._logger()

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
        sock = self._client.socket()
        if sock is not None:  # still connecting: nobody will use it any more
            sock.close()
        if self._tasks is not None:
            await self._tasks.__aexit__(*exc_info)
        self._log.info("broker disconnected")

    @property
    def connected(self) -> bool:
        return self.broker is not None

    @property
    def url(self) -> str:
        """The broker connected to, or tried next, as a URL."""
        return f"{'mqtts' if self.settings.tls is not None else 'mqtt'}://{self.server}"

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        expires: bool = False,
        correlation: bytes | None = None,
    ) -> int:
        """Hand a message to paho; its id, reported to the listener when done. ``expires``:
        with the settings' ``message_expiry``. Raises ``NotConnected``, ``MessageTooLarge``
        (over the broker's maximum packet size: never deliverable), ``BrokerError`` (a topic
        that is not valid)."""
        client = self._client
        if self.broker is None or not client.is_connected():
            raise NotConnected("not connected")
        properties = self._expiring if expires else self._plain
        if correlation is not None and self._v5:
            properties = self._properties(expiring=expires)
            if properties is not None:
                properties.CorrelationData = correlation
        limit = self.maximum_packet_size
        if limit < MAX_PACKET:  # the broker announced a limit: count the packet's bytes
            shared = self._shared_sizes.get(id(properties))
            size = _properties_size(properties) if shared is None else shared
            wire = len(topic.encode()) + len(payload) + size
            wire += 4 if qos else 2
            if wire + _length_size(wire) + 1 > limit:
                raise MessageTooLarge(f"over the broker's maximum packet size ({limit} B)")
        try:
            info = client.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # a topic with wildcards, or too long
            raise BrokerError(f"cannot publish on {topic!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"not sent: {paho.error_string(info.rc)}")
        if qos == 0:
            self._qos0.add(info.mid)
        elif qos == 2:
            self._qos2.add(info.mid)
        return info.mid

    def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        """Subscribe (MQTT 5: with Retain As Published, so a retained command is seen as one)."""
        if self._v5:
            options = SubscribeOptions(qos=qos, retainAsPublished=True)
            self._client.subscribe(topic_filter, options=options)
        else:
            self._client.subscribe(topic_filter, qos)

    def round_trip(self, topic_filter: str) -> asyncio.Future[None]:
        """Done when the broker answers an UNSUBSCRIBE of ``topic_filter`` (a filter nobody
        subscribes: it changes nothing). A broker reads a connection's packets in order, so
        by then it has read every message written before: what confirms QoS 0 messages.
        Cancelled when the connection ends first; raises ``NotConnected``."""
        if self.broker is None or not self._client.is_connected():
            raise NotConnected("not connected")
        code, mid = self._client.unsubscribe(topic_filter)
        if code != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"not sent: {paho.error_string(code)}")
        answer = self._round_trips[mid] = self._loop.create_future()
        return answer

    def drop(self, reason: str) -> None:
        """End the connection without DISCONNECT, so the broker publishes the will; it
        reconnects as after any loss, to the next broker when there are several (a Sparkplug
        edge node leaves a server whose primary host went offline)."""
        self._close_socket()
        sock = self._client.socket()
        if sock is not None:
            sock.close()  # the broker sees the connection end now, and publishes the will
        self._went_down(reason)

    def reset_session(self) -> None:
        """Forget every message in flight; the next connection starts a new session (the
        broker forgets its copy too). The listener hands again what it still wants sent."""
        self._session_on = None
        self._qos0.clear()
        self._qos2.clear()
        self._doubtful.clear()
        old, self._client = self._client, self._new_client()
        self._close_socket()
        # Without loop callbacks, paho writes a DISCONNECT at once and closes its socket.
        old.on_disconnect = old.on_socket_close = None
        old.on_socket_register_write = old.on_socket_unregister_write = None
        if old.is_connected():
            old.disconnect()
        self._went_down("the session was reset")

    # -- connecting --------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        """Connect, and again after every loss: to the next broker of the list, after the
        backoff's delay; when every broker failed in a row, the delay grows."""
        backoff = Backoff(initial=1.0, cap=30.0)
        failed = 0  # attempts failed in a row
        while not self._stopping:
            try:
                broker = await self._connect()
            except (BrokerError, OSError, TimeoutError) as exc:
                self._failed(exc)
                self._close_socket()
                if isinstance(exc, Refused) and exc.retry_now:
                    continue
                failed += 1
                self._next()
                if failed % len(self.settings.servers) == 0:
                    await asyncio.sleep(backoff.next_delay())
                continue
            failed = 0
            since = time.monotonic()
            self._up(broker)
            reason = await asyncio.shield(self._closed)  # TransportFailed ends the gateway
            if self._stopping:
                return
            self._last_errors[self.server] = reason
            left = self.server
            if self._next():
                self._log.bind(broker=str(left)).warning(
                    "broker connection lost: moving to the next broker",
                    reason=reason,
                    next=str(self.server),
                )
            else:
                self._log.warning("broker connection lost", reason=reason)
            # A broker that accepts and then drops the connection (a message it cannot take)
            # must not be reconnected to once a second forever.
            if time.monotonic() - since >= HELD:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    def _next(self) -> bool:
        """Make the next broker of the list the one to connect to; False when there is one."""
        servers = self.settings.servers
        if len(servers) == 1:
            return False
        self._at = (self._at + 1) % len(servers)
        self.server = servers[self._at]
        self._log = self._logger()
        return True

    def _logger(self) -> Any:
        bound = log.bind(broker=str(self.server), client_id=self.settings.client_id)
        return bound if self.settings.name == "data" else bound.bind(session=self.settings.name)

    async def _connect(self) -> Broker:
        settings, client, server = self.settings, self._client, self.server
        self._closed = self._loop.create_future()
        self._connack = connack = self._loop.create_future()
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if settings.persistent:
                properties.SessionExpiryInterval = settings.session_expiry
            if settings.max_incoming is not None:
                properties.MaximumPacketSize = settings.max_incoming
        # A session from another broker (or an earlier run) is not resumed: its message ids
        # could collide with this session's, and what it had in flight is sent again anyway.
        clean = self._session_on != server or not settings.persistent
        will = settings.will_provider() if settings.will_provider is not None else self._will
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain, self._plain)
        else:
            client.will_clear()
        try:
            if not self._v5 and clean and settings.persistent:
                # MQTT 3.1.1 has no "clean start, then keep": a first connection that cleans
                # the broker's copy of an old session, then the persistent one. Message ids of
                # an earlier run then cannot collide with this one's.
                await self._clean_v3_session()
            await self._in_thread(
                lambda: client.connect(
                    server.host,
                    server.port,
                    settings.keepalive,
                    clean_start=clean if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                )
            )
            async with asyncio.timeout(CONNACK_TIMEOUT):
                code, session_present, found = await asyncio.shield(connack)
        except _Unanswered:
            raise reasons.unanswered(settings, will) from None
        except TimeoutError:
            raise reasons.silent(self._v5, CONNACK_TIMEOUT) from None
        if code.is_failure:
            refused = reasons.refused_connect(code, self._v5)
            # A will made for each connection (Sparkplug's NDEATH) must stay as it is: its
            # refusal is waited out like any other.
            plainer = None
            if self._v5 and settings.will_provider is None:
                plainer = reasons.plainer_will(code, will)
            if plainer is not None:
                self._log.warning(
                    "the broker refuses the last will: a plainer one is sent",
                    reason=code.getName(),
                    retain=plainer.retain,
                    qos=plainer.qos,
                )
                self._will = plainer
                raise Refused(refused.reason, refused.hint, retry_now=True)
            raise refused
        self._session_on = server
        return _broker(session_present, found)

    async def _in_thread(self, connect: Callable[[], object]) -> None:
        """paho's blocking connect in a daemon thread: the loop goes on meanwhile, and a stop
        never waits for a TCP timeout. One at a time: an attempt abandoned by a timeout is
        waited for before the next."""
        if self._connecting is not None:
            await asyncio.wait({self._connecting})  # its outcome no longer matters
        self._connecting = done = self._loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
                done.exception()  # retrieved: an abandoned attempt's error is not news

        def run() -> None:
            error: BaseException | None = None
            try:
                connect()
            except OSError as exc:  # refused, unreachable, TLS (a certificate error is also a
                error = exc  # ValueError: this comes first)
            except ValueError as exc:  # paho: a host or port it cannot use
                error = BrokerError(f"cannot connect: {exc}")
            except Exception as exc:  # paho failing: the loop sorts it out
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=run, name="mqtt-connect", daemon=True).start()
        await asyncio.shield(done)
        self._connecting = None  # only when it ended here: a cancelled wait leaves it pending

    async def _clean_v3_session(self) -> None:
        """Connect and disconnect with clean session set: the broker forgets the old session.
        A refusal or a close is left for the real connection to report."""
        settings, server = self.settings, self.server
        cleaner = paho.Client(
            CallbackAPIVersion.VERSION2,
            settings.client_id,
            clean_session=True,
            reconnect_on_failure=False,
        )
        self._configure(cleaner)
        answered: asyncio.Future[bool] = self._loop.create_future()

        def settle(ok: bool) -> None:
            if not answered.done():
                answered.set_result(ok)

        cleaner.on_connect = lambda _c, _u, _f, code, _p: settle(not code.is_failure)
        cleaner.on_disconnect = lambda *_: settle(False)
        # No loop callbacks yet: paho writes the CONNECT itself, in the connecting thread.
        await self._in_thread(lambda: cleaner.connect(server.host, server.port, settings.keepalive))
        sock = cleaner.socket()
        if sock is None:
            return
        fd = sock.fileno()
        watched = [True]

        def unwatch(*_: object) -> None:  # paho calls it before it closes the socket
            if watched[0]:
                watched[0] = False
                self._loop.remove_reader(fd)

        cleaner.on_socket_close = unwatch
        self._loop.add_reader(fd, self._guarded(cleaner.loop_read))
        try:
            async with asyncio.timeout(CONNACK_TIMEOUT):
                if await answered:
                    cleaner.disconnect()  # written at once, then paho closes the socket
        finally:
            unwatch()
            sock.close()

    def _up(self, broker: Broker) -> None:
        self.broker = broker
        self.maximum_packet_size = broker.maximum_packet_size or MAX_PACKET
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
        self._last_errors.clear()  # the next outage is said again, broker by broker
        # A broker that lost our session completes a resent PUBREL without the message it
        # never got (paho resends a released QoS 2 message as a bare PUBREL): those are sent
        # again when they complete. At least once, where the broker forgot.
        self._doubtful = set() if broker.session_present else set(self._qos2)
        self._misc = self._loop.call_later(MISC_EVERY, self._on_misc)
        self.listener.connected(broker)

    def _went_down(self, reason: str, by_broker: bool = False) -> None:
        """The connection ended (paho said so, or we reset it): tell the listener at once."""
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(_Unanswered(reason))
            connack.exception()  # retrieved: an attempt that timed out never awaits it
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._close_socket()
        # QoS 0 messages paho had not written yet are dropped by it on reconnect.
        unwritten, self._qos0 = self._qos0, set()
        round_trips, self._round_trips = self._round_trips, {}
        for answer in round_trips.values():
            answer.cancel()
        was_up, self.broker = self.broker is not None, None
        if not self._closed.done():
            self._closed.set_result(reason)
        if was_up:
            self.listener.disconnected(reason, by_broker)
            for mid in sorted(unwritten, reverse=True):  # given back newest first
                self.listener.lost(mid)

    def _failed(self, exc: BaseException) -> None:
        """A connection attempt failed: say why, once per broker and distinct reason."""
        last = self._last_errors.get(self.server)
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            if reason != last:
                ca = self.settings.ca_file or "the system's CAs"
                self._log.error(
                    "broker certificate refused",
                    reason=reason,
                    hint=f"the broker's certificate must be signed by {ca} and name "
                    f"{self.server.host!r}",
                )
        elif isinstance(exc, ssl.SSLError):
            reason = exc.reason or str(exc)
            if reason != last:
                hint = None
                if not self.settings.client_certificate:
                    hint = "a broker that requires a client certificate refuses the handshake: "
                    hint += "set mqtt.cert and mqtt.key"
                self._log.error("TLS handshake with the broker failed", reason=reason, hint=hint)
        elif isinstance(exc, Refused):
            reason = exc.reason
            if reason != last and not exc.retry_now:
                level = self._log.error if exc.hint else self._log.warning
                level("broker refused connection", reason=reason, hint=exc.hint)
        else:
            reason = str(exc) or ("timeout" if isinstance(exc, TimeoutError) else repr(exc))
            if reason != last:
                self._log.warning("broker unreachable", reason=reason)
        self._last_errors[self.server] = reason

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
        client.on_unsubscribe = self._on_unsubscribe
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

    def _guarded(self, step: Callable[[], object]) -> Callable[[], None]:
        """A paho step run by the loop; if it raises (paho, or a listener through it), the
        transport fails for good instead of leaving paho half-updated and the gateway waiting."""

        def run() -> None:
            try:
                step()
            except Exception as exc:
                failure = TransportFailed(f"the MQTT transport failed: {exc!r}")
                failure.__cause__ = exc
                for waiting in (self._connack, self._closed):
                    if waiting is not None and not waiting.done():
                        waiting.set_exception(failure)
                self._close_socket()

        return run

    def _on_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Nagle would hold a packet written while the previous one is unacknowledged for the
        # peer's delayed ACK (~40 ms on Linux).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()

        def watch() -> None:
            if client is self._client and not self._stopping:
                self._close_socket()
                self._socket = fd
                self._loop.add_reader(fd, self._guarded(client.loop_read))

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
                self._loop.call_soon(self._guarded(self._write))

        self._on_loop(write_soon)

    def _write(self) -> None:
        self._write_soon = False
        fd, client = self._socket, self._client
        if fd is None:
            return
        client.loop_write()
        if fd == self._socket and client.want_write() and not self._write_waits:
            self._write_waits = True
            self._loop.add_writer(fd, self._guarded(client.loop_write))

    def _on_unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unwatch() -> None:
            if client is self._client and fd == self._socket and self._write_waits:
                self._write_waits = False
                self._loop.remove_writer(fd)

        self._on_loop(unwatch)

    def _on_misc(self) -> None:
        self._misc = None
        self._guarded(self._client.loop_misc)()
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
        client: paho.Client,
        _userdata: Any,
        flags: paho.DisconnectFlags,
        code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        reason, by_broker = reasons.disconnected(code, flags.is_disconnect_packet_from_server)
        self._on_loop(
            lambda: self._went_down(reason, by_broker) if client is self._client else None
        )

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        listener = self.listener
        if self._qos0 and mid in self._qos0:
            self._qos0.discard(mid)
        elif self._qos2 and mid in self._qos2:
            self._qos2.discard(mid)
            doubtful = mid in self._doubtful
            self._doubtful.discard(mid)
            if doubtful or code.value == reasons.PACKET_ID_NOT_FOUND:
                listener.lost(mid)
                return
        if code.is_failure:
            listener.refused(mid, code.getName())
        else:
            listener.acknowledged(mid)

    def _on_unsubscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        _codes: Any,
        _properties: Properties | None,
    ) -> None:
        answer = self._round_trips.pop(mid, None)
        if answer is not None and not answer.done():
            answer.set_result(None)

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
            return  # no topic of ours is anything but UTF-8
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


def _properties_size(properties: Properties | None) -> int:
    """Bytes the properties take in a PUBLISH (with their length); 0 on MQTT 3.1.1."""
    return 0 if properties is None else len(properties.pack())  # type: ignore[no-untyped-call]


def _length_size(length: int) -> int:
    """Bytes of MQTT's variable-length encoding of ``length``."""
    return 1 if length < 128 else 2 if length < 16_384 else 3 if length < 2_097_152 else 4
