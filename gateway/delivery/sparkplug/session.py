"""The Sparkplug B edge node: the encoder of its DDATA and the session around it.

- ``SparkplugEncoder`` (beside ``JsonEncoder``): readings -> one DDATA record per device and
  batch into the durable buffer, without a ``seq`` yet; it keeps each point's last reading for
  the births.
- ``EdgeNode``: what a session adds, decided at send time. The NDEATH will of every CONNECT
  with the next bdSeq; after connecting, NBIRTH (seq 0) and a DBIRTH for every device, then a
  DDEATH for each one not connected (so a host knows every alias, also of the backlog's
  messages); DDEATH and DBIRTH when a device goes and comes back; ``seq`` on every message in
  the order sent; backlog messages marked ``is_historical``; NDEATH before a clean disconnect.
  Everything goes out at QoS 0, not retained, as Sparkplug 3.0 requires
  [tck-id-topics-ddata-mqtt], [tck-id-topics-nbirth-mqtt]; the will at QoS 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import orjson
import structlog

from gateway import __version__
from gateway.config.schema import DeviceConfig
from gateway.delivery.buffer import Record
from gateway.delivery.encode_json import Records
from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.aliases import Aliases
from gateway.delivery.sparkplug.bdseq import BdSeq
from gateway.delivery.sparkplug.payload import (
    NEXT_SERVER,
    QUALITY_CODES,
    VALUE_TYPES,
    DeviceMetrics,
    MetricSpec,
    QualityCodes,
    as_historical,
    asks_next_server,
    asks_rebirth,
    command_metrics,
    device_death,
    metric_value,
    node_birth,
    node_death,
    with_seq,
)
from gateway.delivery.sparkplug.topics import SparkplugTopics, state_topic
from gateway.model import Block, Points, Reading, Sample, Scalar, Value
from gateway.mqtt.client import Will

log = structlog.get_logger("gateway.sparkplug")

QOS = 0  # every message of an edge node; the will is QoS 1
# The edge node's own metrics in its NBIRTH (they do not change while it runs: no NDATA).
NODE_METRICS = [("Properties/Software", pb.String, f"factory-gateway {__version__}")]


class SparkplugEncoder:
    def __init__(
        self,
        topics: SparkplugTopics,
        out: Records,
        devices: Sequence[DeviceConfig],
        value_types: Mapping[str, Mapping[str, str | None]],
        aliases: Aliases | None = None,
        codes: QualityCodes = QUALITY_CODES["ignition"],
    ) -> None:
        self.topics = topics
        self.out = out
        self.codes = codes
        self.readings = 0  # values encoded (for /metrics)
        self.metrics: dict[str, DeviceMetrics] = {}
        self.last: dict[str, dict[str, Reading]] = {}  # the latest reading of each point
        # and the latest block of each set of points read together (the fast lane's)
        self.last_blocks: dict[str, dict[Points, Block]] = {}
        self.dead: set[str] = set()  # devices known not connected (their data is not sent)
        self.aliases = aliases if aliases is not None else Aliases(None)
        self.track(devices, value_types)

    def track(
        self,
        devices: Sequence[DeviceConfig],
        value_types: Mapping[str, Mapping[str, str | None]],
        keep: Iterable[str] = (),
    ) -> None:
        """The devices of the map (again after a reload: those in ``keep`` are unchanged),
        their metrics' aliases from the saved table (``aliases.py``)."""
        kept = set(keep)
        metrics: dict[str, DeviceMetrics] = {}
        for device in devices:
            if device.id in kept and device.id in self.metrics:
                metrics[device.id] = self.metrics[device.id]
                continue
            types = value_types.get(device.id, {})
            specs = []
            for point in device.points:
                kind = types.get(point.name)
                given = VALUE_TYPES[kind] if kind else None
                alias, datatype = self.aliases.alias(device.id, point.name, given)
                specs.append(MetricSpec(point.name, alias, datatype, point.unit))
            metrics[device.id] = DeviceMetrics(specs, self.codes)
        self.aliases.save()
        self.metrics = metrics
        self.last = {d: self.last.get(d, {}) if d in kept else {} for d in metrics}
        self.last_blocks = {d: self.last_blocks.get(d, {}) if d in kept else {} for d in metrics}

    def remember(self, batch: Sequence[Sample]) -> None:
        """Take the batch's values as the current ones (a birth made now carries them)."""
        for sample in batch:
            if isinstance(sample, Block):
                blocks = self.last_blocks.get(sample.device)
                if blocks is not None:
                    blocks[sample.points] = sample
            else:
                last = self.last.get(sample.device)
                if last is not None:
                    last[sample.point] = sample

    def send(self, batch: Sequence[Sample]) -> None:
        """A DDATA per device of the batch (usually one), stored before it has its seq."""
        if not batch:
            return
        self.remember(batch)
        now = time.time()
        by_device: dict[str, list[Sample]] = {}
        for sample in batch:
            by_device.setdefault(sample.device, []).append(sample)
        for device, group in by_device.items():
            metrics = self.metrics.get(device)
            if metrics is None:
                continue
            if device in self.dead:
                continue  # its DDEATH says it all: no data of a device known to be gone
            self.readings += sum(len(s.values) if isinstance(s, Block) else 1 for s in group)
            payload = metrics.data(0, round(now * 1000), group)
            if metrics.decided:
                self._decided(device, metrics)
            if payload is None:
                continue  # nothing changed since it last went out
            seq = self.out.take_seq()
            topic = self.topics.device("DDATA", device)
            self.out.add(Record(seq, topic, payload, now, min(s.ts for s in group)))

    def _decided(self, device: str, metrics: DeviceMetrics) -> None:
        """Metrics whose datatype a first value decided (an OPC UA variable): saved, so a
        restart's births announce it; and when a birth went out without it, a DBIRTH now,
        before the data, so no host reads the values under the placeholder's type."""
        reborn = not metrics.placeholders.isdisjoint(metrics.decided)
        for name in metrics.decided:
            self.aliases.alias(device, name, metrics.datatypes[name])
        metrics.decided.clear()
        self.aliases.save()
        if reborn:
            self.control(self.topics.device("DBIRTH", device), self.birth(device))

    def current(self, device: str) -> dict[str, Reading]:
        """Each point's latest reading, from blocks and readings alike."""
        latest: dict[str, Reading] = {}
        for block in self.last_blocks.get(device, {}).values():
            for reading in block.readings():
                seen = latest.get(reading.point)
                if seen is None or reading.ts >= seen.ts:
                    latest[reading.point] = reading
        for reading in self.last.get(device, {}).values():
            seen = latest.get(reading.point)
            if seen is None or reading.ts >= seen.ts:
                latest[reading.point] = reading
        return latest

    def birth(self, device: str) -> bytes:
        return self.metrics[device].birth(0, round(time.time() * 1000), self.current(device))

    def control(self, topic: str, payload: bytes) -> None:
        """A device's DBIRTH or DDEATH, stored in the buffer like its DDATA, so the three keep
        their order: a death never overtakes the data read before it, and the data after a
        birth is newer than the values the birth carries."""
        now = time.time()
        self.out.add(Record(self.out.take_seq(), topic, payload, now, now))


class EdgeNode:
    """The session's side of the edge node (see the module's docstring)."""

    def __init__(
        self,
        topics: SparkplugTopics,
        encoder: SparkplugEncoder,
        bd_seq: BdSeq,
        primary_host: str | None = None,
        servers: int = 1,
    ) -> None:
        """``servers``: the MQTT servers the node may move between (``mqtt.url``'s)."""
        self.topics = topics
        self.encoder = encoder
        self.bd_seq = bd_seq
        self.primary_host = primary_host
        self.servers = servers
        self._state_topic = state_topic(primary_host) if primary_host else None
        self.host_online = primary_host is None
        self._host_timestamp = -1  # of the latest STATE taken, on ...
        self._host_server = ""  # ... this server
        self._said_invalid_state = False
        # Where a DCMD's writes go (the command router): device, point, value, command id.
        self.write: Callable[[str, str, Scalar, str], None] | None = None
        self.seq = 0
        self.connected: dict[str, bool] = {}  # each device's last known connection
        self.born: set[str] = set()  # devices a DBIRTH was published for in this session
        self._gone: set[str] = set()  # removed from the map, their DDEATH not published yet
        self._ndeath = topics.node("NDEATH")
        self._nbirth = topics.node("NBIRTH")
        self._ddata = f"{topics.node('DDATA')}/"
        self._dbirth = f"{topics.node('DBIRTH')}/"
        self._ddeath = f"{topics.node('DDEATH')}/"
        # The filter of the round trips that confirm QoS 0 messages: under the node's NCMD,
        # where nothing is ever published or subscribed.
        self.round_trip_filter = f"{topics.node('NCMD')}/confirm"

    def will(self) -> Will:
        """NDEATH with the bdSeq of the CONNECT about to be sent (saved first)."""
        return Will(self._ndeath, node_death(self.bd_seq.next()), 1, False)

    def births(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """After connecting: NBIRTH and a DBIRTH per device (so the backlog's DDATA resolve);
        then, once the backlog is sent, a DDEATH per device known not to be connected, or
        removed from the map while its death waited. One that has not said yet (the gateway
        is starting) is left born, its metrics null and bad until its own DBIRTH or DDEATH:
        no death and birth again a moment later for every device at each start."""
        bd_seq = self.bd_seq.current if self.bd_seq.current is not None else 0
        metrics: list[tuple[str, int, Value]] = list(NODE_METRICS)
        if self.servers > 1:  # a host may send the node to its next server
            metrics = [(NEXT_SERVER, pb.Boolean, False), *metrics]
        node = node_birth(bd_seq, round(time.time() * 1000), metrics)
        births = [(self._nbirth, node)]
        encoder = self.encoder
        for device in encoder.metrics:
            births.append((self.topics.device("DBIRTH", device), encoder.birth(device)))
        deaths = [
            self._device_death(device)
            for device in encoder.metrics
            if self.connected.get(device) is False
        ]
        deaths += [self._device_death(device) for device in sorted(self._gone)]
        self._gone.clear()
        return births, deaths

    def device_state(self, device: str, connected: bool) -> None:
        """A DBIRTH when a device is (back) connected, a DDEATH when it is lost, into the
        buffer (``SparkplugEncoder.control``) unless already said. The births of a session
        say every device's state at its start."""
        was = self.connected.get(device)  # None: not said yet
        self.connected[device] = connected
        encoder = self.encoder
        if connected:
            encoder.dead.discard(device)
        else:
            encoder.dead.add(device)
        if device not in encoder.metrics or connected == was:
            return
        if connected:
            encoder.control(self.topics.device("DBIRTH", device), encoder.birth(device))
        else:
            encoder.control(*self._device_death(device))

    def removed(self, device: str) -> None:
        """A device a reload took out of the map: its DDEATH (said by the next births if
        they come first)."""
        self.connected.pop(device, None)
        self._gone.add(device)
        self.encoder.control(*self._device_death(device))

    def _device_death(self, device: str) -> tuple[str, bytes]:
        return self.topics.device("DDEATH", device), device_death(0, round(time.time() * 1000))

    def death(self) -> tuple[str, bytes]:
        """NDEATH, sent before a clean disconnect [tck-id-operational-behavior-edge-node-
        intentional-disconnect-ndeath]: the will's payload, with the current bdSeq."""
        bd_seq = self.bd_seq.current if self.bd_seq.current is not None else 0
        return self._ndeath, node_death(bd_seq)

    def subscriptions(self) -> list[tuple[str, int]]:
        """What the edge node's session subscribes to: its NCMD, at QoS 1
        [tck-id-message-flow-edge-node-ncmd-subscribe]."""
        subscriptions = [(self.topics.node("NCMD"), 1)]
        if self.write is not None:  # [tck-id-message-flow-device-dcmd-subscribe]
            subscriptions.append((self.topics.device_commands(), 1))
        if self._state_topic is not None:
            subscriptions.append((self._state_topic, 1))
        return subscriptions

    def session_started(self, server: str = "") -> None:
        """A new connection, to ``server``: the primary host must be seen online on it before
        any birth [tck-id-message-flow-edge-node-birth-publish-phid-wait]. STATE timestamps
        are compared within one server: another server's may be older."""
        if self.primary_host is not None:
            self.host_online = False
            if server != self._host_server:
                self._host_server = server
                self._host_timestamp = -1

    def host_state(self, topic: str, payload: bytes) -> bool | None:
        """The primary host's STATE: True (online) or False (offline), or None when the
        message is not its STATE, is not valid, or is older than the one before
        [tck-id-message-flow-edge-node-birth-publish-phid-wait-id], [...-wait-online],
        [...-wait-timestamp]."""
        if topic != self._state_topic:
            return None
        try:
            state = orjson.loads(payload)
            online, timestamp = state["online"], state["timestamp"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            online = timestamp = None
        if (
            not isinstance(online, bool)
            or not isinstance(timestamp, int)
            or isinstance(timestamp, bool)
        ):
            if not self._said_invalid_state:  # the host's every retained STATE would repeat it
                self._said_invalid_state = True
                log.warning(
                    "the primary host's STATE is not Sparkplug 3.0: ignored",
                    host=self.primary_host,
                    payload=payload[:80].decode("utf-8", "replace"),
                    hint='a 3.0 host publishes {"online": true|false, "timestamp": <ms>} as '
                    "JSON, retained, on spBv1.0/STATE/<host id>",
                )
            return None
        if timestamp < self._host_timestamp:
            return None
        self._host_timestamp = timestamp
        self.host_online = online
        return online

    def rebirth_asked(self, topic: str, payload: bytes) -> bool:
        """An NCMD with ``Node Control/Rebirth`` true: the births are sent again, with the
        same bdSeq, before any more data [tck-id-operational-behavior-data-commands-rebirth-
        action-1], [...-action-2], [...-action-3]."""
        return topic == self.topics.node("NCMD") and asks_rebirth(payload)

    def next_server_asked(self, topic: str, payload: bytes) -> bool:
        """An NCMD with ``Node Control/Next Server`` true, to a node with several servers."""
        return self.servers > 1 and topic == self.topics.node("NCMD") and asks_next_server(payload)

    def device_command(self, topic: str, payload: bytes) -> bool:
        """A DCMD: each metric, named or by alias, becomes a write through the command
        router's checks (writable, limits, read-back, audit); its new value is published as
        DDATA when read back. False when the message is not a DCMD."""
        device = self.topics.device_of_command(topic)
        if device is None or self.write is None:
            return False
        metrics = self.encoder.metrics.get(device)
        try:
            if metrics is None:
                raise ValueError(f"unknown device {device!r}")
            commands = command_metrics(payload)
        except ValueError as exc:
            log.warning("DCMD refused", device=device, reason=str(exc))
            return True
        for metric in commands:
            name = metric.name or metrics.names.get(metric.alias)
            datatype = metrics.datatypes.get(name) if name else None
            try:
                if name is None or name not in metrics.specs:
                    raise ValueError(f"unknown metric {metric.name or metric.alias!r}")
                if datatype is None:
                    raise ValueError(f"metric {name!r} has no datatype yet (no value read)")
                value = metric_value(metric, datatype)
            except ValueError as exc:
                log.warning("DCMD refused", device=device, metric=name, reason=str(exc))
                continue
            self.write(device, name, value, f"dcmd:{device}/{name}")
        return True

    def kind_of(self, topic: str) -> str | None:
        """A stored record's message type: ``DDATA``, ``DBIRTH`` or ``DDEATH`` of one of this
        node's devices; None for anything else (left by a run with another map or format)."""
        for kind, prefix in (("DDATA", self._ddata), ("DBIRTH", self._dbirth),
                             ("DDEATH", self._ddeath)):  # fmt: skip
            if topic.startswith(prefix):
                return kind if "/" not in topic[len(prefix) :] else None
        return None

    def resolves(self, topic: str) -> bool:
        """Whether a DDATA can be resolved by the host: its device's DBIRTH was published in
        this session (one too large for the broker never is)."""
        return topic[len(self._ddata) :] in self.born

    def not_born(self, topic: str) -> None:
        """A DBIRTH that could not be sent: its device's data cannot be resolved."""
        if topic.startswith(self._dbirth):
            self.born.discard(topic[len(self._dbirth) :])

    def unsent(self) -> None:
        """The message just finished was not sent after all: its seq is given again."""
        self.seq = (self.seq - 1) % 256

    def finish(self, topic: str, payload: bytes, replayed: bool = False) -> bytes:
        """The payload as sent: its place in the sequence (NBIRTH is 0, every other message
        one more, 255 wraps to 0; NDEATH has none) and, from the backlog, is_historical."""
        if topic == self._ndeath:
            return payload
        if topic == self._nbirth:
            self.seq = 0
            self.born.clear()
        else:
            self.seq = (self.seq + 1) % 256
            if topic.startswith(self._dbirth):
                self.born.add(topic[len(self._dbirth) :])
            elif topic.startswith(self._ddeath):
                self._gone.discard(topic[len(self._ddeath) :])
        if replayed and topic.startswith(self._ddata):
            metrics = self.encoder.metrics.get(topic[len(self._ddata) :])
            payload = as_historical(payload, metrics.names if metrics else ())
        return with_seq(payload, self.seq)
