"""The read plan: which requests one poll of a device sends. A pure function, built once.

For now points of one table that sit back to back are read in one request (up to the Modbus
limits of 125 registers or 2000 bits); gaps start a new request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.modbus.config import BIT_TABLES, ModbusPoint, Table

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    start: int
    count: int
    points: tuple[ModbusPoint, ...]


def plan_reads(points: Iterable[ModbusPoint]) -> list[ReadRequest]:
    """Group points into as few contiguous block reads as the protocol allows."""
    requests: list[ReadRequest] = []
    ordered = sorted(points, key=lambda p: (p.table, p.address))
    current: list[ModbusPoint] = []
    for point in ordered:
        if current:
            first, last = current[0], current[-1]
            limit = MAX_BITS if point.table in BIT_TABLES else MAX_REGISTERS
            contiguous = point.table == first.table and point.address == last.address + last.width
            fits = point.address + point.width - first.address <= limit
            if not (contiguous and fits):
                requests.append(_request(current))
                current = []
        current.append(point)
    if current:
        requests.append(_request(current))
    return requests


def _request(points: list[ModbusPoint]) -> ReadRequest:
    start = points[0].address
    count = points[-1].address + points[-1].width - start
    return ReadRequest(points[0].table, start, count, tuple(points))
