"""The encoder: readings -> (topic, JSON payload) records in the buffer, each with its ``seq``.

Public contract: docs/schemas/reading.schema.json and device-batch.schema.json. orjson because
encoding is on the hot path (figures in docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol
from weakref import WeakKeyDictionary

import orjson

from gateway.delivery.buffer import Record
from gateway.model import GOOD, Block, Points, Reading, Sample, expand
from gateway.topics import Topics


class Records(Protocol):
    """Where encoded records go: the durable buffer."""

    def take_seq(self) -> int: ...

    def add(self, record: Record) -> None: ...


class JsonEncoder:
    """One message per point, or with ``batch`` one per device and poll cycle."""

    def __init__(self, topics: Topics, out: Records, batch: bool = False) -> None:
        self.topics = topics
        self.out = out
        self.batch = batch
        self.readings = 0  # values encoded (for /metrics)
        self._point_templates: WeakKeyDictionary[Points, list[tuple[str, bytes]]] = (
            WeakKeyDictionary()
        )

    def send(self, batch: Sequence[Sample]) -> None:
        """Encode a batch of one poll or notification, stamped ``gw_ts`` now; never blocks."""
        now = time.time()
        gw_ts = iso_time(now)
        out, topics = self.out, self.topics
        if self.batch:
            self.readings += sum(len(s.values) if isinstance(s, Block) else 1 for s in batch)
            for group in split_by_point(batch):
                seq = out.take_seq()
                payload = encode_batch(group, seq, gw_ts)
                sampled = min(sample.ts for sample in group)
                out.add(Record(seq, topics.device(group[0].device), payload, now, sampled))
            return
        gw_bytes = gw_ts.encode()
        for sample in batch:
            if isinstance(sample, Block):
                self._send_block(sample, gw_bytes, now)
                continue
            self.readings += 1
            seq = out.take_seq()
            payload = encode_reading(sample, seq, gw_ts)
            out.add(Record(seq, topics.point(sample.device, sample.point), payload, now, sample.ts))

    def _send_block(self, block: Block, gw_ts: bytes, now: float) -> None:
        """One message per value of a block, from templates rendered once per set of points."""
        templates = self._point_templates.get(block.points)
        if templates is None:
            templates = self._point_templates[block.points] = point_templates(block, self.topics)
        sampled = block.ts
        self.readings += len(block.values)
        ts = iso_time(sampled).encode()
        take_seq, add = self.out.take_seq, self.out.add
        for (topic, template), value in zip(templates, block_values(block), strict=True):
            seq = take_seq()
            add(Record(seq, topic, template % (value, ts, gw_ts, seq), now, sampled))


_second_cache: tuple[int, str] = (-1, "")


def iso_time(ts: float) -> str:
    """``2026-11-22T10:00:00.123Z``; the second part is cached, most readings share it."""
    global _second_cache
    second, millis = divmod(round(ts * 1000), 1000)
    cached_second, text = _second_cache
    if cached_second != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    return f"{text}.{millis:03d}Z"


REPLAYED = b',"replayed":true}'


def mark_replayed(payload: bytes) -> bytes:
    """A payload sent from the backlog: the same JSON object plus ``"replayed": true``."""
    return payload[:-1] + REPLAYED


def encode_batch(samples: Sequence[Sample], seq: int, gw_ts: str) -> bytes:
    """One device's poll cycle as one message (``mqtt.batch: device``; device-batch.schema.json).

    The caller passes samples of one device in which each point appears once.
    """
    parts: list[bytes] = []
    newest = 0.0
    device = ""
    for sample in samples:
        device = sample.device
        newest = max(newest, sample.ts)
        if isinstance(sample, Block):
            parts.append(_render_block(sample))
            continue
        point: dict[str, object] = {
            "value": sample.value,
            "quality": sample.quality,
            "ts": iso_time(sample.ts),
            "unit": sample.unit,
        }
        if sample.quality != GOOD:
            point["reason"] = sample.reason or "unknown"
        parts.append(orjson.dumps(sample.point) + b":" + orjson.dumps(point))
    head = orjson.dumps({"device": device, "ts": iso_time(newest), "gw_ts": gw_ts, "seq": seq})
    return head[:-1] + b',"points":{' + b",".join(parts) + b"}}"


def block_values(block: Block) -> list[bytes]:
    """Each value of a block as JSON, from one ``orjson`` call (numbers only: no commas inside)."""
    return orjson.dumps(block.values)[1:-1].split(b",")


# Per ``Points`` (one set of points sampled together), rendered on first use: every constant
# byte of its JSON, with ``%b`` where the values and the timestamp go. Weak keys: a device that
# re-plans its requests drops its old sets.
_batch_templates: WeakKeyDictionary[Points, bytes] = WeakKeyDictionary()


def _render_block(block: Block) -> bytes:
    points = block.points
    template = _batch_templates.get(points)
    if template is None:
        template = _batch_templates[points] = b",".join(
            _escape(orjson.dumps(name))
            + b':{"value":%b,"quality":"good","ts":"%b","unit":'
            + _escape(orjson.dumps(unit))
            + b"}"
            for name, unit in zip(points.names, points.units, strict=True)
        )
    ts = iso_time(block.ts).encode()
    args = [ts] * (2 * len(points))
    args[0::2] = block_values(block)
    return template % tuple(args)


def point_templates(block: Block, topics: Topics) -> list[tuple[str, bytes]]:
    """Topic and payload template (``%b`` value, ts and gw_ts, ``%d`` seq) of each point of a
    block, for one message per point (the same JSON as ``encode_reading``)."""
    device, points = block.device, block.points
    return [
        (
            topics.point(device, name),
            _escape(orjson.dumps({"device": device, "point": name})[:-1])
            + b',"value":%b,"quality":"good","ts":"%b","gw_ts":"%b","unit":'
            + _escape(orjson.dumps(unit))
            + b',"seq":%d}',
        )
        for name, unit in zip(points.names, points.units, strict=True)
    ]


def _escape(text: bytes) -> bytes:
    return text.replace(b"%", b"%%")


def split_by_point(samples: Sequence[Sample]) -> list[Sequence[Sample]]:
    """Batches of one device in which each point appears once (a subscription may report a
    point twice in one notification)."""
    # A source never repeats a point in the blocks of one batch (``Block``): only readings
    # can repeat, among themselves.
    device = samples[0].device if samples else ""
    names: set[str] = set()
    readings = 0
    for sample in samples:
        if sample.device != device:
            break
        if not isinstance(sample, Block):
            names.add(sample.point)
            readings += 1
    else:
        if len(names) == readings:
            return [samples]  # the common case: one message
    batches: list[list[Reading]] = []
    seen: list[set[str]] = []
    for reading in expand(samples):
        for batch, known in zip(batches, seen, strict=True):
            if reading.point not in known and batch[0].device == reading.device:
                batch.append(reading)
                known.add(reading.point)
                break
        else:
            batches.append([reading])
            seen.append({reading.point})
    return list(batches)


def encode_reading(reading: Reading, seq: int, gw_ts: str) -> bytes:
    payload: dict[str, object] = {
        "device": reading.device,
        "point": reading.point,
        "value": reading.value,
        "quality": reading.quality,
        "ts": iso_time(reading.ts),
        "gw_ts": gw_ts,
        "unit": reading.unit,
        "seq": seq,
    }
    if reading.quality != GOOD:
        payload["reason"] = reading.reason or "unknown"
    return kept_json(payload)


def kept_json(value: object) -> bytes:
    """``orjson.dumps`` for JSON that is kept a while (a payload waiting in the buffer for the
    broker's acknowledgement, a retained state): a copy of the right size. orjson's own result
    keeps a 4 KB allocation however short it is, so 50,000 first values of a start-up would
    hold 200 MB."""
    return bytes(memoryview(orjson.dumps(value)))
