"""Sparkplug B 3.0 payloads: readings -> protobuf bytes (``sparkplug_b.proto``, Eclipse Tahu).

What the specification fixes is done here; what a session does with it (bdSeq, seq, births,
STATE) is the session's. The metric types come from the information model's value types
(``VALUE_TYPES``), or from a value when the map does not say (an OPC UA variable). Quality goes
into the ``Quality`` property (Int32), by default as Ignition reads it (Ignition 8 quality
codes): 192 good, ``Uncertain`` / ``Uncertain_LastKnownValue`` (a stale value), ``Bad``; or in
the specification's 0/192/500 (``QUALITY_CODES``). Absent means good, as Cirrus Link's modules
publish it, so a DATA message carries it only when it is not good or was not good the last
time.
"""

from __future__ import annotations

import math
import struct
import sys
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Literal
from weakref import WeakKeyDictionary

from google.protobuf.message import DecodeError

from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.model import GOOD, UNCERTAIN, Block, Points, Reading, Sample, Scalar, Value

Payload = pb.Payload
Metric = pb.Payload.Metric

# The information model's value types -> Sparkplug datatypes.
VALUE_TYPES: dict[str, int] = {
    "bool": pb.Boolean,
    "int8": pb.Int8,
    "int16": pb.Int16,
    "int32": pb.Int32,
    "int64": pb.Int64,
    "uint8": pb.UInt8,
    "uint16": pb.UInt16,
    "uint32": pb.UInt32,
    "uint64": pb.UInt64,
    "float32": pb.Float,
    "float64": pb.Double,
    "string": pb.String,
    "bytes": pb.Bytes,
    "datetime": pb.DateTime,
    "bool[]": pb.BooleanArray,
    "int8[]": pb.Int8Array,
    "int16[]": pb.Int16Array,
    "int32[]": pb.Int32Array,
    "int64[]": pb.Int64Array,
    "uint8[]": pb.UInt8Array,
    "uint16[]": pb.UInt16Array,
    "uint32[]": pb.UInt32Array,
    "uint64[]": pb.UInt64Array,
    "float32[]": pb.FloatArray,
    "float64[]": pb.DoubleArray,
    "string[]": pb.StringArray,
}

# Ignition 8 quality codes (the Quality property, Int32; Cirrus Link's table).
QUALITY_GOOD = 192
QUALITY_UNCERTAIN = 1073742080
QUALITY_LAST_KNOWN = 1073742081  # Uncertain_LastKnownValue: a stale value
QUALITY_BAD = -2147483136


@dataclass(frozen=True, slots=True)
class QualityCodes:
    """The ``Quality`` property's value for a good, uncertain, stale and bad reading."""

    good: int
    uncertain: int
    stale: int
    bad: int

    def of(self, reading: Reading) -> int:
        if reading.quality == GOOD:
            return self.good
        if reading.quality == UNCERTAIN:
            return self.stale if reading.reason == "stale" else self.uncertain
        return self.bad


# `sparkplug.quality_codes`: Ignition 8's (what Cirrus Link's modules publish and read; in
# them 0 is Good_Unspecified), or the three the specification lists: 0 bad, 192 good, 500
# stale [tck-id-payloads-propertyset-quality-value-value].
QUALITY_CODES = {
    "ignition": QualityCodes(QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_LAST_KNOWN, QUALITY_BAD),
    "specification": QualityCodes(192, 500, 500, 0),
}

_SIGNED_32 = (pb.Int8, pb.Int16, pb.Int32)
_UNSIGNED_32 = (pb.UInt8, pb.UInt16, pb.UInt32)
# Array datatypes -> struct format of one element (little endian, as Sparkplug 3.0 packs them).
_PACKED: dict[int, str] = {
    pb.Int8Array: "b",
    pb.Int16Array: "h",
    pb.Int32Array: "i",
    pb.Int64Array: "q",
    pb.UInt8Array: "B",
    pb.UInt16Array: "H",
    pb.UInt32Array: "I",
    pb.UInt64Array: "Q",
    pb.FloatArray: "f",
    pb.DoubleArray: "d",
}


def datatype_of(value: Value | None) -> int:
    """The datatype for a value whose point has no declared type (decided by its first value)."""
    if isinstance(value, bool):
        return pb.Boolean
    if isinstance(value, int):
        return pb.Int64 if -(2**63) <= value < 2**63 else pb.UInt64
    if isinstance(value, float):
        return pb.Double
    if isinstance(value, list):
        first = next((v for v in value if v is not None), None)
        if isinstance(first, bool):
            return pb.BooleanArray
        if isinstance(first, int):
            return pb.Int64Array
        if isinstance(first, float):
            return pb.DoubleArray
        return pb.StringArray
    return pb.String


def set_value(metric: Metric, datatype: int, value: Value | None) -> bool:
    """Put ``value`` into ``metric`` as ``datatype``; False (and ``is_null``) when it does not
    fit (a value of another type than the point's)."""
    if value is None:
        metric.is_null = True
        return True
    try:
        _set(metric, datatype, value)
    except (TypeError, ValueError, OverflowError, struct.error):
        metric.ClearField("value")
        metric.is_null = True
        return False
    return True


def _set(metric: Metric, datatype: int, value: Value) -> None:
    if datatype == pb.Boolean:
        metric.boolean_value = _bool(value)
    elif datatype in _SIGNED_32 or datatype in _UNSIGNED_32:
        number = _int(value)
        low, high = _RANGES[datatype]
        if not low <= number <= high:
            raise OverflowError(number)
        # Signed: two's complement at the type's own width, as Eclipse Tahu writes it.
        metric.int_value = number & _MASKS[datatype]
    elif datatype in (pb.Int64, pb.UInt64, pb.DateTime):
        number = _int(value)
        low, high = _RANGES.get(datatype, (0, 2**64 - 1))
        if not low <= number <= high:
            raise OverflowError(number)
        metric.long_value = number & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.Float:
        metric.float_value = _float(value)
    elif datatype == pb.Double:
        metric.double_value = _float(value)
    elif datatype in (pb.String, pb.Text):
        metric.string_value = value if isinstance(value, str) else str(value)
    elif datatype == pb.Bytes:
        if not isinstance(value, str):
            raise TypeError(value)
        metric.bytes_value = value.encode()
    else:
        metric.bytes_value = pack_array(datatype, value)


_RANGES: dict[int, tuple[int, int]] = {
    pb.Int8: (-(2**7), 2**7 - 1),
    pb.Int16: (-(2**15), 2**15 - 1),
    pb.Int32: (-(2**31), 2**31 - 1),
    pb.Int64: (-(2**63), 2**63 - 1),
    pb.UInt8: (0, 2**8 - 1),
    pb.UInt16: (0, 2**16 - 1),
    pb.UInt32: (0, 2**32 - 1),
    pb.UInt64: (0, 2**64 - 1),
}


_MASKS: dict[int, int] = {
    pb.Int8: 0xFF,
    pb.Int16: 0xFFFF,
    pb.Int32: 0xFFFFFFFF,
    pb.UInt8: 0xFF,
    pb.UInt16: 0xFFFF,
    pb.UInt32: 0xFFFFFFFF,
}


def _bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(value)


def _int(value: Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return value


def _float(value: Value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(value)
    return number


def pack_array(datatype: int, value: Value) -> bytes:
    """An array metric's bytes as Sparkplug 3.0 packs them (little endian; booleans as a
    4-byte count and packed bits, most significant first; strings NUL-terminated)."""
    if not isinstance(value, list) or any(v is None for v in value):
        raise TypeError(value)
    if datatype == pb.BooleanArray:
        bits = bytearray((len(value) + 7) // 8)
        for i, flag in enumerate(value):
            if flag is not None and _bool(flag):  # None was refused above
                bits[i // 8] |= 0x80 >> (i % 8)
        return struct.pack("<I", len(value)) + bytes(bits)
    if datatype == pb.StringArray:
        return b"".join((v if isinstance(v, str) else str(v)).encode() + b"\0" for v in value)
    code = _PACKED.get(datatype)
    if code is None:
        raise TypeError(datatype)
    convert = _float if code in "fd" else _int
    return struct.pack(f"<{len(value)}{code}", *(convert(v) for v in value))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A point as a metric: its name, alias and datatype (None: from its first value)."""

    name: str
    alias: int
    datatype: int | None
    unit: str | None = None


def node_death(bd_seq: int) -> bytes:
    """NDEATH (the MQTT will): only the bdSeq metric, no seq."""
    payload = Payload()
    payload.timestamp = _now_ms()
    _bd_seq(payload, bd_seq)
    return _serialized(payload)


def node_birth(bd_seq: int, timestamp: int, extra: Sequence[tuple[str, int, Value]] = ()) -> bytes:
    """NBIRTH: seq 0, bdSeq, ``Node Control/Rebirth`` and the node's own metrics
    (``(name, datatype, value)``)."""
    payload = Payload()
    payload.timestamp = timestamp
    payload.seq = 0
    _bd_seq(payload, bd_seq)
    rebirth = payload.metrics.add()
    rebirth.name = REBIRTH
    rebirth.datatype = pb.Boolean
    rebirth.timestamp = timestamp
    rebirth.boolean_value = False
    for name, datatype, value in extra:
        metric = payload.metrics.add()
        metric.name, metric.datatype, metric.timestamp = name, datatype, timestamp
        set_value(metric, datatype, value)
    return _serialized(payload)


def _bd_seq(payload: Payload, bd_seq: int) -> None:
    metric = payload.metrics.add()
    metric.name = "bdSeq"
    metric.datatype = pb.Int64
    metric.timestamp = payload.timestamp
    metric.long_value = bd_seq


def _now_ms() -> int:
    return int(time.time() * 1000)


_NONE = object()  # not sent yet
_FLOAT_RANGES: dict[int, tuple[float, float]] = {
    pb.Float: (-3.4028234663852886e38, 3.4028234663852886e38),
    pb.Double: (-sys.float_info.max, sys.float_info.max),
}

# Datatypes a block's plain numbers fill directly, and the field each fills.
_FIELDS: dict[int, str] = {
    pb.Double: "double_value",
    pb.Float: "float_value",
    pb.Int8: "int_value",
    pb.Int16: "int_value",
    pb.Int32: "int_value",
    pb.UInt8: "int_value",
    pb.UInt16: "int_value",
    pb.UInt32: "int_value",
    pb.Int64: "long_value",
    pb.UInt64: "long_value",
}


@dataclass(frozen=True, slots=True)
class _Template:
    payload: Payload  # the metrics, alias only
    aliases: tuple[int, ...]
    fields: tuple[str, ...]  # the value field of each
    masks: tuple[int, ...]  # two's complement of each integer at its width (0: a float)
    ranges: tuple[tuple[float, float], ...]  # the values each takes (NaN is in none)


class DeviceMetrics:
    """One device's metrics: their aliases and datatypes, and which were last sent not good
    (a DATA message says ``Quality`` for those until they are good again).

    "Sent" is what the device's DATA messages said, in the order they were encoded: they are
    durable (the buffer), a birth is not (it is made at send time and may never go out), so
    a birth takes nothing off them, and every change of a value is in a DATA message."""

    def __init__(
        self, specs: Sequence[MetricSpec], codes: QualityCodes = QUALITY_CODES["ignition"]
    ) -> None:
        self.codes = codes
        self.specs = {s.name: s for s in specs}
        self.names = {s.alias: s.name for s in specs}  # alias -> name (commands)
        self.datatypes: dict[str, int | None] = {s.name: s.datatype for s in specs}
        self.not_good: set[str] = set()
        self.decided: list[str] = []  # datatypes a first value decided, not yet saved
        self.placeholders: set[str] = set()  # announced by the last birth without a datatype
        # The value each metric last went out with in a DATA message: DATA carries only what
        # changed since [tck-id-operational-behavior-data-publish-dbirth-change] (a SHOULD).
        self.sent: dict[str, Value] = {}
        # Per set of points a source reads together: the values its last DDATA sent (while
        # nothing else sent any of them since), and its DDATA metrics, ready to fill.
        self._block_sent: WeakKeyDictionary[Points, Sequence[Value]] = WeakKeyDictionary()
        self._templates: WeakKeyDictionary[Points, _Template | Literal[False]] = WeakKeyDictionary()

    def birth(self, seq: int, timestamp: int, last: dict[str, Reading]) -> bytes:
        """DBIRTH: every metric with its name, alias, datatype, current value (null when
        there is none yet), unit and quality."""
        payload = Payload()
        payload.timestamp, payload.seq = timestamp, seq
        self.placeholders = set()
        for name, spec in self.specs.items():
            reading = last.get(name)
            if self.datatypes.get(name) is None and (reading is None or reading.value is None):
                self.placeholders.add(name)  # a String until a value says
            metric = payload.metrics.add()
            metric.name, metric.alias = name, spec.alias
            datatype = self._datatype(name, reading.value if reading else None)
            metric.datatype = datatype
            metric.timestamp = _ms(reading.ts) if reading else timestamp
            ok = set_value(metric, datatype, reading.value if reading else None)
            code = self.codes.of(reading) if reading and ok else self.codes.bad
            properties = metric.properties
            if spec.unit is not None:
                properties.keys.append("engUnit")
                unit = properties.values.add()
                unit.type, unit.string_value = pb.String, spec.unit
            _quality(properties, code)
            if code != self.codes.good:
                # The next DATA says its quality, whatever came before: never less is said.
                self.not_good.add(name)
        return _serialized(payload)

    def data(self, seq: int, timestamp: int, samples: Sequence[Sample]) -> bytes | None:
        """DDATA: the samples' values that changed, by alias, each with its source timestamp,
        in the samples' order (chronological [tck-id-operational-behavior-data-publish-
        dbirth-order]); None when none changed."""
        payload = Payload()
        payload.timestamp, payload.seq = timestamp, seq
        sent = self.sent
        for sample in samples:
            if not isinstance(sample, Block):
                self._add_reading(payload, sample)
                continue
            points, values = sample.points, sample.values
            names = points.names
            if not self.not_good or self.not_good.isdisjoint(names):
                last = self._block_sent.get(points)
                if last is values:
                    continue  # the very list sent last time (a source's unchanged answer)
                if last is None:
                    changed = [i for i, v in enumerate(values) if sent.get(names[i], _NONE) != v]
                else:  # the same points' values as last sent: a comparison of two lists
                    changed = [
                        i for i, (v, w) in enumerate(zip(values, last, strict=True)) if v != w
                    ]
                if not changed:
                    continue
                whole = len(changed) == len(names)
                if self._add_block(payload, sample, None if whole else changed):
                    for i in changed:
                        sent[names[i]] = values[i]
                    self._block_sent[points] = values
                    continue
            else:
                changed = list(range(len(names)))
            readings = sample.readings()
            for i in changed:
                self._add_reading(payload, readings[i])
        return _serialized(payload) if payload.metrics else None

    def _add_reading(self, payload: Payload, reading: Reading) -> None:
        sent = self.sent
        if self._block_sent:
            self._block_sent.clear()  # a value sent on its own: compare by name again
        if (
            reading.quality == GOOD
            and reading.point not in self.not_good
            and reading.value is not None
            and sent.get(reading.point, _NONE) == reading.value
        ):
            return  # unchanged since it last went out
        spec = self.specs.get(reading.point)
        if spec is None:
            return
        metric = payload.metrics.add()
        metric.alias = spec.alias
        # The birth said the datatype: a DATA message does not repeat it
        # [tck-id-payloads-metric-datatype-not-req].
        datatype = self._datatype(reading.point, reading.value)
        metric.timestamp = _ms(reading.ts)
        ok = set_value(metric, datatype, reading.value)
        code = self.codes.of(reading) if ok else self.codes.bad
        if reading.value is not None:
            sent[reading.point] = reading.value
        if code != self.codes.good:
            _quality(metric.properties, code)
            self.not_good.add(reading.point)
        elif reading.point in self.not_good:
            _quality(metric.properties, code)
            self.not_good.discard(reading.point)

    def _add_block(self, payload: Payload, block: Block, only: list[int] | None) -> bool:
        """The fast lane: a block's good values (``only`` those at these indexes) into
        metrics made from a template made once per set of points (alias and value field),
        only the values and the timestamp set. False when the block cannot take it (a value
        of another type than its metric's): its values then go the general way."""
        template = self._templates.get(block.points)
        if template is None:
            template = self._templates[block.points] = self._template(block)
        if template is False:
            return False
        first = len(payload.metrics)
        metrics = payload.metrics
        values, fields, masks = block.values, template.fields, template.masks
        ranges = template.ranges
        ts = _ms(block.ts)
        try:
            if only is None:
                payload.MergeFrom(template.payload)
                for i, value, field, mask, (low, high) in zip(
                    range(first, len(metrics)), values, fields, masks, ranges, strict=True
                ):
                    if not low <= value <= high:  # out of the type's range, NaN, infinite
                        raise ValueError(value)
                    metric = metrics[i]
                    metric.timestamp = ts
                    # A float where an integer belongs raises: the block goes the general way.
                    setattr(metric, field, value & mask if mask else value)  # type: ignore[operator]
            else:  # some of them: each metric made with its alias and timestamp
                add, aliases = metrics.add, template.aliases
                for i in only:
                    value = values[i]
                    low, high = ranges[i]
                    if not low <= value <= high:
                        raise ValueError(value)
                    mask = masks[i]
                    metric = add(alias=aliases[i], timestamp=ts)
                    setattr(metric, fields[i], value & mask if mask else value)  # type: ignore[operator]
        except (TypeError, ValueError, OverflowError):
            del metrics[first:]
            return False
        return True

    def _template(self, block: Block) -> _Template | Literal[False]:
        payload = Payload()
        aliases: list[int] = []
        fields: list[str] = []
        masks: list[int] = []
        ranges: list[tuple[float, float]] = []
        for name, value in zip(block.points.names, block.values, strict=True):
            spec = self.specs.get(name)
            if spec is None:
                return False
            datatype = self._datatype(name, value)
            field = _FIELDS.get(datatype)
            if field is None:
                return False
            payload.metrics.add().alias = spec.alias
            aliases.append(spec.alias)
            fields.append(field)
            floating = field in ("double_value", "float_value")
            masks.append(0 if floating else _MASKS.get(datatype, 0xFFFFFFFFFFFFFFFF))
            ranges.append(_FLOAT_RANGES.get(datatype) or _RANGES[datatype])
        return _Template(payload, tuple(aliases), tuple(fields), tuple(masks), tuple(ranges))

    def _datatype(self, name: str, value: Value | None) -> int:
        datatype = self.datatypes.get(name)
        if datatype is None:
            datatype = datatype_of(value)
            if value is not None:  # decided once, by the first value
                self.datatypes[name] = datatype
                self.decided.append(name)
        return datatype


def with_seq(payload: bytes, seq: int) -> bytes:
    """``payload`` with its ``seq`` set, without decoding it: a DATA message is stored in the
    buffer before it has a place in the session's sequence, and gets one when it is sent.
    Two serialized protobuf messages one after the other parse as their merge, and a scalar
    field takes its last value: a message of only the seq is appended."""
    return payload + _serialized(Payload(seq=seq))


def as_historical(payload: bytes, aliases: Container[int]) -> bytes:
    """A DATA message sent from the backlog: every metric marked ``is_historical``, so a host
    stores it without taking it for the current value. Metrics whose alias is not in
    ``aliases`` (the device's birth: a point the map no longer has, or has with another type)
    are left out: no birth would resolve them."""
    message = Payload.FromString(payload)
    metrics = message.metrics
    if not all(metric.alias in aliases for metric in metrics):
        kept = [metric for metric in metrics if metric.alias in aliases]
        del metrics[:]
        metrics.extend(kept)
    for metric in metrics:
        metric.is_historical = True
    return _serialized(message)


def metric_value(metric: Metric, datatype: int) -> Scalar:
    """A command metric's value as the point's datatype reads it (signed integers from
    two's complement at their width); ``ValueError`` when it holds none, or another kind."""
    which = metric.WhichOneof("value")
    if metric.is_null or which is None:
        raise ValueError("the metric has no value")
    if datatype == pb.Boolean and which == "boolean_value":
        return bool(metric.boolean_value)
    if datatype in _MASKS and which == "int_value":
        return _signed(metric.int_value, datatype)
    if datatype in (pb.Int64, pb.UInt64) and which == "long_value":
        return _signed(metric.long_value, datatype)
    if datatype == pb.Float and which == "float_value":
        return float(metric.float_value)
    if datatype in (pb.Float, pb.Double) and which == "double_value":
        return float(metric.double_value)
    if datatype in (pb.String, pb.Text) and which == "string_value":
        return str(metric.string_value)
    name = pb.DataType.Name(datatype) if datatype in pb.DataType.values() else str(datatype)
    raise ValueError(f"a {which} for a {name} metric")


_SIGNED_BITS: dict[int, int] = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}


def _signed(number: int, datatype: int) -> int:
    """Two's complement at the type's width: Tahu's Python writes an Int16 -5 as 65531, its
    Java (and so Ignition) sign-extends it to 32 bits, 4294967291; both read -5."""
    bits = _SIGNED_BITS.get(datatype)
    if bits is None:
        return int(number)
    number &= (1 << bits) - 1
    return number - (1 << bits) if number >= 1 << (bits - 1) else number


def command_metrics(payload: bytes) -> list[Metric]:
    """The metrics of an NCMD or DCMD; ``ValueError`` for a payload that is not Sparkplug."""
    try:
        return list(Payload.FromString(payload).metrics)
    except DecodeError:
        raise ValueError("not a Sparkplug payload") from None


REBIRTH = "Node Control/Rebirth"
NEXT_SERVER = "Node Control/Next Server"


def asks_rebirth(payload: bytes) -> bool:
    """Whether an NCMD asks for a rebirth (``Node Control/Rebirth`` true); False for
    anything else, including a payload that is not a Sparkplug payload."""
    return _node_control(payload, REBIRTH)


def asks_next_server(payload: bytes) -> bool:
    """Whether an NCMD asks the node to move to its next MQTT server (``Node Control/Next
    Server`` true)."""
    return _node_control(payload, NEXT_SERVER)


def _node_control(payload: bytes, name: str) -> bool:
    try:
        message = Payload.FromString(payload)
    except DecodeError:
        return False
    return any(m.name == name and m.boolean_value for m in message.metrics)


def device_death(seq: int, timestamp: int) -> bytes:
    payload = Payload()
    payload.timestamp, payload.seq = timestamp, seq
    return _serialized(payload)


def _quality(properties: pb.Payload.PropertySet, code: int) -> None:
    properties.keys.append("Quality")
    value = properties.values.add()
    value.type = pb.Int32
    value.int_value = code & 0xFFFFFFFF


def _serialized(payload: Payload) -> bytes:
    data: bytes = payload.SerializeToString()
    return data


def _ms(ts: float) -> int:
    return round(ts * 1000)
