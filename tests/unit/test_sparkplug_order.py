"""The edge node's messages in the order a host must see them, through the real buffer and
forwarder (the MQTT client is a fake that records what it is given)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway.delivery.buffer import Buffer, MemoryStore
from gateway.delivery.forwarder import Forwarder
from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.aliases import Aliases
from gateway.delivery.sparkplug.bdseq import BdSeq
from gateway.delivery.sparkplug.session import EdgeNode, SparkplugEncoder
from gateway.delivery.sparkplug.topics import SparkplugTopics
from gateway.errors import MessageTooLarge
from gateway.model import GOOD, Reading
from gateway.mqtt.client import Broker, Server, Settings


class FakeClient:
    """Takes messages up to ``limit`` bytes; a round trip is answered at once (unless
    ``answers`` is false)."""

    def __init__(self, forwarder: Forwarder, limit: int | None = None) -> None:
        self.forwarder, self.limit = forwarder, limit
        self.server = Server("broker", 1883)
        self.sent: list[tuple[str, bytes]] = []
        self.mid = 0
        self.answers = True
        self.dropped = asyncio.Event()

    def publish(self, topic: str, payload: bytes, qos: int, **_: Any) -> int:
        if self.limit is not None and len(payload) > self.limit:
            raise MessageTooLarge(f"over the broker's maximum packet size ({self.limit} B)")
        self.mid += 1
        self.sent.append((topic, payload))
        asyncio.get_running_loop().call_soon(self.forwarder.acknowledged, self.mid)
        return self.mid

    def round_trip(self, _filter: str) -> asyncio.Future[None]:
        answer = asyncio.get_running_loop().create_future()
        if self.answers:
            answer.set_result(None)
        return answer

    def drop(self, reason: str) -> None:
        self.dropped.set()
        self.forwarder.disconnected(reason, False)

    def subscribe(self, *_: Any) -> None:
        pass

    def messages(self, start: int = 0) -> list[tuple[str, str, list[tuple[Any, Any]]]]:
        """(type, device, [(name or alias, value)])."""
        out = []
        for topic, raw in self.sent[start:]:
            parts = topic.split("/")
            metrics = pb.Payload.FromString(raw).metrics
            values = [(m.name or m.alias, m.int_value) for m in metrics]
            out.append((parts[2], parts[4] if len(parts) > 4 else "", values))
        return out


def _node(
    tmp_path: Path,
    points: int = 2,
    limit: int | None = None,
    kind: str | None = "uint16",
    keepalive: int = 30,
) -> Any:
    """``kind``: the points' value type; None: decided by the first value (OPC UA)."""
    topics = SparkplugTopics("g", "n")
    buffer = Buffer(MemoryStore(), 10**8)
    names = [f"p{i}" for i in range(points)]
    device = SimpleNamespace(id="d", points=[SimpleNamespace(name=n, unit=None) for n in names])
    aliases = Aliases(tmp_path / "aliases.json")
    types = {"d": dict.fromkeys(names, kind)}
    encoder = SparkplugEncoder(topics, buffer, [device], types, aliases)  # type: ignore[list-item]
    edge = EdgeNode(topics, encoder, BdSeq(tmp_path / "bdseq"))
    settings = Settings((Server("broker", 1883),), "n", keepalive=keepalive)
    forwarder = Forwarder(settings, buffer, 0, "status", sparkplug=edge)
    client = FakeClient(forwarder, limit)
    forwarder._client = client  # type: ignore[assignment]
    return SimpleNamespace(edge=edge, encoder=encoder, buffer=buffer, fw=forwarder, client=client)


def _reading(point: str, value: int) -> Reading:
    return Reading("d", point, value, GOOD, time.time())


async def _drain(node: Any) -> None:
    node.buffer.flush()
    await node.fw._drain(node.client)
    for _ in range(3):
        await asyncio.sleep(0)  # the acknowledgements and round trips
    node.fw._collect()


async def _online(tmp_path: Path, **options: Any) -> Any:
    """A node whose device is connected, born on a session that is up."""
    node = _node(tmp_path, **options)
    node.edge.device_state("d", True)
    node.fw.connected(Broker(session_present=False))
    await _drain(node)
    return node


def test_a_device_death_and_birth_never_overtake_its_data(tmp_path: Path) -> None:
    asyncio.run(_death_and_birth_in_order(tmp_path))


async def _death_and_birth_in_order(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.edge.device_state("d", True)
    node.fw.connected(Broker(session_present=False))
    await _drain(node)  # NBIRTH, DBIRTH
    start = len(node.client.sent)
    # Two polls wait to be sent when the device is lost, and comes back with a new value.
    node.encoder.send([_reading("p0", 1), _reading("p1", 1)])
    node.encoder.send([_reading("p0", 2)])
    node.edge.device_state("d", False)
    node.encoder.remember([_reading("p0", 3)])  # the runtime's order: values, then state
    node.edge.device_state("d", True)
    node.encoder.send([_reading("p0", 3)])
    await _drain(node)
    kinds = [(kind, values) for kind, _, values in node.client.messages(start)]
    assert [k for k, _ in kinds] == ["DDATA", "DDATA", "DDEATH", "DBIRTH", "DDATA"]
    assert kinds[0][1] == [(1, 1), (2, 1)] and kinds[1][1] == [(1, 2)]
    assert dict(kinds[3][1])["p0"] == 3  # the birth's value, and nothing older after it
    assert kinds[4][1] == [(1, 3)]
    # Stored and delivered: the five above. The DBIRTH stored before the connection was
    # replaced by the session's births, and counts as nothing.
    assert node.buffer.outcomes.delivered == 5
    assert not node.buffer.outcomes.dropped


def test_the_data_of_a_device_whose_birth_the_broker_refuses_is_dropped(
    tmp_path: Path,
) -> None:
    asyncio.run(_birth_refused(tmp_path))


async def _birth_refused(tmp_path: Path) -> None:
    node = await _online(tmp_path, points=300, limit=1000)
    node.encoder.send([_reading("p7", 7)])
    await _drain(node)
    # A host could not resolve it: no DDATA without its DBIRTH, counted as dropped.
    assert [kind for kind, _, _ in node.client.messages()] == ["NBIRTH"]
    assert node.buffer.outcomes.dropped["no_birth"] == 1


def test_a_type_a_first_value_decides_is_born_before_its_data_and_kept(tmp_path: Path) -> None:
    asyncio.run(_decided_type(tmp_path))


async def _decided_type(tmp_path: Path) -> None:
    node = _node(tmp_path, points=1, kind=None)  # an OPC UA variable: no type in the map
    node.edge.device_state("d", True)
    node.fw.connected(Broker(session_present=False))
    await _drain(node)
    (placeholder,) = pb.Payload.FromString(node.client.sent[1][1]).metrics
    assert (placeholder.datatype, placeholder.is_null) == (pb.String, True)
    node.encoder.send([Reading("d", "p0", 21.5, GOOD, time.time())])
    await _drain(node)
    # A DBIRTH with the type the value decided, then the value under it.
    (kind, _, _), (data, _, _) = node.client.messages(2)
    assert (kind, data) == ("DBIRTH", "DDATA")
    (born,) = pb.Payload.FromString(node.client.sent[2][1]).metrics
    assert (born.datatype, born.double_value) == (pb.Double, 21.5)
    # The next run announces it from the start.
    assert Aliases(tmp_path / "aliases.json").alias("d", "p0", None) == (1, pb.Double)


def test_a_device_not_heard_of_yet_is_born_without_a_death(tmp_path: Path) -> None:
    """At start the devices are still connecting: born (null, bad) so any backlog resolves,
    not declared dead a moment before their real birth; a device that failed is."""
    asyncio.run(_births_at_start(tmp_path))


async def _births_at_start(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.fw.connected(Broker(session_present=False))
    await _drain(node)
    assert [kind for kind, _, _ in node.client.messages()] == ["NBIRTH", "DBIRTH"]
    node.edge.device_state("d", False)  # its first attempt failed
    await _drain(node)
    assert [kind for kind, _, _ in node.client.messages(2)] == ["DDEATH"]
    node.fw.disconnected("test", False)
    node.fw.connected(Broker(session_present=False))  # known not connected now
    await _drain(node)
    assert [kind for kind, _, _ in node.client.messages(3)] == ["NBIRTH", "DBIRTH", "DDEATH"]


def test_the_backlog_goes_out_between_the_births_and_the_deaths(tmp_path: Path) -> None:
    """A device that went down while its data waited: the new session's births make it
    known, its history follows, and only then its DDEATH (no data after a death)."""
    asyncio.run(_backlog_before_deaths(tmp_path))


async def _backlog_before_deaths(tmp_path: Path) -> None:
    node = await _online(tmp_path)
    node.fw.disconnected("the broker went away", False)
    node.encoder.send([_reading("p0", 1)])  # waits for the broker
    node.edge.device_state("d", False)  # then the device goes down too
    node.fw.connected(Broker(session_present=False))
    start = len(node.client.sent)
    await _drain(node)
    sent = node.client.messages(start)
    assert [kind for kind, _, _ in sent] == ["NBIRTH", "DBIRTH", "DDATA", "DDEATH"]
    assert pb.Payload.FromString(node.client.sent[start + 2][1]).metrics[0].is_historical


def test_a_device_removed_while_its_death_waited_is_declared_dead_by_a_rebirth(
    tmp_path: Path,
) -> None:
    asyncio.run(_removed_then_rebirth(tmp_path))


async def _removed_then_rebirth(tmp_path: Path) -> None:
    node = await _online(tmp_path)
    node.encoder.track([], {})  # a reload took it out of the map
    node.edge.removed("d")
    node.fw._birth(node.edge)  # a host asked for a rebirth before the DDEATH went out
    start = len(node.client.sent)
    await _drain(node)
    assert [(kind, dev) for kind, dev, _ in node.client.messages(start)] == [
        ("NBIRTH", ""),
        ("DDEATH", "d"),
    ]


def test_a_round_trip_never_answered_ends_the_connection(tmp_path: Path) -> None:
    asyncio.run(_unanswered(tmp_path))


async def _unanswered(tmp_path: Path) -> None:
    node = _node(tmp_path, keepalive=1)
    node.client.answers = False
    node.edge.device_state("d", True)
    node.fw.connected(Broker(session_present=False))
    await _drain(node)
    node.encoder.send([_reading("p0", 1)])
    await _drain(node)
    assert node.fw.inflight  # written, not confirmed
    await asyncio.wait_for(node.client.dropped.wait(), 10)
    assert not node.fw.inflight and node.buffer.count == 1  # the DDATA, given back
