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
from collections.abc import AsyncIterator, Sequence
from time import perf_counter
from typing import Any

import structlog

from adapters.modbus.block import RequestDecoder
from adapters.modbus.config import BIT_TABLES, ModbusDevice
from adapters.modbus.decode import PointCodec, shared_codec
from adapters.modbus.errors import ModbusExceptionAnswer
from adapters.modbus.link import ModbusLink
from adapters.modbus.plan import Address, PollGroup, ReadRequest, plan_device, plan_reads
from adapters.modbus.write import command_value, write_point
from gateway.errors import DeviceError
from gateway.model import BAD, UNCERTAIN, Reading, Sample, Scalar, bad_readings
from gateway.schedule import grid_due, poll_phase, slot_phase, until_due
from gateway.source import CONNECTED, DISCONNECTED, WriteOutcome, raise_if_cancelling
from gateway.stats import DeviceStats

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
        shared: dict[tuple[object, ...], PointCodec] = {}
        self._codecs = {
            p.name: shared_codec(p, device.byte_order_of(p), device.word_order_of(p), shared)
            for p in device.points
        }
        self._points = {p.name: p for p in device.points}
        self._plan(plan_device(device))
        self._log = log.bind(device=device.id, link=link.name)
        self.state: tuple[str, str | None] = (DISCONNECTED, "not connected yet")
        self.stats = DeviceStats()
        self._refusals: set[str] = set()  # exception answers logged already

    def _plan(self, groups: list[PollGroup]) -> None:
        """Adopt a plan: its requests, each with its decoder (staleness is tracked afresh)."""
        self.groups = groups
        self._schedule = [
            (group, [self._decoder(r, group.interval) for r in group.requests]) for group in groups
        ]
        self._decoders = [d for _, decoders in self._schedule for d in decoders]

    def _decoder(self, request: ReadRequest, interval: float) -> RequestDecoder:
        return RequestDecoder(self.device_id, request, interval, self._codecs)

    async def readings(self) -> AsyncIterator[Sequence[Sample]]:
        device, link = self.device, self.link
        loop = asyncio.get_running_loop()
        due = {group.interval: loop.time() for group in self.groups}
        phase = poll_phase(self.device_id)  # the first poll is immediate, then in phase
        phases = {g.interval: slot_phase(phase, g.interval) for g in self.groups}
        outage: str | None = None  # reason of the current outage, None while healthy
        while True:
            now = await until_due(due)
            groups = [g for g in self._schedule if due[g[0].interval] <= now]
            if not groups:
                continue  # woke a moment early (the loop's timer resolution): sleep the rest
            self.stats.polls += 1
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
                self.stats.failed(exc)
                if exc.connection_lost and link.connected:
                    link.failed(exc.reason)
                if exc.reason != outage:
                    self._log.warning("device unreachable", reason=exc.reason)
                    outage = exc.reason
                    self.state = (DISCONNECTED, exc.reason)
                    for decoder in self._decoders:
                        decoder.forget()
                    yield bad_readings(device.id, device.points, exc.reason, time.time())
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
            # Fixed-rate schedule on a grid shared by the devices of one phase: periods do not
            # drift, and if we fell behind, missed slots are skipped instead of bursting.
            now = loop.time()
            for group, _ in groups:
                interval = group.interval
                due[interval] = grid_due(due[interval], interval, now, phases[interval])

    async def close(self) -> None:
        self.link.release()

    def check(self, point: str, value: Scalar) -> None:
        command_value(self._points[point], self._codecs[point], value)

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        """A command (``gateway.source.Writable``): see adapters/modbus/write.py."""
        return await write_point(
            self.link, self.device, self._points[point], self._codecs[point], value
        )

    async def _connect_and_poll(
        self, groups: list[tuple[PollGroup, list[RequestDecoder]]]
    ) -> list[Sample]:
        await self.link.connect(self.device.pause_after_connect)
        return await self._poll(groups, asyncio.current_task())

    async def _poll(
        self, groups: list[tuple[PollGroup, list[RequestDecoder]]], task: asyncio.Task[Any] | None
    ) -> list[Sample]:
        batch: list[Sample] = []
        learned = False
        first = True
        pause = self.device.pause_between_requests
        for _, decoders in groups:
            for decoder in decoders:
                if not first and pause:
                    await asyncio.sleep(pause)
                first = False
                learned |= await self._read_request(decoder, batch, task)
        if learned:
            self._plan(plan_device(self.device, frozenset(self.holes), frozenset(self.isolated)))
        return batch

    async def _read_request(
        self, decoder: RequestDecoder, batch: list[Sample], task: asyncio.Task[Any] | None
    ) -> bool:
        """Read one request into ``batch``; True when it taught the device a hole."""
        device, request, stats = self.device, decoder.request, self.stats
        stats.requests += 1
        try:
            async with self.link.lock:
                started = perf_counter()
                values = await self.link.read(
                    request.table, request.start, request.count, device.unit_id, device.retries
                )
                stats.read_seconds.observe(perf_counter() - started)
            raise_if_cancelling(task)
        except ModbusExceptionAnswer as exc:
            stats.failed(exc)
            decoder.forget()
            splittable = request.unused or len({s.address for s in request.slots}) > 1
            if exc.code == 2 and splittable:  # flags of one register cannot be split further
                return await self._learn_and_split(decoder, batch, task)
            if exc.reason not in self._refusals:  # said once per reason; the points say each
                self._refusals.add(exc.reason)
                self._log.warning(
                    "the device refuses a request: its points are bad",
                    reason=exc.reason,
                    table=request.table,
                    addresses=f"{request.start}..{request.start + request.count - 1}",
                    points=[s.point.name for s in request.slots][:10],
                )
            now = time.time()
            batch.extend(
                Reading(device.id, s.point.name, None, BAD, now, s.point.unit, exc.reason)
                for s in request.slots
            )
            return False
        if isinstance(values, bytes):
            decoder.decode(values, time.time(), batch)
        else:
            decoder.decode_bits(values, time.time(), batch)
        return False

    async def _learn_and_split(
        self, decoder: RequestDecoder, batch: list[Sample], task: asyncio.Task[Any] | None
    ) -> bool:
        request = decoder.request
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
            await self._read_request(self._decoder(part, decoder.interval), batch, task)
        return True

    def _next_stale_in(self) -> float | None:
        """Seconds until the next request's values turn stale; None when none can."""
        soonest: float | None = None
        for decoder in self._decoders:
            if decoder.last_ts is None or decoder.stale:
                continue
            at = decoder.last_ts + STALE_AFTER * decoder.interval
            if soonest is None or at < soonest:
                soonest = at
        return None if soonest is None else max(soonest - time.time(), 0.001)

    def _stale_readings(self) -> list[Sample]:
        """The last values, ``uncertain: stale``, of requests not answered for 3 intervals."""
        now = time.time()
        out: list[Sample] = []
        for decoder in self._decoders:
            ts = decoder.last_ts
            if ts is None or decoder.stale or now - ts <= STALE_AFTER * decoder.interval:
                continue
            decoder.stale = True
            names, units = decoder.points.names, decoder.points.units
            out.extend(
                Reading(self.device_id, name, value, UNCERTAIN, ts, unit, "stale")
                for name, unit, value in zip(names, units, decoder.last_values, strict=True)
                if value is not None
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
