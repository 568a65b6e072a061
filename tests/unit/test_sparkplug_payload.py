"""Sparkplug B payloads, decoded by an independent implementation (pysparkplug): every type,
aliases resolved through the birth, quality as Ignition reads it, NDEATH's bdSeq."""

from __future__ import annotations

import math

import pysparkplug as ps
import pytest

from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.payload import (
    QUALITY_BAD,
    QUALITY_CODES,
    QUALITY_GOOD,
    QUALITY_LAST_KNOWN,
    VALUE_TYPES,
    DeviceMetrics,
    MetricSpec,
    as_historical,
    device_death,
    metric_value,
    node_birth,
    node_death,
    with_seq,
)
from gateway.model import BAD, GOOD, UNCERTAIN, Block, Points, Reading, Value

T0 = 1_800_000_000.123  # seconds

# (value type of the model, a value, what the independent decoder gives back)
CASES: list[tuple[str, Value, object]] = [
    ("bool", True, True),
    ("int8", -100, -100),
    ("int16", -32768, -32768),
    ("int32", -2_000_000_000, -2_000_000_000),
    ("int64", -9_000_000_000_000, -9_000_000_000_000),
    ("uint8", 255, 255),
    ("uint16", 65000, 65000),
    ("uint32", 4_000_000_000, 4_000_000_000),
    ("uint64", 12345678901234567890, 12345678901234567890),
    ("float32", 21.5, 21.5),
    ("float64", math.pi, math.pi),
    ("string", "PRESS-A", "PRESS-A"),
    ("int16[]", [-1, 2, 300], (-1, 2, 300)),
    ("float64[]", [0.5, -2.25], (0.5, -2.25)),
    (
        "bool[]",
        [True, False, True, True, False, False, False, False, True],
        (True, False, True, True, False, False, False, False, True),
    ),
    ("string[]", ["a", "bc"], ("a", "bc")),
]


def _device(cases: list[tuple[str, Value, object]]) -> DeviceMetrics:
    specs = [
        MetricSpec(f"p{i}", 100 + i, VALUE_TYPES[kind], "bar" if i == 0 else None)
        for i, (kind, _, _) in enumerate(cases)
    ]
    return DeviceMetrics(specs)


def _properties(metric: pb.Payload.Metric) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in zip(metric.properties.keys, metric.properties.values, strict=True):
        which = value.WhichOneof("value")
        out[key] = getattr(value, which) if which else None
    return out


def _signed32(value: object) -> int:
    assert isinstance(value, int)
    return value - 2**32 if value >= 2**31 else value


def test_every_type_survives_birth_and_data_decoded_by_another_implementation() -> None:
    metrics = _device(CASES)
    last = {f"p{i}": Reading("d", f"p{i}", v, GOOD, T0) for i, (_, v, _) in enumerate(CASES)}
    birth = ps.DBirth.decode(metrics.birth(3, 1_800_000_000_500, last))
    assert birth.seq == 3 and birth.timestamp == 1_800_000_000_500
    by_name = {m.name: m for m in birth.metrics}
    for i, (kind, _, expected) in enumerate(CASES):
        metric = by_name[f"p{i}"]
        assert metric.alias == 100 + i
        assert int(metric.datatype) == VALUE_TYPES[kind], kind
        assert metric.timestamp == 1_800_000_000_123
        if expected is not None:
            value = metric.value
            assert (tuple(value) if isinstance(value, list | tuple) else value) == expected, kind

    changed = [Reading("d", "p1", 7, GOOD, T0 + 1), Reading("d", "p9", -1.5, GOOD, T0 + 1)]
    data = ps.DData.decode(metrics.data(4, 1_800_000_001_000, changed), birth=birth)
    assert data.seq == 4
    assert [(m.name, m.value, m.timestamp) for m in data.metrics] == [
        ("p1", 7, 1_800_000_001_123),
        ("p9", -1.5, 1_800_000_001_123),
    ]


def test_boolean_arrays_are_packed_as_the_specification_says() -> None:
    # A 4-byte little-endian count, then the bits, most significant first.
    metrics = DeviceMetrics([MetricSpec("flags", 1, pb.BooleanArray)])
    flags: Value = [True, False, True, True, False, False, False, False, True]
    payload = pb.Payload.FromString(metrics.data(0, 0, [Reading("d", "flags", flags, GOOD, T0)]))
    assert payload.metrics[0].bytes_value == bytes([9, 0, 0, 0, 0b10110000, 0b10000000])


def test_quality_is_a_property_in_ignitions_codes_sent_while_not_good() -> None:
    metrics = DeviceMetrics([MetricSpec("t", 1, pb.Double, "degC")])
    birth = pb.Payload.FromString(metrics.birth(0, 0, {}))  # no value yet: null, bad
    (metric,) = birth.metrics
    assert metric.is_null and _properties(metric) == {
        "engUnit": "degC",
        "Quality": QUALITY_BAD & 0xFFFFFFFF,
    }
    steps = [
        (Reading("d", "t", 20.0, GOOD, T0), QUALITY_GOOD),  # was bad: good is said once
        (Reading("d", "t", 20.5, GOOD, T0), None),  # good, and was good: nothing said
        (Reading("d", "t", 20.5, UNCERTAIN, T0, None, "stale"), QUALITY_LAST_KNOWN),
        (Reading("d", "t", None, BAD, T0, None, "timeout"), QUALITY_BAD),
    ]
    for reading, expected in steps:
        (sent,) = pb.Payload.FromString(metrics.data(1, 0, [reading])).metrics
        quality = _properties(sent).get("Quality")
        assert (None if quality is None else _signed32(quality)) == expected
    assert sent.is_null


def test_a_value_of_another_type_than_the_points_is_null_and_bad() -> None:
    metrics = DeviceMetrics([MetricSpec("n", 1, pb.Int16)])
    for value in (70000, 1.5, "x"):
        (metric,) = pb.Payload.FromString(
            metrics.data(0, 0, [Reading("d", "n", value, GOOD, T0)])
        ).metrics
        assert metric.is_null and _signed32(_properties(metric)["Quality"]) == QUALITY_BAD


def test_a_point_without_a_declared_type_takes_its_first_values() -> None:
    metrics = DeviceMetrics([MetricSpec("v", 1, None)])
    birth = pb.Payload.FromString(metrics.birth(0, 0, {"v": Reading("d", "v", 3, GOOD, T0)}))
    # [tck-id-payloads-metric-datatype-req]: every birth metric has its datatype.
    assert birth.metrics[0].datatype == pb.Int64
    (later,) = pb.Payload.FromString(metrics.data(1, 0, [Reading("d", "v", 4, GOOD, T0)])).metrics
    # DATA messages leave the datatype to the birth [tck-id-payloads-metric-datatype-not-req].
    assert not later.HasField("datatype") and later.long_value == 4


def test_node_birth_and_death_carry_the_same_bd_seq() -> None:
    birth = ps.NBirth.decode(node_birth(7, 1_800_000_000_000))
    death = ps.NDeath.decode(node_death(7))
    assert birth.seq == 0
    names = {m.name: m for m in birth.metrics}
    assert names["bdSeq"].value == 7 and int(names["bdSeq"].datatype) == pb.Int64
    assert names["Node Control/Rebirth"].value is False
    assert death.bd_seq_metric.name == "bdSeq" and death.bd_seq_metric.value == 7
    assert ps.DDeath.decode(device_death(9, 5)).seq == 9


@pytest.mark.parametrize("kind", sorted(VALUE_TYPES))
def test_every_value_type_has_a_sparkplug_datatype(kind: str) -> None:
    assert pb.DataType.Name(VALUE_TYPES[kind])


def test_a_stored_data_message_gets_its_seq_when_sent() -> None:
    metrics = DeviceMetrics([MetricSpec("t", 1, pb.Double)])
    birth = ps.DBirth.decode(metrics.birth(0, 0, {"t": Reading("d", "t", 1.0, GOOD, T0)}))
    stored = metrics.data(0, 5, [Reading("d", "t", 2.0, GOOD, T0)])
    for seq in (1, 127, 128, 255):
        assert ps.DData.decode(with_seq(stored, seq), birth=birth).seq == seq
    # Sent again later (a new session): the last seq given wins.
    assert ps.DData.decode(with_seq(with_seq(stored, 3), 4), birth=birth).seq == 4


def test_the_specifications_quality_codes_on_request() -> None:
    """sparkplug.quality_codes: specification: 0 bad, 192 good, 500 stale (also for an
    uncertain value: the specification has no other code)
    [tck-id-payloads-propertyset-quality-value-value]."""
    metrics = DeviceMetrics([MetricSpec("t", 1, pb.Double)], QUALITY_CODES["specification"])
    (born,) = pb.Payload.FromString(metrics.birth(0, 0, {})).metrics
    assert _properties(born)["Quality"] == 0
    steps = [
        (Reading("d", "t", 20.0, GOOD, T0), 192),
        (Reading("d", "t", 20.0, UNCERTAIN, T0, None, "stale"), 500),
        (Reading("d", "t", 21.0, UNCERTAIN, T0, None, "clamped"), 500),
        (Reading("d", "t", None, BAD, T0, None, "timeout"), 0),
    ]
    for reading, expected in steps:
        (sent,) = pb.Payload.FromString(metrics.data(1, 0, [reading])).metrics
        assert _properties(sent)["Quality"] == expected, reading


def test_a_birth_takes_no_value_off_the_data_messages() -> None:
    """A birth is made at send time and may never go out (the host offline, the connection
    lost); the DATA messages are durable: every change of a value is in one of them."""
    metrics = DeviceMetrics([MetricSpec("a", 1, pb.Double), MetricSpec("b", 2, pb.Double)])
    first = {n: Reading("d", n, 1.0, GOOD, T0) for n in ("a", "b")}
    metrics.birth(0, 0, first)  # with the values of the batch that follows
    data = pb.Payload.FromString(metrics.data(1, 0, list(first.values())))
    assert [(m.alias, m.double_value) for m in data.metrics] == [(1, 1.0), (2, 1.0)]


def test_a_backlog_message_is_historical_in_every_metric() -> None:
    metrics = DeviceMetrics([MetricSpec("a", 1, pb.Double), MetricSpec("b", 2, pb.Int16)])
    births = {n: Reading("d", n, 1, GOOD, T0) for n in ("a", "b")}
    birth = ps.DBirth.decode(metrics.birth(0, 0, births))
    stored = metrics.data(1, 5, [Reading("d", "a", 2.0, GOOD, T0), Reading("d", "b", 3, GOOD, T0)])
    data = ps.DData.decode(with_seq(as_historical(stored, {1, 2}), 9), birth=birth)
    assert [(m.name, m.value, m.is_historical) for m in data.metrics] == [
        ("a", 2.0, True),
        ("b", 3, True),
    ]
    assert data.seq == 9
    # A point the map no longer has (its alias is in no birth) is left out.
    kept = pb.Payload.FromString(as_historical(stored, {2}))
    assert [(m.alias, m.int_value, m.is_historical) for m in kept.metrics] == [(2, 3, True)]


def test_blocks_take_the_fast_lane_and_say_the_same_as_readings() -> None:
    specs = [
        MetricSpec("a", 1, pb.Double),
        MetricSpec("b", 2, pb.Int16),
        MetricSpec("c", 3, pb.UInt32),
    ]
    points = Points(("a", "b", "c"), (None, None, None))
    block = Block("d", points, [1.5, -7, 4_000_000_000], T0)
    fast, slow = DeviceMetrics(specs), DeviceMetrics(specs)
    by_block = pb.Payload.FromString(fast.data(1, 5, [block]))
    by_readings = pb.Payload.FromString(slow.data(1, 5, block.readings()))
    assert by_block == by_readings
    birth = ps.DBirth.decode(fast.birth(0, 0, {r.point: r for r in block.readings()}))
    # The same values again: nothing changed, no DDATA [...-data-publish-dbirth-change].
    assert fast.data(0, 5, [block]) is None
    # One value changed: only it goes out.
    moved = Block("d", points, [1.5, -8, 4_000_000_000], T0 + 1)
    stored = fast.data(0, 5, [moved])
    assert stored is not None
    decoded = ps.DData.decode(with_seq(stored, 1), birth=birth)
    assert [(m.name, m.value) for m in decoded.metrics] == [("b", -8)]
    assert stored == slow.data(0, 5, moved.readings())  # the same bytes as the general way
    # All changed: the whole block, by the fast lane.
    third = Block("d", points, [2.5, 9, 1], T0 + 2)
    stored = fast.data(0, 5, [third])
    assert stored is not None
    decoded = ps.DData.decode(with_seq(stored, 2), birth=birth)
    assert [(m.name, m.value) for m in decoded.metrics] == [("a", 2.5), ("b", 9), ("c", 1)]


def test_a_block_the_fast_lane_cannot_take_goes_the_general_way() -> None:
    metrics = DeviceMetrics([MetricSpec("a", 1, pb.Int16), MetricSpec("b", 2, pb.Double)])
    points = Points(("a", "b"), (None, None))
    # A float where the metric is an integer: null and bad, the other value as it is.
    payload = pb.Payload.FromString(metrics.data(0, 0, [Block("d", points, [1.5, 2.0], T0)]))
    assert payload.metrics[0].is_null and payload.metrics[1].double_value == 2.0
    # Not good before: the good value says Quality once, then the fast lane again.
    again = pb.Payload.FromString(metrics.data(0, 0, [Block("d", points, [3, 2.0], T0)]))
    assert _signed32(_properties(again.metrics[0])["Quality"]) == QUALITY_GOOD
    later = pb.Payload.FromString(metrics.data(0, 0, [Block("d", points, [4, 2.5], T0)]))
    assert not later.metrics[0].HasField("properties") and later.metrics[0].int_value == 4


def test_the_fast_lane_refuses_what_the_general_path_refuses_and_keeps_the_order() -> None:
    metrics = DeviceMetrics(
        [MetricSpec("a", 1, pb.Int16), MetricSpec("b", 2, pb.Double), MetricSpec("c", 3, pb.UInt16)]
    )
    first = Block("d", Points(("a",), (None,)), [70000], T0)  # beyond int16
    second = Block("d", Points(("b",), (None,)), [float("nan")], T0 + 1)
    third = Block("d", Points(("c",), (None,)), [-1], T0 + 2)  # below uint16
    fourth = Block("d", Points(("a", "b"), (None, None)), [5, 1.5], T0 + 3)
    payload = pb.Payload.FromString(metrics.data(0, 0, [first, second, third, fourth]) or b"")
    # In the samples' order [tck-id-operational-behavior-data-publish-dbirth-order]; the three
    # impossible values null and bad, as the general path makes them.
    assert [(m.alias, m.timestamp) for m in payload.metrics] == [
        (1, 1_800_000_000_123), (2, 1_800_000_001_123), (3, 1_800_000_002_123),
        (1, 1_800_000_003_123), (2, 1_800_000_003_123),
    ]  # fmt: skip
    assert [m.is_null for m in payload.metrics] == [True, True, True, False, False]


def test_command_integers_read_in_both_of_their_encodings() -> None:
    for raw in (65531, 4294967291):  # Tahu's Python, and sign-extended as Java writes it
        metric = pb.Payload.Metric(int_value=raw)
        assert metric_value(metric, pb.Int16) == -5
    assert metric_value(pb.Payload.Metric(int_value=65531), pb.UInt16) == 65531
    assert metric_value(pb.Payload.Metric(long_value=2**64 - 1), pb.Int64) == -1
    assert metric_value(pb.Payload.Metric(double_value=2.5), pb.Float) == 2.5
    with pytest.raises(ValueError):
        metric_value(pb.Payload.Metric(string_value="x"), pb.Int16)
