"""paho-mqtt's network thread meets our event loop here, and only here.

paho runs its network loop in a thread of its own (``loop_start``); its callbacks are handed to
the asyncio loop with ``call_soon_threadsafe``. ``publish`` is called from the event loop; paho
guards its state with its own locks, so that direction is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config.schema import MqttSection

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
    ) -> None:
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
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls:
            client.tls_set_context(ssl.create_default_context())
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # NOTES: an in-flight window of 20-100 is fastest; a huge one halves QoS 1 throughput.
        client.max_inflight_messages_set(100)
        # Bound paho's own queue (a safety net: the publisher keeps to WINDOW): beyond it,
        # readings wait in our queue, where drops are counted.
        client.max_queued_messages_set(2 * WINDOW)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_connect_fail = self._paho_connect_fail
        self._client = client
        self._log = log.bind(broker=f"{config.host}:{config.port}", client_id=client_id)

    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, int(self.config.keepalive))
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

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Hand a message to paho; returns paho's rc (MQTT_ERR_SUCCESS, _NO_CONN, _QUEUE_SIZE)."""
        rc = self._client.publish(topic, payload, qos=qos, retain=retain).rc
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.sent += 1
        return rc

    async def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        # loop_stop joins paho's thread: do it off the event loop.
        await asyncio.to_thread(self._client.loop_stop)

    # -- paho thread side: hand everything over to the loop -----------------------------------

    def _paho_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._connected, reason.is_failure, str(reason))

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, str(reason))

    def _paho_connect_fail(self, _c: Any, _u: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, "connection failed")

    def _paho_publish(self, _c: Any, _u: Any, _mid: int, _r: Any, _p: Any) -> None:
        self.completed += 1
        # Waking the loop costs a syscall, a loop turn and a GIL hand-off: only once the window
        # has drained to the low-water mark the publisher asked for, not per acknowledgement.
        if self.wake_at is not None and self.sent - self.completed <= self.wake_at:
            self.wake_at = None
            self._loop.call_soon_threadsafe(self.room.set)

    # -- loop side ------------------------------------------------------------------------------

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
        if self._stopping:
            self._log.info("broker disconnected")
        elif self.connected.is_set():
            self._log.warning("broker connection lost", reason=reason)
        elif reason != self._last_error:
            self._log.warning("broker unreachable", reason=reason)
        self._last_error = reason
        self.connected.clear()
