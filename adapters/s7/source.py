"""Polls one S7 PLC on its plan (plan.py) through python-snap7's asyncio client.

- A PLC that cannot be reached, drops the connection or does not answer within ``timeout``
  marks every point of the device bad (once per outage, logged once); the connection is made
  again with capped, jittered backoff.
- A PLC that refuses one request (an address out of range, a data block that does not exist)
  marks only that request's points bad: a request of several points is split at once, the
  points it refuses alone are read alone from then on (until the next connection), so they
  are the only bad ones, and the others are read together again.
- A poll whose every request is refused (or unreadable) ends the connection, as an outage.
- The PDU size the PLC negotiates sets how many bytes one request reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from struct import error as struct_error
from time import perf_counter
from typing import Any

import structlog
from snap7.async_client import AsyncClient
from snap7.error import S7Error
from snap7.type import Area as Snap7Area
from snap7.type import Parameter

from adapters.s7.codec import Decode, Encode, decoder, encoder
from adapters.s7.config import S7Device
from adapters.s7.errors import S7Refusal, translate
from adapters.s7.plan import PollGroup, ReadRequest, plan_device, plan_reads
from adapters.s7.write import as_read, command_bytes
from gateway.backoff import Backoff
from gateway.errors import DeviceError
from gateway.model import BAD, GOOD, Reading, Sample, Scalar, bad_readings
from gateway.schedule import grid_due, poll_phase, slot_phase, until_due
from gateway.source import CONNECTED, DISCONNECTED, WriteOutcome, raise_if_cancelling
from gateway.stats import DeviceStats

log = structlog.get_logger("adapters.s7")

# python-snap7 logs every connect, disconnect and stale packet: we report outages once.
logging.getLogger("snap7").setLevel(logging.ERROR)

AREAS = {"DB": Snap7Area.DB, "M": Snap7Area.MK, "I": Snap7Area.PE, "Q": Snap7Area.PA}


class S7Source:
    """A ``gateway.source.Source`` for one S7 PLC, on a connection of its own."""

    def __init__(self, device: S7Device) -> None:
        self.device = device
        self.device_id = device.id
        self.state: tuple[str, str | None] = (DISCONNECTED, "not connected yet")
        self.stats = DeviceStats()
        self.lock = asyncio.Lock()  # one request at a time on the connection (polls, writes)
        self._points = {p.name: p for p in device.points}
        self._decoders: dict[str, Decode] = {p.name: decoder(p) for p in device.points}
        self._encoders: dict[str, Encode] = {
            p.name: encoder(p) for p in device.points if p.writable
        }
        self._client: AsyncClient | None = None
        self._pdu = device.pdu_size
        self._told_pdu: int | None = None
        self._alone: set[str] = set()  # points the PLC refused in company: read on their own
        self.groups: list[PollGroup] = plan_device(device)
        self._log = log.bind(device=device.id, plc=device.endpoint)
        self._refusals: set[str] = set()  # reasons logged already
        self._answered = False  # this poll: some request was answered
        self._refused_for: str | None = None  # this poll: the reason of a refusal

    async def readings(self) -> AsyncIterator[Sequence[Sample]]:
        device = self.device
        loop = asyncio.get_running_loop()
        due = {group.interval: loop.time() for group in self.groups}
        phase = poll_phase(self.device_id)
        phases = {g.interval: slot_phase(phase, g.interval) for g in self.groups}
        backoff = Backoff(initial=0.5, cap=30.0)
        outage: str | None = None
        while True:
            now = await until_due(due)
            groups = [g for g in self.groups if due.get(g.interval, now + 1) <= now]
            if not groups:
                continue  # woke a moment early: sleep the rest
            self.stats.polls += 1
            try:
                await self._connect()
                # A connection just made may have changed the plan (the PDU it negotiated).
                intervals = {g.interval for g in groups}
                groups = [g for g in self.groups if g.interval in intervals]
                batch = await self._poll(groups)
            except DeviceError as exc:
                raise_if_cancelling()
                self.stats.failed(exc)
                await self._disconnect()
                if exc.reason != outage:
                    self._log.warning("PLC unreachable", reason=exc.reason)
                    outage = exc.reason
                    self.state = (DISCONNECTED, exc.reason)
                    yield bad_readings(device.id, device.points, exc.reason, time.time())
                await asyncio.sleep(backoff.next_delay())
                due = {group.interval: loop.time() for group in self.groups}
                continue
            backoff.reset()
            if outage is not None:
                self._log.info("PLC recovered", after=outage)
                outage = None
            self.state = (CONNECTED, None)
            yield batch
            now = loop.time()
            for group in groups:
                interval = group.interval
                due[interval] = grid_due(due[interval], interval, now, phases[interval])

    async def close(self) -> None:
        await self._disconnect()

    def check(self, point: str, value: Scalar) -> None:
        """The value against the point's type; the bytes it shares (a BOOL's byte, a STRING's
        declared length) are checked again against what the PLC holds when written."""
        spec = self._points[point]
        command_bytes(spec, self._encoders[point], value, bytes(spec.size))

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        """A command (``gateway.source.Writable``): read, write and read back the point's
        bytes under the connection's lock (write.py)."""
        spec = self._points[point]
        where, size = spec.where, spec.size
        client = self._client
        if client is None or self.state[0] != CONNECTED:
            raise DeviceError(self.state[1] or "not connected")
        area, decode = AREAS[where.area], self._decoders[point]
        timeout = self.device.timeout
        try:
            # A poll holds the lock for one request at a time, each bounded by the timeout.
            async with asyncio.timeout(timeout):
                await self.lock.acquire()
        except TimeoutError:
            raise DeviceError("the PLC's connection stayed busy", connection_lost=False) from None
        started = False  # a request under way: cut, it leaves the stream unusable
        try:
            if self._client is not client:
                raise DeviceError("connection lost")
            started = True
            async with asyncio.timeout(timeout):
                old = bytes(await client.read_area(area, where.db, where.byte, size))
            data = command_bytes(spec, self._encoders[point], value, old)
            async with asyncio.timeout(timeout):
                await client.write_area(area, where.db, where.byte, bytearray(data))
            async with asyncio.timeout(timeout):
                after = bytes(await client.read_area(area, where.db, where.byte, size))
        except (S7Error, OSError, TimeoutError) as exc:
            error = translate(exc)
            if error.connection_lost:
                await self._disconnect(client)  # the next poll connects again
            raise error from exc
        except asyncio.CancelledError:
            if started:
                await self._disconnect(client)
            raise
        finally:
            self.lock.release()
        now = time.time()
        new = as_read(decode, after)
        quality, reason = (GOOD, None) if new is not None else (BAD, "not readable after write")
        reading = Reading(self.device_id, point, new, quality, now, spec.unit, reason)
        expected = as_read(decode, data)
        if expected is None:  # what was encoded does not read back: a bug of ours
            raise DeviceError("the written value does not read back", connection_lost=False)
        return WriteOutcome(as_read(decode, old), expected, reading)

    # -- the connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._client is not None:
            if self._client.get_connected():
                return
            await self._disconnect(self._client)  # closed under us: let its socket go
        device = self.device
        client = AsyncClient()
        client.set_param(Parameter.PDURequest, device.pdu_size)
        rack, slot = device.rack, device.slot
        if device.local_tsap is not None and device.remote_tsap is not None:
            # A configured connection: the client takes the remote TSAP as rack and slot.
            remote = device.remote_tsap
            client.local_tsap = device.local_tsap
            client.connection_type = remote >> 8
            rack, slot = (remote & 0xFF) >> 5, remote & 0x1F
        try:
            async with asyncio.timeout(device.timeout):
                await client.connect(device.host, rack, slot, device.port)
        except (S7Error, OSError, TimeoutError) as exc:
            await _quietly_disconnect(client)
            raise translate(exc) from exc
        except asyncio.CancelledError:
            await _quietly_disconnect(client)
            raise
        if client.connection is not None:
            client.connection.timeout = device.timeout
        self._client = client
        pdu = client.get_pdu_length()
        # A new connection: points refused before (a data block being downloaded, PUT/GET
        # switched on since) are tried in company again.
        if pdu != self._told_pdu:  # said at the first connection, and when it changes
            self._log.info("PDU size negotiated", asked=device.pdu_size, given=pdu)
            self._told_pdu = pdu
        if pdu != self._pdu or self._alone:
            self._pdu = pdu
            self._alone.clear()
            self._replan()

    async def _disconnect(self, which: AsyncClient | None = None) -> None:
        """Close the connection (``which``: only if it is still that one; a poll may have
        made a new one meanwhile)."""
        client = self._client
        if client is None or (which is not None and client is not which):
            return
        self._client = None
        await _quietly_disconnect(client)

    def _replan(self) -> None:
        self.groups = plan_device(self.device, self._pdu, frozenset(self._alone))

    # -- reading -----------------------------------------------------------------------------

    async def _poll(self, groups: list[PollGroup]) -> list[Sample]:
        batch: list[Sample] = []
        task = asyncio.current_task()
        learned = False
        self._answered, self._refused_for = False, None
        for group in groups:
            for request in group.requests:
                learned |= await self._read(request, batch, task) == "split"
        if learned:
            self._replan()
        if not self._answered and self._refused_for is not None:
            # Nothing read at all: the PLC refuses every request (PUT/GET off), or what it
            # sends cannot be read (errors.py). A new connection, with backoff, covers both.
            raise DeviceError(
                f"the PLC refuses every request: {self._refused_for}", connection_lost=True
            )
        return batch

    async def _read(
        self, request: ReadRequest, batch: list[Sample], task: asyncio.Task[Any] | None
    ) -> str | None:
        """Read one request into ``batch``: ``"split"`` when the PLC refused it in company
        (its points were read one by one, the plan changes), ``"refused"`` when it refused a
        point alone, None when it answered."""
        stats = self.stats
        stats.requests += 1
        try:
            async with self.lock:
                client = self._client
                if client is None:  # a write's failure closed it meanwhile
                    raise DeviceError("connection lost")
                started = perf_counter()
                async with asyncio.timeout(self.device.timeout):
                    data = await client.read_area(
                        AREAS[request.area], request.db, request.start, request.size
                    )
                stats.read_seconds.observe(perf_counter() - started)
            raise_if_cancelling(task)
        except (S7Error, OSError, TimeoutError) as exc:
            error = translate(exc)
            if not isinstance(error, S7Refusal):
                raise error from exc
            stats.failed(error)
            self._refused_for = error.reason
            if len(request.slots) > 1:
                await self._split(request, batch, task)
                return "split"
            self._refused(request, error)
            now = time.time()
            point = request.slots[0].point
            batch.append(
                Reading(self.device_id, point.name, None, BAD, now, point.unit, error.reason)
            )
            return "refused"
        self._answered = True
        self._decode(request, bytes(data), batch)
        return None

    async def _split(
        self, request: ReadRequest, batch: list[Sample], task: asyncio.Task[Any] | None
    ) -> None:
        """The PLC refused a request of several points: each is read on its own, and those
        it refuses alone are read alone from now on (until the next connection), so only
        they are bad and the others are read together again."""
        names = frozenset(s.point.name for s in request.slots)
        self._log.info(
            "the PLC refused a request: its points are read one by one", request=str(request)
        )
        refused: set[str] = set()
        for part in plan_reads([s.point for s in request.slots], 1 << 16, 0, names):
            if await self._read(part, batch, task) == "refused":
                refused.update(s.point.name for s in part.slots)
        self._alone = (self._alone - names) | refused

    def _refused(self, request: ReadRequest, error: S7Refusal) -> None:
        if error.reason in self._refusals:
            return  # said once per reason; the points say it each time
        self._refusals.add(error.reason)
        self._log.warning(
            "the PLC refuses a read: its point is bad",
            reason=error.reason,
            request=str(request),
            point=request.slots[0].point.name,
        )

    def _decode(self, request: ReadRequest, data: bytes, batch: list[Sample]) -> None:
        now = time.time()
        device_id, decoders = self.device_id, self._decoders
        for slot in request.slots:
            point = slot.point
            try:
                value = decoders[point.name](data, slot.offset)
            except (ValueError, IndexError, struct_error) as exc:
                reason = str(exc) if isinstance(exc, ValueError) else "short answer"
                batch.append(Reading(device_id, point.name, None, BAD, now, point.unit, reason))
                continue
            batch.append(Reading(device_id, point.name, value, GOOD, now, point.unit))


async def _quietly_disconnect(client: AsyncClient) -> None:
    """Close a client's connection; one that is already broken closes all the same."""
    with contextlib.suppress(S7Error, OSError):
        await client.disconnect()


def create_sources(devices: list[S7Device]) -> list[S7Source]:
    return [S7Source(device) for device in devices]
