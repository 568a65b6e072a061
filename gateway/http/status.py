"""The status page's memory of the plant: each point's latest value as the broker got it, and a
short trend of the numeric ones.

The pump hands every batch it sends on to ``PointTable.tap``: one list append a batch, nothing
per value, so the hot path does not pay for the page. ``Status.run`` folds the batches every
second, so no more than a second of them is held: a block only replaces the previous block of
the same points (one per request waits), a reading is applied at once. The waiting blocks are
applied value by value only when a page shows the device or the trend takes a row.

The trend is a ring per device, one row of float32 a sample: five minutes at one sample a
second, or a coarser sample when the plant's points would need more than ``TREND_BYTES``.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from gateway.config.schema import DeviceConfig
from gateway.model import GOOD, Block, NamedPoint, Points, Reading, Sample, Value

TREND_SECONDS = 300  # how far back a trend goes
TREND_BYTES = 16 << 20  # the trends of every point together, at most
TREND_TYPE = "f"  # float32: a sparkline needs no more, and takes half the memory
NAN = math.nan


@dataclass(frozen=True, slots=True)
class PointState:
    """A point's latest sample, as the page shows it."""

    value: Value | None
    quality: str
    ts: float
    reason: str | None


class PointTable:
    """One device's points: their latest samples, what changed since when, and their trend."""

    def __init__(
        self, device: str, points: Sequence[NamedPoint], slots: int, protocol: str, line: str
    ) -> None:
        self.device, self.protocol, self.line = device, protocol, line
        self.names = [p.name for p in points]
        self.units = [p.unit for p in points]
        self.index = {name: i for i, name in enumerate(self.names)}
        count = len(self.names)
        self.values: list[Value | None] = [None] * count
        self.origins: list[Sample | None] = [None] * count  # the Block or Reading of the value
        self.stamps = [0] * count  # the fold that last changed the point
        self.current = array(TREND_TYPE, [NAN]) * count  # the next trend row: good numbers, or NaN
        self.folds = 0
        self.pending: list[Sequence[Sample]] = []
        self._waiting: dict[int, Block] = {}  # by id(points): the newest block not applied yet
        self._blocks: weakref.WeakKeyDictionary[Points, slice | list[int]] = (
            weakref.WeakKeyDictionary()
        )
        self.resize(slots)

    def resize(self, slots: int) -> None:
        """A trend ring of ``slots`` rows, empty (a reload changed the plant's size)."""
        self.slots = slots
        self.trend = array(TREND_TYPE, [NAN]) * (slots * len(self.names))
        self.trend_times = array("d", [NAN]) * slots
        self.samples = 0  # trend rows written, ever (the ring's position is samples % slots)

    def tap(self, batch: Sequence[Sample]) -> None:
        """A batch as it goes to the broker (after the deadband): kept for the next fold."""
        self.pending.append(batch)

    def fold(self) -> None:
        """Take the batches tapped since the last fold: each block replaces the one of the
        same points still waiting to be applied (``settle``); a reading is applied at once,
        after the blocks before it."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        waiting = self._waiting
        for batch in pending:
            for sample in batch:
                if type(sample) is Block:
                    waiting[id(sample.points)] = sample
                elif isinstance(sample, Reading):
                    if waiting:
                        self.settle()
                    self._apply_reading(sample)

    def settle(self) -> None:
        """Apply the blocks waiting: each point then holds its newest sample. Deferred until a
        page or the trend needs the values, so a big plant's blocks are applied once per trend
        row, not once a second."""
        self.fold()  # (a no-op once pending is empty; it settles again on a reading)
        if not self._waiting:
            return
        self.folds += 1
        for block in self._waiting.values():
            self._apply_block(block)
        self._waiting.clear()

    def _apply_block(self, block: Block) -> None:
        where = self._positions(block.points)
        values = block.values
        if type(where) is slice:  # the usual case: a request's points lie together in the map
            count = len(values)
            self.values[where] = values
            self.origins[where] = [block] * count
            self.stamps[where] = [self.folds] * count
            self.current[where] = array(TREND_TYPE, values)  # a block holds numbers only
            return
        assert isinstance(where, list)
        stored, origins, stamps, current, fold = (
            self.values, self.origins, self.stamps, self.current, self.folds
        )  # fmt: skip
        for i, value in zip(where, values, strict=True):
            if i >= 0:
                stored[i], origins[i], stamps[i], current[i] = value, block, fold, value

    def _apply_reading(self, reading: Reading) -> None:
        i = self.index.get(reading.point, -1)
        if i < 0:
            return  # not a point of the map any more
        self.folds += 1
        value = reading.value
        self.values[i], self.origins[i], self.stamps[i] = value, reading, self.folds
        self.current[i] = float(value) if reading.quality == GOOD and _number(value) else NAN

    def _positions(self, points: Points) -> slice | list[int]:
        """Where a block's points sit in this table: a slice when they lie together in it,
        else each one's index (-1: not a point of the map any more)."""
        where = self._blocks.get(points)
        if where is None:
            each = [self.index.get(name, -1) for name in points.names]
            first = each[0] if each else 0
            together = first >= 0 and each == list(range(first, first + len(each)))
            where = slice(first, first + len(each)) if together else each
            self._blocks[points] = where
        return where

    def state(self, i: int) -> PointState | None:
        origin = self.origins[i]
        if origin is None:
            return None
        if type(origin) is Block:
            return PointState(self.values[i], GOOD, origin.ts, None)
        assert isinstance(origin, Reading)
        return PointState(origin.value, origin.quality, origin.ts, origin.reason)

    def changed_since(self, fold: int) -> list[int]:
        """The points a fold after ``fold`` changed (all that have a value for fold 0)."""
        return [i for i, stamp in enumerate(self.stamps) if stamp > fold]

    def sample_trend(self, now: float) -> None:
        """One trend row: each numeric point's latest good value, NaN for the others."""
        self.settle()
        count = len(self.names)
        if not count:
            return
        at = self.samples % self.slots
        self.trend[at * count : (at + 1) * count] = self.current
        self.trend_times[at] = now
        self.samples += 1

    def trend_rows(self, since: int) -> tuple[list[float], list[array[float]]]:
        """The trend rows written after the first ``since`` (at most the ring): their times,
        and per row the points' values."""
        count = len(self.names)
        first = max(since, self.samples - self.slots)
        times: list[float] = []
        rows: list[array[float]] = []
        for n in range(first, self.samples):
            at = n % self.slots
            times.append(self.trend_times[at])
            rows.append(self.trend[at * count : (at + 1) * count])
        return times, rows


def _number(value: Value | None) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Status:
    """Every device's table, kept across reloads for the devices that did not change, and the
    trend sampler."""

    def __init__(self, devices: Iterable[DeviceConfig]) -> None:
        self.tables: dict[str, PointTable] = {}
        self.period = 1.0
        self.points = 0  # of every device together
        self.track(devices)

    def track(self, devices: Iterable[DeviceConfig], keep: Iterable[str] = ()) -> None:
        """Follow these devices (after a reload): those in ``keep`` keep their values."""
        devices = list(devices)
        total = sum(len(d.points) for d in devices)
        # One sample a second for five minutes, or coarser when the points would need more.
        size = array(TREND_TYPE).itemsize
        self.period = float(max(1, math.ceil(total * TREND_SECONDS * size / TREND_BYTES)))
        slots = max(2, int(TREND_SECONDS / self.period))
        kept = {d: self.tables[d] for d in keep if d in self.tables}
        for table in kept.values():
            if table.slots != slots:
                table.resize(slots)
        self.tables = {
            d.id: kept.get(d.id) or PointTable(d.id, d.points, slots, d.protocol, d.line)
            for d in devices
        }
        self.points = total

    def table(self, device: str) -> PointTable:
        return self.tables[device]

    def tap_one(self, reading: Reading) -> None:
        """A reading sent outside a device's pump (a value read back after a command)."""
        table = self.tables.get(reading.device)
        if table is not None:
            table.tap((reading,))

    async def run(self) -> None:
        """Fold every table each second, and sample the trends every ``period`` seconds, until
        cancelled."""
        loop = asyncio.get_running_loop()
        next_sample = loop.time() + self.period
        while True:
            await asyncio.sleep(1.0)
            for table in self.tables.values():
                table.fold()
            if loop.time() >= next_sample:
                next_sample += self.period
                now = time.time()
                for table in self.tables.values():
                    table.sample_trend(now)
