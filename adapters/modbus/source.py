"""Polls one Modbus device on its plan and turns its registers into readings.

- A timeout, a refused connection or a dropped socket marks every point of the device bad (once
  per outage, logged once) and the link reconnects with capped, jittered backoff.
- A Modbus exception answer marks only the points of that request bad; the connection stays.
  Exception 2 (illegal data address) on a request that reads registers no point needs teaches
  the device's holes: the request is split at once and the plan avoids those addresses from then
  on, for the device's lifetime.
- A point whose value has not been refreshed for 3 of its poll intervals (a congested bus, a
  slow device) is published ``uncertain`` with reason ``stale``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable

import structlog

from adapters.modbus.config import BIT_TABLES, ModbusDevice
from adapters.modbus.decode import PointCodec, registers_to_bytes
from adapters.modbus.link import ModbusExceptionAnswer, ModbusLink
from adapters.modbus.plan import Address, PollGroup, ReadRequest, plan_device, plan_reads
from adapters.modbus.write import write_point
from gateway.errors import DeviceError
from gateway.model import BAD, GOOD, UNCERTAIN, Reading, Scalar, Value, bad_readings
from gateway.source import CONNECTED, DISCONNECTED, WriteOutcome, raise_if_cancelling

log = structlog.get_logger("adapters.modbus")

# pymodbus logs every failed connect at ERROR: we report each outage once ourselves.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

STALE_AFTER = 3  # poll intervals


class ModbusSource:
    """A ``gateway.source.Source`` for one Modbus device on a (possibly shared) link."""

    def __init__(self, device: ModbusDevice, link: ModbusLink) -> None:
        self.device = device
        self.device_id = device.id
        self.link = link
        self.holes: set[Address] = set()
        self.isolated: set[Address] = set()
        self.groups = plan_device(device)
        self._codecs = {
            p.name: PointCodec(p, device.byte_order_of(p), device.word_order_of(p))
            for p in device.points
        }
        self._points = {p.name: p for p in device.points}
        self._all_points = [(p.name, p.unit) for p in device.points]
        self._last_good: dict[str, tuple[float, Value]] = {}  # point -> (ts, value)
        self._stale: set[str] = set()
        self._log = log.bind(device=device.id, link=link.name)
        self.state: tuple[str, str | None] = (DISCONNECTED, "not connected yet")

    async def readings(self) -> AsyncIterator[list[Reading]]:
        device, link = self.device, self.link
        loop = asyncio.get_running_loop()
        due = {group.interval: loop.time() for group in self.groups}
        outage: str | None = None  # reason of the current outage, None while healthy
        while True:
            now = loop.time()
            next_due = min(due.values())
            if next_due > now:
                await asyncio.sleep(next_due - now)
                now = loop.time()
            groups = [g for g in self.groups if due[g.interval] <= now]
            poll = asyncio.ensure_future(self._connect_and_poll(groups))
            try:
                # While the poll runs (a slow device, a busy shared bus), points whose value is
                # older than 3 intervals are published as stale the moment they become so.
                while not poll.done():
                    done, _ = await asyncio.wait({poll}, timeout=self._next_stale_in())
                    if not done and (stale := self._stale_readings()):
                        yield stale
                batch = poll.result()
            except DeviceError as exc:
                raise_if_cancelling()
                if exc.connection_lost and link.connected:
                    link.failed(exc.reason)
                if exc.reason != outage:
                    self._log.warning("device unreachable", reason=exc.reason)
                    outage = exc.reason
                    self.state = (DISCONNECTED, exc.reason)
                    self._last_good.clear()
                    yield bad_readings(device.id, self._all_points, exc.reason, time.time())
                await asyncio.sleep(max(link.retry_at - loop.time(), 0.05))
                due = dict.fromkeys(due, loop.time())
                continue
            finally:
                if not poll.done():
                    poll.cancel()
            if outage is not None:
                self._log.info("device recovered", after=outage)
                outage = None
            self.state = (CONNECTED, None)
            if device.close_connection_after_poll:
                link.close()
            yield batch
            # Fixed-rate schedule: the next poll is due one interval after the last was due, so
            # periods do not drift; if we fell behind, skip the missed slots instead of bursting.
            for group in groups:
                due[group.interval] = max(due[group.interval] + group.interval, loop.time())

    async def close(self) -> None:
        self.link.release()

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        """A command (``gateway.source.Writable``): see adapters/modbus/write.py."""
        return await write_point(
            self.link, self.device, self._points[point], self._codecs[point], value
        )

    async def _connect_and_poll(self, groups: Iterable[PollGroup]) -> list[Reading]:
        await self.link.connect(self.device.pause_after_connect)
        return await self._poll(groups)

    async def _poll(self, groups: Iterable[PollGroup]) -> list[Reading]:
        batch: list[Reading] = []
        learned = False
        first = True
        for group in groups:
            for request in group.requests:
                if not first and self.device.pause_between_requests:
                    await asyncio.sleep(self.device.pause_between_requests)
                first = False
                learned |= await self._read_request(request, batch)
        if learned:
            self.groups = plan_device(self.device, frozenset(self.holes), frozenset(self.isolated))
        return batch

    async def _read_request(self, request: ReadRequest, batch: list[Reading]) -> bool:
        """Read one request into ``batch``; True when it taught the device a hole."""
        device = self.device
        try:
            async with self.link.lock:
                values = await self.link.read(
                    request.table, request.start, request.count, device.unit_id, device.retries
                )
            raise_if_cancelling()
        except ModbusExceptionAnswer as exc:
            splittable = request.unused or len({s.address for s in request.slots}) > 1
            if exc.code == 2 and splittable:  # flags of one register cannot be split further
                return await self._learn_and_split(request, batch)
            now = time.time()
            batch.extend(
                Reading(device.id, s.point.name, None, BAD, now, s.point.unit, exc.reason)
                for s in request.slots
            )
            return False
        self._decode(request, values, time.time(), batch)
        return False

    async def _learn_and_split(self, request: ReadRequest, batch: list[Reading]) -> bool:
        unused = request.unused
        if unused:
            self.holes.update((request.table, a) for a in unused)
            self._log.info(
                "learned unreadable addresses",
                table=request.table,
                addresses=f"{unused[0]}..{unused[-1]}",
                count=len(unused),
            )
        else:
            # No gap to blame: one of the points is refused. Read each on its own from now on.
            self.isolated.update((s.table, s.address) for s in request.slots)
        parts = plan_reads(
            request.slots,
            max_registers=device_limit(self.device, request.table),
            max_gap=0,
            holes=frozenset(self.holes),
            isolated=frozenset(self.isolated),
        )
        for part in parts:
            await self._read_request(part, batch)
        return True

    def _decode(
        self, request: ReadRequest, values: list[int] | list[bool], ts: float, out: list[Reading]
    ) -> None:
        device_id = self.device_id
        codecs = self._codecs
        last_good = self._last_good
        if request.table in BIT_TABLES:
            for slot in request.slots:
                point = slot.point
                bit = bool(values[slot.address - request.start])
                out.append(Reading(device_id, point.name, bit, GOOD, ts, point.unit))
                last_good[point.name] = (ts, bit)
            self._stale.difference_update(s.point.name for s in request.slots)
            return
        raw = registers_to_bytes(values)
        start = request.start
        for slot in request.slots:
            point = slot.point
            offset = 2 * (slot.address - start)
            value, quality, reason = codecs[point.name].decode(
                raw[offset : offset + 2 * slot.width]
            )
            out.append(Reading(device_id, point.name, value, quality, ts, point.unit, reason))
            if quality == GOOD and value is not None:
                last_good[point.name] = (ts, value)
                self._stale.discard(point.name)

    def _next_stale_in(self) -> float | None:
        """Seconds until the next good point turns stale; None when none can."""
        now = time.time()
        soonest: float | None = None
        for point in self.device.points:
            seen = self._last_good.get(point.name)
            if seen is None or point.name in self._stale:
                continue
            left = seen[0] + STALE_AFTER * self.device.interval_of(point) - now
            soonest = left if soonest is None else min(soonest, left)
        return None if soonest is None else max(soonest, 0.001)

    def _stale_readings(self) -> list[Reading]:
        """The last value, ``uncertain: stale``, of points not refreshed for 3 intervals."""
        now = time.time()
        out = []
        for point in self.device.points:
            seen = self._last_good.get(point.name)
            if seen is None or point.name in self._stale:
                continue
            ts, value = seen
            if now - ts > STALE_AFTER * self.device.interval_of(point):
                self._stale.add(point.name)
                out.append(
                    Reading(self.device_id, point.name, value, UNCERTAIN, ts, point.unit, "stale")
                )
        return out


def device_limit(device: ModbusDevice, table: str) -> int:
    return device.max_bits_per_request if table in BIT_TABLES else device.max_registers_per_request


def create_sources(devices: list[ModbusDevice]) -> list[ModbusSource]:
    """One source per device; devices with the same link key share one link."""
    by_key: dict[tuple[str, ...], list[ModbusDevice]] = {}
    for device in devices:
        by_key.setdefault(device.link_key, []).append(device)
    sources: list[ModbusSource] = []
    for members in by_key.values():
        link = ModbusLink(members)
        sources.extend(ModbusSource(device, link) for device in members)
    return sources
