"""The fast lane: whole-request decoding and block encoding give exactly what the per-point path
gives (the per-point codecs and ``encode_reading`` are the reference)."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.modbus.block import RequestDecoder
from adapters.modbus.config import ModbusTcpDevice
from adapters.modbus.decode import Float32s, PointCodec, encode
from adapters.modbus.plan import plan_device
from gateway.delivery.encode_json import JsonEncoder, encode_batch, encode_reading, split_by_point
from gateway.floats import shortest_float32
from gateway.model import GOOD, Block, Points, Reading, Sample, expand
from gateway.topics import Topics

TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def _device(points: list[dict[str, Any]], **extra: Any) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {"id": "d1", "line": "l1", "protocol": "modbus-tcp", "host": "127.0.0.1",
         "points": points, **extra}
    )  # fmt: skip


def _decoders(device: ModbusTcpDevice) -> list[RequestDecoder]:
    codecs = {
        p.name: PointCodec(p, device.byte_order_of(p), device.word_order_of(p))
        for p in device.points
    }
    return [
        RequestDecoder(device.id, request, group.interval, codecs)
        for group in plan_device(device)
        for request in group.requests
    ]


def _image(device: ModbusTcpDevice, rng: random.Random) -> bytearray:
    """A register image holding a random value of each point's type."""
    image = bytearray(rng.randbytes(2 * 1000))
    for point in device.points:
        kind = point.data_type
        if kind.startswith("float"):
            value: float = rng.uniform(-1e6, 1e6)
        else:
            bits = int(kind[-2:]) if kind[-2:].isdigit() else 16
            low = -(2 ** (bits - 1)) if kind.startswith("int") else 0
            value = rng.randint(low, low + 2**bits - 1)
        raw = encode(value, kind, device.byte_order_of(point), device.word_order_of(point))
        start = 2 * device.address_of(point)
        image[start : start + len(raw)] = raw
    return image


def _reference(device: ModbusTcpDevice, image: bytes) -> dict[str, Any]:
    out = {}
    for point in device.points:
        codec = PointCodec(point, device.byte_order_of(point), device.word_order_of(point))
        start = 2 * device.address_of(point)
        out[point.name] = codec.decode(image[start : start + 2 * point.width])
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(TYPES), min_size=1, max_size=30))
def test_block_decoding_matches_the_point_codecs(seed: int, types: list[str]) -> None:
    rng = random.Random(seed)
    points, address = [], 0
    for n, kind in enumerate(types):
        address += rng.choice((0, 0, 1, 3, 20))  # contiguous, small gaps, a gap read through
        point: dict[str, Any] = {"name": f"p{n}", "table": "holding", "address": address}
        point["type"] = kind
        if rng.random() < 0.3:
            point["scale"] = rng.choice((0.1, 0.5, 2, 0.01))
            point["offset"] = rng.choice((0, -40, 1.5))
        if rng.random() < 0.1:
            point["word_order"] = "little"  # not the fast layout: that request decodes per point
        points.append(point)
        address += 4 if kind.endswith("64") else (2 if kind.endswith("32") else 1)
    device = _device(points)
    image = bytes(_image(device, rng))
    expected = _reference(device, image)
    got: dict[str, Any] = {}
    for decoder in _decoders(device):
        request = decoder.request
        out: list[Sample] = []
        decoder.decode(image[2 * request.start : 2 * (request.start + request.count)], 1.0, out)
        for reading in expand(out):
            got[reading.point] = (reading.value, reading.quality, reading.reason)
        if decoder.fast:
            assert len(out) == 1 and isinstance(out[0], Block)
    assert got == expected


def test_a_request_with_an_enum_bit_or_string_decodes_per_point() -> None:
    device = _device(
        [
            {"name": "a", "table": "holding", "address": 0, "type": "int16"},
            {"name": "mode", "table": "holding", "address": 1, "type": "uint16",
             "enum": {0: "off", 1: "on"}},
        ]
    )  # fmt: skip
    (decoder,) = _decoders(device)
    assert not decoder.fast
    out: list[Sample] = []
    decoder.decode(struct.pack(">hH", -5, 1), 2.0, out)
    values = [(r.point, r.value) for r in out if isinstance(r, Reading)]
    assert values == [("a", -5), ("mode", "on")]


def test_a_nan_or_infinite_float_is_a_bad_reading_and_the_others_stay_good() -> None:
    device = _device(
        [
            {"name": "a", "table": "holding", "address": 0, "type": "float32"},
            {"name": "b", "table": "holding", "address": 2, "type": "float32"},
            {"name": "c", "table": "holding", "address": 4, "type": "int16", "scale": 0.5},
        ]
    )
    (decoder,) = _decoders(device)
    assert decoder.fast
    for bad, reason in [(math.nan, "not a number (NaN)"), (-math.inf, "infinite value (-inf)")]:
        out: list[Sample] = []
        decoder.decode(struct.pack(">ffh", 1.5, bad, 7), 1.0, out)
        got = [(r.point, r.value, r.quality, r.reason) for r in expand(out)]
        assert got == [
            ("a", 1.5, "good", None),
            ("b", None, "bad", reason),
            ("c", 3.5, "good", None),
        ]
    out = []
    decoder.decode(struct.pack(">ffh", 1.5, 2.5, 7), 2.0, out)  # finite again: the fast lane
    assert isinstance(out[0], Block) and out[0].values == [1.5, 2.5, 3.5]


def test_an_unchanged_answer_reuses_the_values_and_a_failure_forgets_them() -> None:
    device = _device([{"name": "a", "table": "holding", "address": 0, "type": "float32"}])
    (decoder,) = _decoders(device)
    raw = struct.pack(">f", 12.3)
    first: list[Sample] = []
    decoder.decode(raw, 1.0, first)
    again: list[Sample] = []
    decoder.decode(bytes(raw), 2.0, again)
    assert isinstance(first[0], Block) and isinstance(again[0], Block)
    assert first[0].values == again[0].values == [12.3]
    assert (again[0].ts, decoder.last_ts) == (2.0, 2.0)
    decoder.forget()
    assert decoder.last_ts is None and not decoder.last_values


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=4, max_size=4))
@example(b"\x00\x00\x00\x01")  # the smallest subnormal: 1e-45, not 1.401298e-45
@example(b"\x7f\x7f\xfa\x00")  # near the largest float32: rounding to 4 digits overflows
def test_shortest_float32_is_the_same_float32_in_few_digits(raw: bytes) -> None:
    value = struct.unpack(">f", raw)[0]
    got = shortest_float32(value)
    if value != value:
        assert got != got
        return
    assert struct.pack(">f", got) == raw  # exactly the same float32
    # As short as the first precision that round-trips, or at most one digit more.
    digits = next(d for d in range(1, 10) if _packs_to(float(f"{value:.{d}g}"), raw))
    assert len(repr(got)) <= len(repr(float(f"{value:.{digits}g}"))) + 1


def _packs_to(value: float, raw: bytes) -> bool:
    """``value`` as a float32 is ``raw`` (rounding near the largest float32 may overflow)."""
    try:
        return struct.pack(">f", value) == raw
    except OverflowError:
        return False


_float32 = st.binary(min_size=4, max_size=4).map(lambda raw: struct.unpack(">f", raw)[0])
_special = st.sampled_from(
    [0.0, -0.0, 1.401298464324817e-45, 3.4028234663852886e38, float("inf"), 0.1, 21.5]
).map(lambda v: struct.unpack(">f", struct.pack(">f", v))[0])


@settings(max_examples=500, deadline=None)
@given(st.lists(_float32 | _special, min_size=1, max_size=60), st.data())
def test_float32s_of_a_block_are_each_one_s_shortest_decimal(
    values: list[float], data: st.DataObject
) -> None:
    """The block path gives exactly what ``shortest_float32`` gives value by value, whatever
    else (other types' values, subnormals, values at the float32 range) shares the block."""
    indices = sorted(data.draw(st.sets(st.integers(0, len(values) - 1), min_size=1)))
    block: list[int | float] = [7] * len(values)
    for i in indices:
        block[i] = values[i]
    Float32s(len(indices)).apply(block, indices)
    for i in range(len(values)):
        if i not in indices:
            assert block[i] == 7
            continue
        expected = shortest_float32(values[i])
        assert repr(block[i]) == repr(expected)


def _block() -> Block:
    points = Points(("t%1", "speed", 'q"x'), ("°C", None, "m/s"))
    return Block("press-1", points, [21.5, 1200, -0.001], 1_790_000_000.125)


def test_a_device_batch_of_blocks_is_the_batch_of_their_readings() -> None:
    block = _block()
    other = Reading("press-1", "state", "bad", "bad", 1_790_000_000.2, None, "timeout")
    gw_ts = "2026-11-22T10:00:00.300Z"
    fast = encode_batch([block, other], 9, gw_ts)
    slow = encode_batch([*block.readings(), other], 9, gw_ts)
    assert fast == slow
    assert orjson.loads(fast)["points"]["t%1"] == {
        "value": 21.5, "quality": GOOD, "ts": "2026-09-21T14:13:20.125Z", "unit": "°C"
    }  # fmt: skip


def test_per_point_messages_of_a_block_are_those_of_its_readings() -> None:
    point = {"name": "x", "table": "holding", "address": 0, "type": "int16"}
    press = _device([point], id="press-1")
    topics = Topics("{enterprise}/{line}/{device}/{point}", _gateway(), [press])
    sent: list[tuple[str, bytes]] = []

    class Buffer:
        seq = 0

        def take_seq(self) -> int:
            self.seq += 1
            return self.seq

        def add(self, record: Any) -> None:
            sent.append((record.topic, record.payload))

    block = _block()
    JsonEncoder(topics, Buffer()).send([block])
    gw_ts = orjson.loads(sent[0][1])["gw_ts"]
    expected = [
        (topics.point(r.device, r.point), encode_reading(r, n, gw_ts))
        for n, r in enumerate(block.readings(), start=1)
    ]
    assert sent == expected


def _gateway() -> Any:
    from gateway.config.schema import GatewaySection

    return GatewaySection.model_validate(
        {"id": "gw", "hierarchy": {"enterprise": "acme", "site": "s", "area": "a"}}
    )


def test_split_by_point_keeps_a_poll_whole_and_splits_repeated_readings() -> None:
    block = _block()
    once = Reading("press-1", "state", 1, GOOD, 1.0)
    assert split_by_point([block, once]) == [[block, once]]
    twice = [once, Reading("press-1", "state", 2, GOOD, 2.0)]
    assert [[r.value for r in group] for group in split_by_point(twice)] == [[1], [2]]  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["int16", "uint32", "float64"])
def test_block_values_are_plain_numbers(kind: str) -> None:
    device = _device([{"name": "a", "table": "input", "address": 0, "type": kind}])
    (decoder,) = _decoders(device)
    out: list[Sample] = []
    decoder.decode(encode(7, kind, "big", "big"), 1.0, out)  # type: ignore[arg-type]
    assert isinstance(out[0], Block) and out[0].values == [7]
