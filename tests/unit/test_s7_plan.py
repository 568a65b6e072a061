"""The S7 read planner: neighbours merged within the gap and one PDU, areas and intervals
apart, and what `factory-gateway plan` says about it."""

from __future__ import annotations

import random
from typing import Any

from adapters.s7.config import S7Device
from adapters.s7.plan import describe, plan_device
from gateway.plan_report import render


def _device(points: list[dict[str, Any]], **keys: Any) -> S7Device:
    base = {"id": "plc", "line": "l", "protocol": "s7", "host": "127.0.0.1", "points": points}
    return S7Device.model_validate({**base, **keys})


def _scattered(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` points at random, distinct places of three data blocks and the markers."""
    rng = random.Random(seed)
    kinds = [("DBD", "REAL", 4), ("DBW", "INT", 2), ("DBB", "BYTE", 1), ("DBX", "BOOL", 1)]
    taken: set[tuple[str, int]] = set()
    points = []
    while len(points) < count:
        area = rng.choice(["DB1", "DB2", "DB3", "M"])
        width, kind, size = rng.choice(kinds)
        byte = rng.randrange(0, 1200, 2)
        if any((area, b) in taken for b in range(byte, byte + size)):
            continue
        taken.update((area, b) for b in range(byte, byte + size))
        if area == "M":
            address = f"M{width[2]}{byte}" if width != "DBX" else f"M{byte}.3"
        else:
            address = f"{area}.{width}{byte}" + (".3" if width == "DBX" else "")
        points.append({"name": f"p{len(points)}", "address": address, "type": kind})
    return points


def test_100_scattered_addresses_take_far_fewer_requests_than_points() -> None:
    device = _device(_scattered(100))
    (group,) = plan_device(device)
    requests = group.requests
    assert 10 < len(requests) < 50  # merged, yet not everything in one
    read = {p.name for r in requests for s in r.slots for p in [s.point]}
    assert read == {p.name for p in device.points}  # every point, once
    for request in requests:
        assert request.size <= 462  # one answer PDU at the default 480
        for slot in request.slots:  # each point inside its request, at its offset
            assert request.start + slot.offset == slot.point.where.byte
            assert slot.offset + slot.point.size <= request.size
        areas = {(s.point.where.area, s.point.where.db) for s in request.slots}
        assert len(areas) == 1  # one area, one data block
    plan = describe(device)
    assert plan.naive_requests_per_s == 100.0
    assert plan.requests_per_s == len(requests)
    text = render([plan])
    assert f"= {len(requests):.1f} requests/s" in text
    assert "one request per point would be 100.0 requests/s" in text
    assert "every 1s: DB1 bytes " in text and "every 1s: M bytes " in text


def test_gaps_pdu_and_intervals_split_requests() -> None:
    points = [
        {"name": "a", "address": "DB1.DBD0", "type": "REAL"},
        {"name": "b", "address": "DB1.DBD36", "type": "REAL"},  # 32 unused bytes: joins
        {"name": "c", "address": "DB1.DBD73", "type": "REAL"},  # 33 unused bytes: does not
        {"name": "d", "address": "DB1.DBW80", "type": "INT", "poll_interval": "5s"},
    ]
    groups = plan_device(_device(points))
    assert [(g.interval, [(r.start, r.size) for r in g.requests]) for g in groups] == [
        (1.0, [(0, 40), (73, 4)]),
        (5.0, [(80, 2)]),
    ]
    assert groups[0].requests[0].unused == 32
    # A PLC that negotiated a smaller PDU gets smaller requests.
    wide = [{"name": f"w{i}", "address": f"DB2.DBD{4 * i}", "type": "DINT"} for i in range(100)]
    assert [r.size for r in plan_device(_device(wide), pdu_size=240)[0].requests] == [220, 180]
    assert [r.size for r in plan_device(_device(wide))[0].requests] == [400]


def test_a_point_longer_than_a_pdu_counts_the_requests_the_client_sends() -> None:
    points = [
        {"name": "log", "address": "DB3.DBB0", "type": "WSTRING[400]"},  # 804 bytes
        {"name": "t", "address": "DB4.DBD0", "type": "REAL"},
    ]
    plan = describe(_device(points))
    assert plan.requests_per_s == 3.0  # 804 bytes in 462-byte answers, and the REAL
    assert plan.naive_requests_per_s == 3.0
    assert "(804 bytes, in 2 requests): log" in "\n".join(plan.lines)
    assert "PDU 480 asked (the PLC may give less)" in plan.link
