"""The commands' own MQTT session: subscribe to the command topics, hand each message to the
router, publish its answer.

A clean session of its own (never resumed, MQTT 5 session expiry 0), apart from the readings'
persistent one: a broker keeps nothing for a session that ended, so a command published while
the gateway was away is never executed late, whatever the broker's queueing settings. The
subscription is QoS 0 and made on every connect; answers go out at QoS 1, not buffered (a late
answer is useless: a caller that got none reads its timeout as "unknown"). At most
``MAX_ANSWERS`` answers wait for the broker's acknowledgement; beyond, an answer is dropped and
counted: a broker that does not take them would otherwise fill the gateway's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.commands.request import Incoming
from gateway.errors import BrokerError
from gateway.logging import Tally
from gateway.mqtt.client import Broker, Message, MqttClient, Settings

log = structlog.get_logger("gateway.commands")

# MQTT 5 user properties that name who sent a command (for the audit log).
CLIENT_PROPERTIES = ("client_id", "client", "user", "source")

MAX_ANSWERS = 100  # answers sent and not yet acknowledged


class CommandChannel:
    """A ``Listener`` of its own transport; ``run`` until cancelled."""

    def __init__(self, settings: Settings, subscription: str) -> None:
        self.settings = settings
        self.subscription = subscription
        self._client: MqttClient | None = None
        self._handle: Callable[[Incoming], None] | None = None
        self._unacknowledged: set[int] = set()
        self.answers_dropped = Tally(
            log, "command answers dropped: the broker does not acknowledge them", limit=MAX_ANSWERS
        )

    async def run(self, handle: Callable[[Incoming], None]) -> None:
        """Receive commands for ``handle`` (on the event loop) until cancelled."""
        self._handle = handle
        try:
            async with MqttClient(self.settings, self) as client:
                self._client = client
                await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self.answers_dropped.close()

    def answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """A command's result; nothing when disconnected."""
        client = self._client
        if client is None or not client.connected:
            return
        if len(self._unacknowledged) >= MAX_ANSWERS:
            self.answers_dropped.add()
            return
        try:
            self._unacknowledged.add(client.publish(topic, payload, 1, correlation=correlation))
        except BrokerError as exc:  # a response topic comes from anyone: it may be invalid
            log.warning("command answer not published", topic=topic, reason=str(exc))

    # -- what the transport reports ----------------------------------------------------------

    def connected(self, broker: Broker) -> None:
        if self._client is not None:
            self._client.subscribe(self.subscription, 0)

    def disconnected(self, reason: str, by_broker: bool) -> None:
        pass  # paho sends unacknowledged answers again after a reconnect: they still count

    def acknowledged(self, mid: int) -> None:
        self._unacknowledged.discard(mid)

    def refused(self, mid: int, reason: str) -> None:
        self._unacknowledged.discard(mid)

    def lost(self, mid: int) -> None:
        self._unacknowledged.discard(mid)  # not sent again: a late answer is useless

    def received(self, message: Message) -> None:
        if self._handle is None:
            return
        user = dict(message.user_properties)
        client = next((user[k] for k in CLIENT_PROPERTIES if k in user), None)
        self._handle(
            Incoming(
                message.topic,
                message.payload,
                message.retain,
                message.response_topic,
                message.correlation,
                client,
            )
        )
