"""The read planner: which requests one poll of a device sends. Pure functions, built once.

Points are grouped by poll interval, then by table; within a table, neighbouring points are read
in one request when the unused registers between them (the gap) cost less than a new request
(``max_gap``), within the request size limits. Addresses a device is known to reject (``holes``,
learned from exception 2 answers) are never read, and points known to fail when read together
with others (``isolated``) get a request of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.modbus.config import (
    BIT_TABLES,
    ModbusDevice,
    ModbusPoint,
    Table,
)
from gateway.plan_report import DevicePlan

MAX_REGISTERS = 125
MAX_BITS = 2000

Address = tuple[str, int]  # (table, protocol address)


@dataclass(frozen=True, slots=True)
class Slot:
    """A point at its protocol address (``zero_based`` already applied)."""

    table: Table
    address: int
    width: int
    point: ModbusPoint


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    start: int
    count: int
    slots: tuple[Slot, ...]

    @property
    def unused(self) -> list[int]:
        """Addresses read that no point needs."""
        used = {a for s in self.slots for a in range(s.address, s.address + s.width)}
        return [a for a in range(self.start, self.start + self.count) if a not in used]

    @property
    def function(self) -> int:
        return {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}[self.table]


@dataclass(frozen=True, slots=True)
class PollGroup:
    interval: float
    requests: tuple[ReadRequest, ...]


def slots_of(device: ModbusDevice) -> list[Slot]:
    out = []
    for point in device.points:
        assert point.table is not None  # set by the point validator
        out.append(Slot(point.table, device.address_of(point), point.width, point))
    return out


def plan_device(
    device: ModbusDevice,
    holes: frozenset[Address] = frozenset(),
    isolated: frozenset[Address] = frozenset(),
) -> list[PollGroup]:
    """The device's requests, one group per distinct poll interval (shortest first)."""
    by_interval: dict[float, list[Slot]] = {}
    for slot in slots_of(device):
        by_interval.setdefault(device.interval_of(slot.point), []).append(slot)
    return [
        PollGroup(
            interval,
            tuple(
                plan_reads(
                    slots,
                    max_registers=device.max_registers_per_request,
                    max_bits=device.max_bits_per_request,
                    max_gap=device.gap,
                    holes=holes,
                    isolated=isolated,
                )
            ),
        )
        for interval, slots in sorted(by_interval.items())
    ]


def plan_reads(
    slots: Iterable[Slot],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 0,
    holes: frozenset[Address] = frozenset(),
    isolated: frozenset[Address] = frozenset(),
) -> list[ReadRequest]:
    """Group slots into as few requests as the limits, gaps and known holes allow."""
    requests: list[ReadRequest] = []
    ordered = sorted(slots, key=lambda s: (s.table, s.address, s.point.bit or 0))
    current: list[Slot] = []
    end = 0
    for slot in ordered:
        if current and _fits(current, end, slot, max_registers, max_bits, max_gap, holes, isolated):
            current.append(slot)
            end = max(end, slot.address + slot.width)
            continue
        if current:
            requests.append(_request(current, end))
        current, end = [slot], slot.address + slot.width
    if current:
        requests.append(_request(current, end))
    return requests


def _fits(
    current: list[Slot],
    end: int,
    slot: Slot,
    max_registers: int,
    max_bits: int,
    max_gap: int,
    holes: frozenset[Address],
    isolated: frozenset[Address],
) -> bool:
    first = current[0]
    if slot.table != first.table:
        return False
    if (slot.table, slot.address) in isolated or (first.table, first.address) in isolated:
        return slot.address < end and len({s.address for s in current}) == 1  # same register
    bits = slot.table in BIT_TABLES
    limit = max_bits if bits else max_registers
    gap_limit = max_gap * 16 if bits else max_gap  # a bit costs 1/16 of a register
    new_end = max(end, slot.address + slot.width)
    if new_end - first.address > limit:
        return False
    gap = range(end, slot.address)
    if len(gap) > gap_limit:
        return False
    return not any((slot.table, a) in holes for a in gap)


def _request(slots: list[Slot], end: int) -> ReadRequest:
    start = slots[0].address
    return ReadRequest(slots[0].table, start, end - start, tuple(slots))


def describe(device: ModbusDevice) -> DevicePlan:
    """The plan of one device as text and rates, for ``factory-gateway plan``."""
    plan = DevicePlan(device.id, f"{device.protocol} {device.endpoint} unit {device.unit_id}")
    for group in plan_device(device):
        rate = 1.0 / group.interval
        for request in group.requests:
            unused = request.unused
            names = ", ".join(s.point.name for s in request.slots)
            bits = request.table in BIT_TABLES
            unit = (" bit" if request.count == 1 else " bits") if bits else ""
            note = f", {len(unused)} unused" if unused else ""
            plan.lines.append(
                f"every {_duration(group.interval)}: FC{request.function} {request.table} "
                f"{request.start}..{request.start + request.count - 1} "
                f"({request.count}{unit}{note}): {names}"
            )
            # Wire cost in registers: bits travel packed, 16 to a register.
            words = -(-request.count // 16) if bits else request.count
            plan.requests_per_s += rate
            plan.registers_per_s += rate * words
            plan.unused_per_s += rate * (0 if bits else len(unused))
            plan.naive_requests_per_s += rate * len(request.slots)
    return plan


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"
