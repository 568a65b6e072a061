"""The status page's memory of the points (gateway/http/status.py) and the listener's
credentials (gateway/http/auth.py)."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest

from gateway.config.schema import HttpAuth, HttpSection
from gateway.http.auth import allowed
from gateway.http.page import MAX_POINTS_AT_ONCE, StatusPage
from gateway.http.status import TREND_BYTES, TREND_SECONDS, PointTable, Status
from gateway.model import BAD, GOOD, Block, Points, Reading


class Point:
    def __init__(self, name: str, unit: str | None = None) -> None:
        self.name, self.unit = name, unit


class Device:
    def __init__(self, id: str, names: list[str]) -> None:
        self.id, self.protocol, self.line = id, "modbus-tcp", "line-1"
        self.points = [Point(n) for n in names]


def _table(names: list[str], slots: int = 4) -> PointTable:
    return PointTable("plc", [Point(n, "bar") for n in names], slots, "modbus-tcp", "line-1")


def _values(table: PointTable) -> dict[str, Any]:
    table.settle()
    return {
        name: None if (s := table.state(i)) is None else (s.value, s.quality, s.ts)
        for i, name in enumerate(table.names)
    }


def test_a_fold_keeps_each_point_s_latest_sample_in_the_order_they_were_sent() -> None:
    table = _table(["a", "b", "c"])
    ab = Points(("a", "b"), ("bar", "bar"))
    table.tap([Block("plc", ab, [1, 2], 10.0), Reading("plc", "c", "x", GOOD, 10.0)])
    table.tap([Reading("plc", "a", None, BAD, 11.0, None, "timeout")])
    assert _values(table) == {"a": (None, BAD, 11.0), "b": (2, GOOD, 10.0), "c": ("x", GOOD, 10.0)}
    # A later block of the same points supersedes the reading and the earlier block.
    table.tap([Block("plc", ab, [3, 4], 12.0)])
    table.tap([Block("plc", ab, [5, 6], 13.0)])
    assert _values(table) == {"a": (5, GOOD, 13.0), "b": (6, GOOD, 13.0), "c": ("x", GOOD, 10.0)}
    # What changed since a fold: only b after this one.
    seen = table.folds
    table.tap([Reading("plc", "b", 7, GOOD, 14.0)])
    table.settle()
    assert table.changed_since(seen) == [1]
    assert table.changed_since(0) == [0, 1, 2]
    # Blocks wait (folded each second, applied when needed); a reading after them still wins.
    table.tap([Block("plc", ab, [8, 9], 15.0)])
    table.fold()
    table.tap([Reading("plc", "a", None, BAD, 16.0, None, "timeout")])
    table.fold()
    table.tap([Block("plc", ab, [10, 11], 14.5)])  # an older poll's block, sent late
    table.fold()
    table.tap([Reading("plc", "b", None, BAD, 17.0, None, "timeout")])
    assert _values(table) == {
        "a": (10, GOOD, 14.5),  # in the order sent: the late block came after the reading
        "b": (None, BAD, 17.0),
        "c": ("x", GOOD, 10.0),
    }


def test_points_no_longer_in_the_map_are_left_out() -> None:
    table = _table(["a"])
    table.tap([Block("plc", Points(("gone", "a"), (None, None)), [1, 2], 1.0)])
    table.tap([Reading("plc", "also-gone", 3, GOOD, 1.0)])
    assert _values(table) == {"a": (2, GOOD, 1.0)}


def test_the_trend_is_a_ring_of_numeric_good_values() -> None:
    table = _table(["n", "text", "flag"], slots=3)
    for second in range(5):
        quality = GOOD if second != 2 else BAD
        table.tap(
            [
                Reading("plc", "n", second * 1.5, quality, float(second)),
                Reading("plc", "text", "on", GOOD, float(second)),
                Reading("plc", "flag", True, GOOD, float(second)),
            ]
        )
        table.sample_trend(100.0 + second)
    times, rows = table.trend_rows(0)
    assert times == [102.0, 103.0, 104.0]  # the ring keeps the last three
    assert math.isnan(rows[0][0])  # bad: no value
    assert [row[0] for row in rows[1:]] == [4.5, 6.0]
    assert all(math.isnan(row[1]) and math.isnan(row[2]) for row in rows)  # text, bool
    assert table.trend_rows(4)[0] == [104.0]  # what a page has not had yet
    assert table.trend_rows(5) == ([], [])


def test_trends_are_coarser_for_a_big_plant_and_tables_survive_a_reload() -> None:
    small = Status([Device("a", ["x", "y"])])  # type: ignore[list-item]
    assert small.period == 1.0 and small.tables["a"].slots == TREND_SECONDS
    points = TREND_BYTES // (4 * TREND_SECONDS) * 3  # three times what a second a sample fits
    big = Status([Device("b", [f"p{i}" for i in range(points)])])  # type: ignore[list-item]
    assert big.period == 3.0 and big.tables["b"].slots == TREND_SECONDS // 3
    kept = small.tables["a"]
    small.track([Device("a", ["x", "y"]), Device("c", ["z"])], keep=["a"])  # type: ignore[list-item]
    assert small.tables["a"] is kept and set(small.tables) == {"a", "c"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials() -> None:
    login = HttpAuth(username="ops", password="pa:ss")
    assert allowed(login, _basic("ops", "pa:ss"))
    assert not allowed(login, _basic("ops", "pa:sS"))
    assert not allowed(login, _basic("Ops", "pa:ss"))
    assert not allowed(login, "Bearer pa:ss")
    assert not allowed(login, None)
    assert not allowed(login, "Basic not-base64!")
    token = HttpAuth(token="t0k-t0k-t0k-t0k")
    assert allowed(token, "Bearer t0k-t0k-t0k-t0k")
    assert allowed(token, "bearer  t0k-t0k-t0k-t0k ")
    assert allowed(token, _basic("anyone", "t0k-t0k-t0k-t0k"))  # what a browser's prompt sends
    assert not allowed(token, "Bearer t0k-t0k-t0k-t0K")
    assert not allowed(token, "Digest t0k-t0k-t0k-t0k")
    # A token read from a file keeps no newline; a short or spaced one is refused.
    assert HttpAuth(token=" t0k-t0k-t0k-t0k\n").token == "t0k-t0k-t0k-t0k"
    for weak in ("short", "t0k t0k t0k t0k"):
        with pytest.raises(ValueError, match="at least 12 characters without spaces"):
            HttpAuth(token=weak)


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({"listen": "0.0.0.0:9108"}, "0.0.0.0:9108 is reachable from other hosts"),
        ({"listen": "gateway.local:9108"}, "is reachable from other hosts"),
        ({"listen": "[::]:9108", "auth": {"token": ""}}, "every key of it is empty"),
        ({"listen": 9108}, "9108: write it as host:port, e.g. 127.0.0.1:9108"),
        ({"auth": {"token": "t" * 12, "password": "p"}}, "a token, or a username and password"),
        ({"auth": {"username": "ops"}}, "give a username and a password"),
        ({"cert": "cert.pem"}, "HTTPS needs both cert and key"),
    ],
)
def test_listener_settings_that_are_refused(keys: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        HttpSection.model_validate(keys)


def test_listener_settings_that_are_accepted() -> None:
    assert HttpSection.model_validate({}).credentials is None  # 127.0.0.1: no credentials
    for loopback in ("127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "localhost:1"):
        assert HttpSection.model_validate({"listen": loopback}).credentials is None
    empty = HttpSection.model_validate({"auth": {"token": ""}})  # ${HTTP_TOKEN:-} unset
    assert empty.credentials is None
    guarded = HttpSection.model_validate({"listen": "0.0.0.0:9108", "auth": {"token": "t" * 12}})
    assert guarded.credentials is not None and guarded.credentials.token == "t" * 12


def test_every_device_at_once_only_for_a_plant_small_enough() -> None:
    status = Status([Device("a", ["x"]), Device("b", ["y"])])  # type: ignore[list-item]
    page = StatusPage(None, status)  # type: ignore[arg-type]  # (only the tables are asked)
    everything, notice = page._client("*")
    assert everything.open is None and notice is None
    status.points = MAX_POINTS_AT_ONCE + 1
    nothing, notice = page._client("*")
    assert nothing.open == frozenset()
    assert notice is not None and "ask for devices by name" in notice
    named, notice = page._client("a,b,")
    assert named.open == {"a", "b"} and notice is None
