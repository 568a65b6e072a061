from __future__ import annotations

from typing import Any

from adapters.modbus.config import ModbusPoint
from adapters.modbus.plan import plan_reads


def point(name: str, **kw: Any) -> ModbusPoint:
    return ModbusPoint.model_validate({"name": name, **kw})


def test_adjacent_points_of_one_table_share_a_request() -> None:
    plan = plan_reads(
        [
            point("b", table="holding", address=2, type="float32"),
            point("a", table="holding", address=0, type="float32"),
            point("c", table="holding", address=4, type="int16"),
            point("gap", table="holding", address=10, type="int16"),
            point("in", table="input", address=4, type="int16"),
            point("c1", table="coil", address=0),
            point("c2", table="coil", address=1),
        ]
    )
    summary = [(r.table, r.start, r.count, [p.name for p in r.points]) for r in plan]
    assert summary == [
        ("coil", 0, 2, ["c1", "c2"]),
        ("holding", 0, 5, ["a", "b", "c"]),
        ("holding", 10, 1, ["gap"]),
        ("input", 4, 1, ["in"]),
    ]


def test_requests_respect_the_125_register_limit() -> None:
    points = [point(f"p{i}", table="input", address=i * 4, type="float64") for i in range(40)]
    plan = plan_reads(points)
    assert [(r.start, r.count) for r in plan] == [(0, 124), (124, 36)]
    assert sum(len(r.points) for r in plan) == 40
