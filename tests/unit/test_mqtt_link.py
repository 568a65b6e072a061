"""The broker link against a scripted broker: what mosquitto rarely or never does on cue.

A Receive Maximum that holds messages back, a connection dropped with messages in flight (QoS 1
and the two halves of QoS 2), a broker that stops answering pings, a refused CONNECT. The
ordinary paths (TLS, MQTT 5, outages, kill -9, commands) run against mosquitto in the
integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from gateway.config.schema import MqttSection
from gateway.mqtt import packets
from gateway.mqtt.link import MqttLink

PUBLISH, PUBREL, PINGREQ = 0x30, 0x62, 0xC0


class Broker:
    """Accepts connections, answers CONNECT as told, records every packet per connection.

    ``auto_ack``: PUBACK each QoS 1 PUBLISH; ``pings``: answer PINGREQ.
    """

    def __init__(self, v5: bool = False, connack: bytes = b"\x00\x00") -> None:
        self.v5 = v5
        self.connack = connack
        self.auto_ack = True
        self.pings = True
        self.connections: list[list[tuple[int, bytes]]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.changed = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> Broker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[tuple[int, bytes]] = []
        self.connections.append(seen)
        self.writers.append(writer)
        rest = b""
        try:
            while data := await reader.read(65536):
                found, rest = packets.split(rest + data)
                for first, body in found:
                    seen.append((first, body))
                    self._answer(writer, first, body)
                self.changed.set()
        except ConnectionError:
            pass

    def _answer(self, writer: asyncio.StreamWriter, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == packets.CONNECT:
            writer.write(bytes((0x20, len(self.connack))) + self.connack)
        elif kind == packets.PUBLISH and self.auto_ack and (first >> 1) & 3 == 1:
            mid = packets.read_publish(first, body, self.v5).mid
            writer.write(packets.ack(packets.PUBACK, mid))
        elif kind == packets.PINGREQ and self.pings:
            writer.write(b"\xd0\x00")

    def publishes(self, connection: int = -1) -> list[packets.Message]:
        return [
            packets.read_publish(first, body, self.v5)
            for first, body in self.connections[connection]
            if first >> 4 == packets.PUBLISH
        ]

    def firsts(self, connection: int = -1) -> list[int]:
        return [first for first, _ in self.connections[connection]]

    def send(self, packet: bytes, connection: int = -1) -> None:
        self.writers[connection].write(packet)

    def drop(self) -> None:
        self.writers[-1].transport.abort()

    async def until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def _link(broker: Broker, **mqtt: object) -> MqttLink:
    config = MqttSection(url=f"mqtt://127.0.0.1:{broker.port}", **mqtt)  # type: ignore[arg-type]
    link = MqttLink(config, "gw-test")
    link.start()
    return link


def test_the_broker_s_receive_maximum_holds_the_rest_back_until_acknowledged() -> None:
    async def scenario() -> None:
        receive_max_2 = b"\x00\x00\x03\x21\x00\x02"
        async with Broker(v5=True, connack=receive_max_2) as broker:
            broker.auto_ack = False
            link = _link(broker, version=5)
            await link.connected.wait()
            assert link.window == 2
            for i in range(5):
                link.publish_state(f"s/{i}", b"%d" % i)
            await broker.until(lambda: len(broker.publishes()) == 2)
            await asyncio.sleep(0.2)
            assert len(broker.publishes()) == 2  # no more while two wait for their PUBACK
            first = broker.publishes()[0].mid
            broker.send(packets.ack(packets.PUBACK, first))
            await broker.until(lambda: len(broker.publishes()) == 3)
            for message in broker.publishes()[1:]:
                broker.send(packets.ack(packets.PUBACK, message.mid))
            await broker.until(lambda: len(broker.publishes()) == 5)
            assert [m.topic for m in broker.publishes()] == [f"s/{i}" for i in range(5)]
            assert not any(f & 0x08 for f in broker.firsts())  # none marked as a resend
            await link.stop()

    _run(scenario)


def test_what_was_in_flight_is_sent_again_in_order_after_a_reconnect() -> None:
    async def scenario() -> None:
        async with Broker() as broker:
            broker.auto_ack = False
            link = _link(broker)
            await link.connected.wait()
            mids = [link.publish(f"r/{i}", b"v%d" % i, qos=1) for i in range(3)]
            await broker.until(lambda: len(broker.publishes()) == 3)
            broker.auto_ack = True
            broker.drop()
            await broker.until(
                lambda: len(broker.connections) == 2 and len(broker.publishes()) == 3
            )
            again = broker.publishes()
            assert [(m.topic, m.payload, m.mid) for m in again] == [
                (f"r/{i}", b"v%d" % i, mid) for i, mid in enumerate(mids)
            ]
            publish_firsts = [f for f in broker.firsts() if f >> 4 == packets.PUBLISH]
            assert all(f & 0x08 for f in publish_firsts)  # DUP: a resend
            await asyncio.sleep(0.1)
            acked, refused = link.take_acked()
            assert sorted(acked) == sorted(mids) and not refused
            assert link.outstanding == 0
            await link.stop()

    _run(scenario)


async def _released_then_dropped(broker: Broker) -> tuple[MqttLink, int]:
    """A QoS 2 message the broker received (PUBREC) and we released (PUBREL), and the
    connection dropped before its PUBCOMP."""
    broker.auto_ack = False
    link = _link(broker, qos=2)
    await link.connected.wait()
    mid = link.publish("r/1", b"x", qos=2)
    assert mid
    await broker.until(lambda: len(broker.publishes()) == 1)
    broker.send(packets.ack(packets.PUBREC, mid))
    await broker.until(lambda: PUBREL in broker.firsts())
    broker.drop()
    return link, mid


def test_qos_2_resumes_with_pubrel_when_the_broker_kept_the_session() -> None:
    async def scenario() -> None:
        async with Broker(connack=b"\x01\x00") as broker:  # session present
            link, mid = await _released_then_dropped(broker)
            await broker.until(lambda: len(broker.connections) == 2 and PUBREL in broker.firsts())
            assert broker.publishes() == []  # the broker has the message: only its release
            broker.send(packets.ack(packets.PUBCOMP, mid))
            await asyncio.sleep(0.1)
            assert link.take_acked() == ([mid], [])
            await link.stop()

    _run(scenario)


def test_qos_2_is_sent_whole_again_when_the_broker_lost_the_session() -> None:
    async def scenario() -> None:
        async with Broker(connack=b"\x00\x00") as broker:  # no session
            link, mid = await _released_then_dropped(broker)
            await broker.until(lambda: len(broker.connections) == 2 and broker.publishes() != [])
            assert [(m.topic, m.qos, m.mid) for m in broker.publishes()] == [("r/1", 2, mid)]
            assert PUBREL not in broker.firsts()
            await link.stop()

    _run(scenario)


def test_a_broker_that_stops_answering_pings_is_left_and_reconnected() -> None:
    async def scenario() -> None:
        async with Broker() as broker:
            broker.pings = False
            with structlog.testing.capture_logs() as logs:
                link = _link(broker, keepalive="1s")
                await link.connected.wait()
                await broker.until(lambda: len(broker.connections) == 2, within=15)
                await link.stop()
            assert PINGREQ in broker.firsts(0)
            lost = [e for e in logs if e["event"] == "broker connection lost"]
            assert lost and "keep-alive" in lost[0]["reason"]

    _run(scenario)


def test_a_refused_connect_is_logged_once_with_why_and_retried() -> None:
    async def scenario() -> None:
        async with Broker(connack=b"\x00\x05") as broker:  # 3.1.1: not authorized
            with structlog.testing.capture_logs() as logs:
                link = _link(broker, username="gw", password="wrong")
                await broker.until(lambda: len(broker.connections) == 2, within=15)
                assert not link.connected.is_set()
                await link.stop()
            refused = [e for e in logs if e["event"] == "broker refused connection"]
            assert len(refused) == 1 and refused[0]["reason"] == "not authorized"
            connect = broker.connections[0][0]
            assert connect[0] == 0x10 and connect[1].endswith(b"\x00\x02gw\x00\x05wrong")

    _run(scenario)
