"""The read plan of an S7 device: points of one memory area (one data block, M, I or Q) and one
interval that lie near each other are read in one request, as long as it fits one PDU.

A request costs a round trip (a fraction of a millisecond on a LAN, several on a busy CPU's
communication load); bytes next to nothing. So points less than ``max_gap`` bytes apart are
read together, unused bytes included, up to what one answer PDU carries (the negotiated PDU
size less 18 bytes of headers: 462 bytes at the usual 480). A point larger than that (a long
array or string) gets a request of its own, which the client splits across PDUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.s7.address import Area
from adapters.s7.config import S7Device, S7Point
from gateway.plan_report import DevicePlan

HEADERS = 18  # bytes of an answer PDU that are not data (one item)


@dataclass(frozen=True, slots=True)
class Slot:
    point: S7Point
    offset: int  # of the point's first byte in the request's bytes


@dataclass(frozen=True, slots=True)
class ReadRequest:
    area: Area
    db: int
    start: int
    size: int
    slots: tuple[Slot, ...]

    @property
    def unused(self) -> int:
        """Bytes read that no point needs."""
        used: set[int] = set()
        for slot in self.slots:
            used.update(range(slot.offset, slot.offset + slot.point.size))
        return self.size - len(used)

    def __str__(self) -> str:
        where = f"DB{self.db}" if self.area == "DB" else self.area
        return f"{where} bytes {self.start}..{self.start + self.size - 1}"


@dataclass(frozen=True, slots=True)
class PollGroup:
    interval: float
    requests: list[ReadRequest]


def max_bytes(pdu_size: int) -> int:
    return pdu_size - HEADERS


def plan_reads(
    points: Sequence[S7Point],
    limit: int,
    max_gap: int,
    alone: frozenset[str] = frozenset(),
) -> list[ReadRequest]:
    """Requests that read ``points`` (of any areas): neighbours merged within ``max_gap``
    bytes and ``limit`` bytes a request; the points named in ``alone`` each on their own (a
    PLC refused a request they were part of)."""
    by_area: dict[tuple[Area, int], list[S7Point]] = {}
    for point in points:
        where = point.where
        by_area.setdefault((where.area, where.db), []).append(point)
    requests: list[ReadRequest] = []
    for (area, db), members in by_area.items():
        members.sort(key=lambda p: (p.where.byte, p.name))
        group: list[S7Point] = []
        start = end = 0
        for point in members:
            first = point.where.byte
            last = first + point.size
            joins = (
                group
                and point.name not in alone
                and group[0].name not in alone
                and first - end <= max_gap
                and max(end, last) - start <= limit
            )
            if joins:
                group.append(point)
                end = max(end, last)
                continue
            if group:
                requests.append(_request(area, db, start, end, group))
            group, start, end = [point], first, last
        if group:
            requests.append(_request(area, db, start, end, group))
    return requests


def _request(area: Area, db: int, start: int, end: int, points: list[S7Point]) -> ReadRequest:
    slots = tuple(Slot(p, p.where.byte - start) for p in points)
    return ReadRequest(area, db, start, end - start, slots)


def plan_device(
    device: S7Device, pdu_size: int | None = None, alone: frozenset[str] = frozenset()
) -> list[PollGroup]:
    """The device's requests by poll interval, for the PDU size the PLC negotiated (before
    connecting: the one the map asks for)."""
    limit = max_bytes(pdu_size or device.pdu_size)
    by_interval: dict[float, list[S7Point]] = {}
    for point in device.points:
        by_interval.setdefault(device.interval_of(point), []).append(point)
    return [
        PollGroup(interval, plan_reads(points, limit, device.gap, alone))
        for interval, points in sorted(by_interval.items())
    ]


def describe(device: S7Device) -> DevicePlan:
    """The plan of one device as text and rates, for ``factory-gateway plan``."""
    title = f"s7 {device.endpoint}, PDU {device.pdu_size} asked (the PLC may give less)"
    plan = DevicePlan(device.id, title, unit="bytes")
    limit = max_bytes(device.pdu_size)
    for group in plan_device(device):
        rate = 1.0 / group.interval
        for request in group.requests:
            names = ", ".join(s.point.name for s in request.slots)
            note = f", {request.unused} unused" if request.unused else ""
            # A point longer than a PDU's answer is read in parts, a request each.
            parts = -(-request.size // limit)
            if parts > 1:
                note += f", in {parts} requests"
            size = f"{request.size} byte{'s' if request.size != 1 else ''}{note}"
            plan.lines.append(f"every {group.interval:g}s: {request} ({size}): {names}")
            plan.requests_per_s += rate * parts
            plan.registers_per_s += rate * request.size
            plan.unused_per_s += rate * request.unused
            plan.naive_requests_per_s += rate * sum(
                -(-s.point.size // limit) for s in request.slots
            )
    return plan
