"""The commands' own MQTT session: subscribe to the command topics, hand each message to the
router, publish its answer.

A clean session of its own (never resumed, MQTT 5 session expiry 0), apart from the readings'
persistent one: a broker keeps nothing for a session that ended, so a command published while
the gateway was away is never executed late, whatever the broker's queueing settings. The
subscription is QoS 0 and made on every connect; answers go out at QoS 1, not buffered (a late
answer is useless: a caller that got none reads its timeout as "unknown").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.commands.request import Incoming
from gateway.errors import BrokerError
from gateway.mqtt.client import Broker, Message, MqttClient, Settings

log = structlog.get_logger("gateway.commands")

# MQTT 5 user properties that name who sent a command (for the audit log).
CLIENT_PROPERTIES = ("client_id", "client", "user", "source")


class CommandChannel:
    """A ``Listener`` of its own transport; ``run`` until cancelled."""

    def __init__(self, settings: Settings, subscription: str) -> None:
        self.settings = settings
        self.subscription = subscription
        self._client: MqttClient | None = None
        self._handle: Callable[[Incoming], None] | None = None

    async def run(self, handle: Callable[[Incoming], None]) -> None:
        """Receive commands for ``handle`` (on the event loop) until cancelled."""
        self._handle = handle
        async with MqttClient(self.settings, self) as client:
            self._client = client
            await asyncio.get_running_loop().create_future()  # until cancelled

    def answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """A command's result; nothing when disconnected."""
        client = self._client
        if client is None or not client.connected:
            return
        try:
            client.publish(topic, payload, 1, correlation=correlation)
        except BrokerError as exc:  # a response topic comes from anyone: it may be invalid
            log.warning("command answer not published", topic=topic, reason=str(exc))

    # -- what the transport reports ----------------------------------------------------------

    def connected(self, broker: Broker) -> None:
        if self._client is not None:
            self._client.subscribe(self.subscription, 0)

    def disconnected(self, reason: str, by_broker: bool) -> None:
        pass

    def acknowledged(self, mid: int) -> None:
        pass

    def refused(self, mid: int, reason: str) -> None:
        pass

    def lost(self, mid: int) -> None:
        pass  # an answer is not sent again: a late one is useless

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
