"""Commands without a network: payload parsing, the map's limits, each adapter's value checks,
command topics, and the router under thousands of random messages (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import struct
import time
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
import structlog.testing
from asyncua import ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.modbus.config import POINT, ModbusTcpDevice
from adapters.modbus.decode import PointCodec
from adapters.modbus.write import command_value
from adapters.opcua.write import expected_value, to_variant
from gateway.commands.channel import MAX_ANSWERS, CommandChannel
from gateway.commands.execute import REFUSED, WRITTEN, Result, execute, same
from gateway.commands.intake import Intake
from gateway.commands.request import MAX_PAYLOAD, Incoming, check_limits, parse
from gateway.commands.router import CommandRouter, RateLimit
from gateway.config.schema import GatewaySection, Hierarchy, PointConfig
from gateway.errors import CommandError, DeviceError, DeviceTimeout
from gateway.model import GOOD, Reading, Scalar
from gateway.mqtt.client import Server, Settings
from gateway.source import CONNECTED, DISCONNECTED, WriteOutcome
from gateway.topics import Topics
from tests.helpers import ROOT

RESULT_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "command-result.schema.json").read_text())
RESULT = jsonschema.Draft202012Validator(RESULT_SCHEMA)  # built once: the fuzz validates thousands
GATEWAY = GatewaySection(id="gw", hierarchy=Hierarchy(enterprise="acme", site="s1", area="a1"))
PREFIX = "acme/s1/a1/line-1"

DEVICE = ModbusTcpDevice.model_validate(
    {
        "id": "plc",
        "line": "line-1",
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "write_rate_limit": 1e9,
        "points": [
            {"name": "sp", "table": "holding", "address": 0, "type": "float32", "scale": 0.1,
             "writable": True, "min": -50, "max": 150},
            {"name": "count", "table": "holding", "address": 2, "type": "int16", "writable": True},
            {"name": "mode", "table": "holding", "address": 3, "type": "uint16", "writable": True,
             "enum": {0: "off", 1: "auto"}},
            {"name": "recipe", "table": "holding", "address": 4, "type": "string", "length": 2,
             "writable": True, "allowed": ["A1", "B2"]},
            {"name": "run", "table": "coil", "address": 0, "writable": True},
            {"name": "temp", "table": "holding", "address": 10, "type": "float32"},
            {"name": "alarm", "table": "coil", "address": 1},
        ],
    }
)  # fmt: skip
POINTS = {p.name: p for p in DEVICE.points}


def point(**keys: Any) -> PointConfig:
    return PointConfig(name="p", **keys)


# -- payloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": 12.5, "id": "a"}', ("a", 12.5)),
        (b'{"value": true}', (None, True)),
        (b'{"value": "auto", "id": 7}', (7, "auto")),
        (b"42", (None, 42)),
        (b'"manual"', (None, "manual")),
        (b'{"value": -3, "id": "x", "ts": "ignored"}', ("x", -3)),
    ],
)
def test_valid_payloads(payload: bytes, expected: tuple[Any, Any]) -> None:
    assert parse(payload)[:2] == expected


@pytest.mark.parametrize(
    ("payload", "error", "command_id"),
    [
        (b"{", "malformed JSON", None),
        (b"", "malformed JSON", None),
        (b"\xff\xfe", "malformed JSON", None),
        (b"NaN", "NaN is not a valid value (JSON numbers are finite)", None),
        (b'{"value": -Infinity, "id": "a"}', "-Infinity is not a valid value", None),
        (b"1e999", "value is not a finite number", None),
        (b'{"value": 1e999, "id": "a"}', "value is not a finite number", "a"),
        (b"null", "value is null", None),
        (b"[1, 2]", "value must be a number, true/false or a string", None),
        (b'{"id": "a"}', 'no "value" in the command', "a"),
        (b'{"value": {"x": 1}, "id": "b"}', "value must be a number", "b"),
        (b'{"value": 1, "id": [1]}', "id must be a string or a number", None),
        (b'{"value": 1, "id": true}', "id must be a string or a number", None),
        (b'{"value": 1, "id": "' + b"x" * 201 + b'"}', "id is longer than 200 characters", None),
        (b'"\\ud800"', "value is not valid Unicode text (it holds a lone surrogate)", None),
        (b'{"value": 1, "id": "\\udfff"}', "id is not valid Unicode text", None),
        (b"[" * 100_000, "payload too large", None),
        (b"[" * 4000, "malformed JSON", None),  # deep nesting: a clean error, no RecursionError
    ],
)
def test_bad_payloads(payload: bytes, error: str, command_id: Any) -> None:
    with pytest.raises(CommandError) as caught:
        parse(payload)
    assert str(caught.value).startswith(error), caught.value
    assert caught.value.command_id == command_id
    assert len(payload) <= MAX_PAYLOAD or "too large" in str(caught.value)


def test_limits_of_the_map() -> None:
    with pytest.raises(CommandError, match=r"^not writable$"):
        check_limits(point(), 1)
    ranged = point(writable=True, min=0, max=100)
    check_limits(ranged, 0)
    check_limits(ranged, 100.0)
    for value, error in [(101, "out of range [0, 100]"), (-0.5, "out of range [0, 100]"),
                         ("50", "expected a number"), (True, "expected a number")]:  # fmt: skip
        with pytest.raises(CommandError) as caught:
            check_limits(ranged, value)
        assert str(caught.value) == error
    with pytest.raises(CommandError, match=r"^out of range \[-inf, 5\]$"):
        check_limits(point(writable=True, max=5), 6)
    enum = point(writable=True, allowed=["auto", "manual", 1])
    check_limits(enum, "auto")
    check_limits(enum, 1)
    with pytest.raises(CommandError, match=r'^not allowed; allowed: \["auto", "manual", 1\]$'):
        check_limits(enum, True)  # true is not 1 for a command


def test_limits_need_writable() -> None:
    with pytest.raises(ValueError, match="min limits what commands write: add writable: true"):
        point(min=0)
    with pytest.raises(ValueError, match=r"max \(1\) is below min \(2\)"):
        point(writable=True, min=2, max=1)


# -- adapters' value checks ------------------------------------------------------------------


def _modbus(name: str, value: Scalar) -> Scalar:
    spec = POINTS[name]
    return command_value(spec, PointCodec(spec, "big", "big"), value)


def test_modbus_values() -> None:
    assert _modbus("sp", 12) == 12.0
    assert _modbus("count", -32768) == -32768
    assert _modbus("count", 5.0) == 5
    assert _modbus("mode", "auto") == "auto"
    assert _modbus("mode", 0) == "off"
    assert _modbus("run", 1) is True
    assert _modbus("recipe", "B2") == "B2"
    for name, value, error in [
        ("count", 32768, "out of range for int16 [-32768, 32767]"),
        ("count", 1.5, "expected an integer (int16)"),
        ("count", "5", "expected a number"),
        ("count", False, "expected a number"),
        ("sp", 1e39, "out of range for float32"),
        ("mode", "turbo", "expected one of ['auto', 'off']"),
        ("mode", 7, "expected one of ['auto', 'off']"),
        ("run", 2, "expected true or false"),
        ("run", "true", "expected true or false"),
        ("recipe", "ABCDE", "too long: at most 4 bytes of UTF-8"),
        ("recipe", 12, "expected a string"),
    ]:
        with pytest.raises(CommandError) as caught:
            _modbus(name, value)
        assert str(caught.value) == error, (name, value)


def test_values_too_large_for_any_float_are_refused_clearly() -> None:
    scaled = ModbusTcpDevice.model_validate(
        {"id": "p", "line": "l", "protocol": "modbus-tcp", "host": "h", "points": [
            {"name": "a", "table": "holding", "address": 0, "type": "int16", "scale": 0.1,
             "writable": True},
            {"name": "b", "table": "holding", "address": 1, "type": "float32", "scale": 10,
             "writable": True}]}
    ).points  # fmt: skip
    for point, error in [(scaled[0], "out of range for int16 [-3276.8, 3276.7]"),
                         (scaled[1], "out of range for float32")]:  # fmt: skip
        for value in (1e308, -1e308, 10**400):
            with pytest.raises(CommandError) as caught:
                command_value(point, PointCodec(point, "big", "big"), value)
            assert str(caught.value) == error
    for vtype in (ua.VariantType.Double, ua.VariantType.Float, ua.VariantType.Int64):
        with pytest.raises(CommandError, match=r"^out of range for"):
            to_variant(10**400, vtype)


def test_modbus_scaled_integer_range_is_in_engineering_units() -> None:
    spec = POINT.validate_python(
        {"name": "p", "table": "holding", "address": 0, "type": "int16", "scale": 0.1,
         "writable": True}
    )  # fmt: skip
    codec = PointCodec(spec, "big", "big")
    assert command_value(spec, codec, 3276.7) == 3276.7
    with pytest.raises(CommandError, match=r"^out of range for int16 \[-3276.8, 3276.7\]$"):
        command_value(spec, codec, 3276.8)
    # The registers get the inverse of the scaling, rounded to the raw type.
    assert codec.encode(12.34) == struct.pack(">h", 123)


def test_modbus_read_only_tables_cannot_be_writable() -> None:
    with pytest.raises(ValueError, match="table input is read-only in Modbus"):
        POINT.validate_python(
            {"name": "p", "table": "input", "address": 0, "type": "int16", "writable": True}
        )


def test_opcua_values_take_the_node_type() -> None:
    VT = ua.VariantType
    assert to_variant(5, VT.Int32) == ua.Variant(5, VT.Int32)
    assert to_variant(5.0, VT.UInt16) == ua.Variant(5, VT.UInt16)
    assert to_variant(2, VT.Double) == ua.Variant(2.0, VT.Double)
    assert to_variant(1, VT.Boolean) == ua.Variant(True, VT.Boolean)
    assert to_variant("x", VT.LocalizedText).Value == ua.LocalizedText("x")
    assert (
        expected_value(to_variant(0.1, VT.Float)) == struct.unpack(">f", struct.pack(">f", 0.1))[0]
    )
    for value, vtype, error in [
        (256, VT.Byte, "out of range for Byte [0, 255]"),
        (-1, VT.UInt64, "out of range for UInt64 [0, 18446744073709551615]"),
        (2.5, VT.Int32, "expected an integer (Int32)"),
        ("3", VT.Double, "expected a number"),
        (True, VT.Int16, "expected a number"),
        (3.5e38, VT.Float, "out of range for Float"),
        (3, VT.String, "expected a string"),
        ("2026-01-01", VT.DateTime, "data type DateTime cannot be written from a JSON value"),
    ]:
        with pytest.raises(CommandError) as caught:
            to_variant(value, vtype)
        assert str(caught.value) == error


def test_read_back_comparison() -> None:
    assert same(12.3, 12.3000001)
    assert not same(12.3, 12.4)
    assert same(True, True) and not same(True, 1)
    assert same("A1", "A1") and not same("A1", "A2")


# -- topics --------------------------------------------------------------------------------


def test_command_topics() -> None:
    topics = Topics("{enterprise}/{site}/{area}/{line}/{device}/{point}", GATEWAY, [DEVICE])
    assert topics.command_filter() == "acme/s1/a1/+/+/+/set"
    assert topics.command_target(f"{PREFIX}/plc/sp/set") == ("plc", "sp", True)
    assert topics.command_target("acme/s1/a1/line-9/plc/sp/set") == ("plc", "sp", False)
    assert topics.command_target(f"{PREFIX}/plc/sp/set/result") is None
    custom = Topics("factory/{gateway}/{device}-{point}/data", GATEWAY, [DEVICE])
    assert custom.command_filter() == "factory/gw/+/data/set"
    assert custom.command_target("factory/gw/plc-sp/data/set") == ("plc", "sp", True)


def test_rate_limit_allows_a_burst_then_refuses() -> None:
    limit = RateLimit(2)
    assert [limit.take() for _ in range(3)] == [True, True, False]
    slow = RateLimit(0.5)  # one command every 2 s: a burst of one
    assert [slow.take() for _ in range(2)] == [True, False]


# -- the router ----------------------------------------------------------------------------


class Recorder:
    """A Modbus device without the network: the adapter's real value checks, writes recorded."""

    def __init__(self) -> None:
        self.device_id = "plc"
        self.state: tuple[str, str | None] = (CONNECTED, None)
        self.writes: list[tuple[str, Scalar]] = []
        self.codecs = {p.name: PointCodec(p, "big", "big") for p in DEVICE.points}

    def check(self, point: str, value: Scalar) -> None:
        command_value(POINTS[point], self.codecs[point], value)

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        value = command_value(POINTS[point], self.codecs[point], value)
        self.writes.append((point, value))
        return WriteOutcome(None, value, Reading("plc", point, value, GOOD, 0.0))


class Harness:
    def __init__(self) -> None:
        self.topics = Topics(
            "{enterprise}/{site}/{area}/{line}/{device}/{point}", GATEWAY, [DEVICE]
        )
        self.source = Recorder()
        self.answers: list[tuple[str, bytes, bytes | None]] = []
        self.published: list[Reading] = []

    async def send(self, messages: list[Incoming]) -> CommandRouter:
        router = CommandRouter(
            [DEVICE],
            {"plc": self.source},
            self.topics,
            lambda t, p, c: self.answers.append((t, p, c)),
            self.published.append,
            response_prefix="app/",
        )
        for message in messages:
            router.handle(message)
        while router.tasks:
            await asyncio.wait(list(router.tasks))
        return router


def _run(harness: Harness, messages: list[Incoming]) -> CommandRouter:
    return asyncio.run(harness.send(messages))


def test_router_answers_writes_and_publishes() -> None:
    harness = Harness()
    _run(
        harness,
        [
            Incoming(f"{PREFIX}/plc/sp/set", b'{"value": 99.5, "id": "a"}'),
            Incoming(f"{PREFIX}/plc/temp/set", b"1"),
            Incoming(f"{PREFIX}/plc/sp/set", b"1", response_topic="app/replies", correlation=b"c1"),
            Incoming(f"{PREFIX}/plc/run/set", b"true", retain=True),
            # A response topic outside the prefix (here: another command topic) is not used.
            Incoming(f"{PREFIX}/plc/temp/set", b"2", response_topic=f"{PREFIX}/plc/sp/set"),
        ],
    )
    answers = [(t, json.loads(p), c) for t, p, c in harness.answers]
    RETAINED = "retained commands are refused (they replay on reconnect)"
    assert [(t, a["ok"], a.get("error"), c) for t, a, c in answers] == [
        (f"{PREFIX}/plc/temp/set/result", False, "not writable", None),
        (f"{PREFIX}/plc/run/set/result", False, RETAINED, None),
        (f"{PREFIX}/plc/temp/set/result", False, "not writable", None),
        (f"{PREFIX}/plc/sp/set/result", True, None, None),
        ("app/replies", True, None, b"c1"),
    ]  # fmt: skip
    assert harness.source.writes == [("sp", 99.5), ("sp", 1.0)]
    assert [(r.point, r.value) for r in harness.published] == [("sp", 99.5), ("sp", 1.0)]


def test_router_refuses_beyond_the_rate_limit() -> None:
    harness = Harness()
    slow = DEVICE.model_copy(update={"write_rate_limit": 2.0})

    async def send() -> None:
        router = CommandRouter(
            [slow], {"plc": harness.source}, harness.topics,
            lambda t, p, c: harness.answers.append((t, p, c)), harness.published.append,
        )  # fmt: skip
        for _ in range(5):
            router.handle(Incoming(f"{PREFIX}/plc/count/set", b"1"))
        while router.tasks:
            await asyncio.wait(list(router.tasks))

    asyncio.run(send())
    errors = [json.loads(p).get("error") for _, p, _ in harness.answers]
    assert errors.count("rate limit exceeded (2 commands/s for this device)") == 3
    assert len(harness.source.writes) == 2


class Failing(Recorder):
    def __init__(self, error: BaseException, state: str = CONNECTED) -> None:
        super().__init__()
        self.error = error
        self.state = (state, None if state == CONNECTED else "connection refused")

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        raise self.error


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (Failing(DeviceTimeout()), "device timeout"),
        (Failing(DeviceError("illegal data address", connection_lost=False)),
         "device error: illegal data address"),
        (Failing(TimeoutError()), "device timeout"),
        (Failing(RuntimeError("bug")), "internal error (see the gateway log)"),
        (Failing(RuntimeError("never called"), DISCONNECTED),
         "device disconnected: connection refused"),
    ],
)  # fmt: skip
def test_device_failures_become_answers(source: Failing, error: str) -> None:
    result, reading = asyncio.run(execute(DEVICE, source, "count", 3, "x"))
    assert (result.ok, result.error, result.command_id, reading) == (False, error, "x", None)


def test_a_value_the_point_cannot_take_is_refused_as_such_while_the_device_is_down() -> None:
    down = Failing(RuntimeError("never called"), DISCONNECTED)
    result, _ = asyncio.run(execute(DEVICE, down, "count", 1.5, "x"))
    assert (result.outcome, result.error) == ("refused", "expected an integer (int16)")
    result, _ = asyncio.run(execute(DEVICE, down, "count", 3, "x"))
    assert (result.outcome, result.error) == ("failed", "device disconnected: connection refused")


def test_read_back_mismatch_is_not_ok() -> None:
    class Clamping(Recorder):
        async def write(self, point: str, value: Scalar) -> WriteOutcome:
            return WriteOutcome(10, value, Reading("plc", point, 100, GOOD, 0.0))

    result, reading = asyncio.run(execute(DEVICE, Clamping(), "count", 120, None))
    assert (result.ok, result.error, result.value) == (
        False,
        "read back 100 after writing 120",
        100,
    )
    assert reading is not None and reading.value == 100  # still published: it is the truth
    payload = json.loads(result.payload())
    jsonschema.validate(payload, RESULT_SCHEMA)


# -- fuzz: thousands of random topics and payloads -----------------------------------------

_level = st.text(
    st.characters(exclude_characters="/+#\x00", exclude_categories=("Cs",)), max_size=12
)
_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)  # fmt: skip
_value = st.one_of(
    _json_scalar,
    st.sampled_from([0, 1, -1, 32767, 32768, 149.9, 150.1, "auto", "off", "A1", "B2", "C3", True]),
    st.lists(_json_scalar, max_size=3),
    st.dictionaries(st.text(max_size=5), _json_scalar, max_size=3),
)
_object = st.fixed_dictionaries(
    {},
    optional={"value": _value, "id": st.one_of(st.text(max_size=8), st.integers(), _json_scalar)},
)
_payload = st.one_of(
    _object.map(lambda o: json.dumps(o).encode()),
    _value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"NaN", b'{"value": Infinity}', b"1e400", b'{"value": 1', b"x" * 5000]),
)
_point = st.one_of(st.sampled_from(sorted(POINTS)), _level)
_device = st.one_of(st.just("plc"), _level)
_line = st.one_of(st.just("line-1"), _level)
_message = st.builds(
    lambda line, device, point, payload, retain: Incoming(
        f"acme/s1/a1/{line}/{device}/{point}/set", payload, retain
    ),
    _line, _device, _point, _payload, st.booleans(),
)  # fmt: skip


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message, min_size=1, max_size=3))
def test_router_fuzz(messages: list[Incoming]) -> None:
    harness = Harness()
    _run(harness, messages)
    # Exactly one answer per message, where the caller looks for it, schema-valid.
    # (Refusals are answered at once, writes when done: compare as multisets.)
    assert sorted(t for t, _, _ in harness.answers) == sorted(m.topic + "/result" for m in messages)
    for _, payload, _ in harness.answers:
        RESULT.validate(json.loads(payload))
    # Nothing reaches a point that is not writable, nor breaks the map's limits.
    for name, value in harness.source.writes:
        spec = POINTS[name]
        assert spec.writable
        check_limits(spec, value)
        assert not isinstance(value, float) or math.isfinite(value)
    written = sum(json.loads(p)["ok"] for _, p, _ in harness.answers)
    assert written == len(harness.source.writes) == len(harness.published)


def test_result_payloads_follow_the_schema() -> None:
    for result in [
        Result("a", "plc", "sp", 1.0, WRITTEN, value=1.0, ts=1.0),
        Result(None, None, None, None, REFUSED, error="unknown device 'x'"),
        Result(3, "plc", "sp", 1.0, "failed", error="device timeout"),
    ]:
        jsonschema.validate(json.loads(result.payload()), RESULT_SCHEMA)


def test_max_age_refuses_old_future_and_untimed_commands() -> None:
    harness = Harness()
    now = time.time()

    def at(seconds: float) -> str:
        return datetime.fromtimestamp(now + seconds, UTC).isoformat()

    async def send() -> None:
        router = CommandRouter(
            [DEVICE], {"plc": harness.source}, harness.topics,
            lambda t, p, c: harness.answers.append((t, p, c)), harness.published.append,
            max_age=5.0,
        )  # fmt: skip
        for ts in [at(-1), at(-60), at(60), None, "yesterday", "2026-12-06T10:00:00", 17]:
            body = {"value": 1, "id": str(ts)} | ({} if ts is None else {"ts": ts})
            router.handle(Incoming(f"{PREFIX}/plc/count/set", json.dumps(body).encode()))
        while router.tasks:
            await asyncio.wait(list(router.tasks))

    asyncio.run(send())
    errors = [json.loads(p).get("error") for _, p, _ in harness.answers]
    assert sorted(errors, key=str) == sorted(
        [
            None,
            "too old: sent 60.0 s ago, commands.max_age is 5 s",
            "sent 60.0 s in the future: check the sender's clock",
            'no "ts": commands must say when they were sent (commands.max_age)',
            "ts 'yesterday' is not an ISO 8601 time",
            'ts needs a UTC offset, e.g. "2026-12-06T10:00:00Z"',
            'ts must be an ISO 8601 time, e.g. "2026-12-06T10:00:00Z"',
        ],
        key=str,
    )
    assert harness.source.writes == [("count", 1)]


def test_intake_drops_beyond_its_queue_and_keeps_order() -> None:
    handled: list[Incoming] = []

    async def flood() -> Intake:
        intake = Intake(rate=1e6, size=3)
        for n in range(10):
            intake.offer(Incoming(f"t/{n}", b"x" * (n * 1000)))
        three = asyncio.Event()

        def handle(message: Incoming) -> None:
            handled.append(message)
            if len(handled) == 3:
                three.set()

        task = asyncio.create_task(intake.run(handle))
        await asyncio.wait_for(three.wait(), 10)
        task.cancel()
        return intake

    intake = asyncio.run(flood())
    assert [m.topic for m in handled] == ["t/0", "t/1", "t/2"]
    assert intake.dropped.total == 7
    assert max(len(m.payload) for m in handled) == 2000
    cut = Intake(rate=1.0, size=1)

    async def big() -> None:
        cut.offer(Incoming("t", b"[" * 100_000))

    asyncio.run(big())
    assert len(cut.queue[0][0].payload) == MAX_PAYLOAD + 1  # the router still says "too large"
    with pytest.raises(CommandError, match="payload too large"):
        parse(cut.queue[0][0].payload)


def test_intake_bounds_the_bytes_it_holds() -> None:
    """MQTT 5 lets a message carry a long topic, response topic and correlation data: the
    queue holds at most ``size`` x 4 KiB of them, whatever each message carries."""

    async def flood() -> Intake:
        intake = Intake(rate=1.0, size=10)
        big = "r" * 20_000
        for n in range(10):
            intake.offer(Incoming(f"t/{n}", b"1", response_topic=big, correlation=b"c" * 20_000))
        intake.offer(Incoming("t/small", b"1"))
        return intake

    intake = asyncio.run(flood())
    assert len(intake.queue) == 2  # 40 KiB allowed: one big message fits, then the small one
    assert intake.bytes <= 10 * 4096
    assert intake.dropped.total == 9


def test_intake_yields_between_messages() -> None:
    """However many wait, the intake hands on one message per loop turn: other tasks (the
    devices' polls, the readings' transport) run in between."""
    turns: list[str] = []

    async def flood() -> None:
        intake = Intake(rate=1e6, size=100)
        for _ in range(50):
            intake.offer(Incoming("t", b"1"))

        async def other() -> None:
            while True:
                turns.append("other")
                await asyncio.sleep(0)

        done = asyncio.Event()

        def handle(message: Incoming) -> None:
            turns.append("command")
            if turns.count("command") == 50:
                done.set()

        ticker = asyncio.create_task(other())
        task = asyncio.create_task(intake.run(handle))
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        ticker.cancel()

    asyncio.run(flood())
    commands = [i for i, t in enumerate(turns) if t == "command"]
    assert all(b - a > 1 for a, b in itertools.pairwise(commands)), turns[:20]


class Unacknowledging:
    """A transport whose broker never acknowledges: every answer stays in flight."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, topic: str, payload: bytes, qos: int, correlation: bytes | None) -> int:
        self.sent.append(topic)
        return len(self.sent)


def test_answers_in_flight_are_capped() -> None:
    channel = CommandChannel(Settings((Server("127.0.0.1", 1883),), client_id="c"), "t/#")
    transport = Unacknowledging()

    async def answer() -> None:
        channel._client = transport  # type: ignore[assignment]
        for _ in range(MAX_ANSWERS + 50):
            channel.answer("t/result", b"{}", None)
        channel.acknowledged(1)  # one acknowledged: room for one more
        channel.answer("t/result", b"{}", None)
        channel.answer("t/result", b"{}", None)

    asyncio.run(answer())
    assert len(transport.sent) == MAX_ANSWERS + 1
    assert channel.answers_dropped.total == 51


class Slow(Recorder):
    """Writes that take until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        await self.go.wait()
        return await super().write(point, value)


def test_a_reload_lets_the_running_command_finish_and_answers_the_others() -> None:
    """Commands on a device a reload stops: the one running finishes and is answered, the one
    waiting behind it (past the write's time bound) is cancelled and answered, a new one is
    refused; nothing is left unanswered."""
    harness = Harness()
    quick = DEVICE.model_copy(update={"timeout": 0.05})  # the bound: 3 x 0.05 + 0.5 s
    source = Slow()

    async def scenario() -> list[dict[str, object]]:
        router = CommandRouter(
            [quick], {"plc": source}, harness.topics,
            lambda t, p, c: harness.answers.append((t, p, c)), harness.published.append,
        )  # fmt: skip
        router.handle(Incoming(f"{PREFIX}/plc/sp/set", b'{"value": 1, "id": "running"}'))
        router.handle(Incoming(f"{PREFIX}/plc/sp/set", b'{"value": 2, "id": "waiting"}'))
        await asyncio.sleep(0)  # both started: one writes, one waits for the device's lock
        retiring = asyncio.create_task(router.retire(["plc"]))
        await asyncio.sleep(0)
        router.handle(Incoming(f"{PREFIX}/plc/sp/set", b'{"value": 3, "id": "late"}'))
        source.go.set()
        await retiring
        assert not router.tasks
        return [json.loads(p) for _, p, _ in harness.answers]

    answers = {a["id"]: a for a in asyncio.run(scenario())}
    assert answers["late"]["ok"] is False
    assert answers["late"]["error"] == "the device is restarting for a map reload: send it again"
    assert answers["running"]["ok"] is True and answers["running"]["value"] == 1.0
    # The second write started once the first was done, and was quick enough to finish too.
    assert answers["waiting"]["ok"] is True
    assert source.writes == [("sp", 1.0), ("sp", 2.0)]


def test_a_reload_cancels_a_command_that_outlasts_the_bound() -> None:
    harness = Harness()
    quick = DEVICE.model_copy(update={"timeout": 0.05})
    source = Slow()  # never set: the write hangs past the bound (the device's own timeout
    # would end it; here only the reload's bound does)

    async def scenario() -> list[dict[str, object]]:
        router = CommandRouter(
            [quick], {"plc": source}, harness.topics,
            lambda t, p, c: harness.answers.append((t, p, c)), harness.published.append,
        )  # fmt: skip
        for n in range(5):
            router.handle(Incoming(f"{PREFIX}/plc/sp/set", b'{"value": %d, "id": %d}' % (n, n)))
        await asyncio.sleep(0)
        await router.retire(["plc"])
        assert not router.tasks
        return [json.loads(p) for _, p, _ in harness.answers]

    answers = {a["id"]: a for a in asyncio.run(scenario())}
    # Every command is answered: the first ran into its write's own bound (a device timeout);
    # the last, still waiting in line when the reload's bound passed, was cancelled.
    assert sorted(answers) == [0, 1, 2, 3, 4]
    assert answers[0]["error"] == "device timeout"
    cancelled = "cancelled: the device restarted for a map reload; read the point back"
    assert answers[4]["error"] == cancelled
    assert all(a["ok"] is False for a in answers.values())
    assert source.writes == []


def test_a_sparkplug_write_takes_the_same_value_checks() -> None:
    """A DCMD's metric may hold NaN or infinity, which JSON cannot: refused all the same."""
    harness = Harness()

    async def submit() -> None:
        router = await harness.send([])
        for value in (math.nan, math.inf, 42.0):
            router.submit("plc", "sp", value, "dcmd:plc/sp")
        while router.tasks:
            await asyncio.wait(list(router.tasks))

    asyncio.run(submit())
    assert harness.source.writes == [("sp", 42.0)]


def test_the_audit_of_a_refused_command_says_what_was_asked() -> None:
    harness = Harness()
    with structlog.testing.capture_logs() as logs:
        _run(harness, [Incoming(f"{PREFIX}/plc/sp/set", b'{"value": 500, "id": "too-hot"}')])
    (audit,) = [line for line in logs if line["event"] == "command"]
    assert (audit["outcome"], audit["new"], audit["id"]) == ("refused", 500, "too-hot")
