"""When a polled device is polled: each device in one of a few slots of its interval, on a
grid that does not drift (shared by every protocol that polls)."""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Mapping

PHASES = 10  # a device is polled in one of this many slots of its interval
MIN_SLOT = 0.05  # seconds between two slots at least


def poll_phase(device_id: str) -> float:
    """Where in its poll interval a device is polled: one of ``PHASES`` slots, fixed by its id.

    Devices started together would otherwise all be polled in the same millisecond, every
    interval: their answers, decoding and MQTT messages arrive as one burst, and the last
    message of a burst waits for all the others. Spread over the interval, each slot's values
    go out while the other slots wait for their turn. Ten slots, not a phase per device: the
    devices of one slot are polled together (their due times are the same grid point), so the
    loop still handles their answers, buffer writes and MQTT packets in batches (a phase per
    device costs a wake-up each). Fixed by the id, the same after every restart.
    """
    return (zlib.crc32(device_id.encode()) % PHASES) / PHASES


def slot_phase(phase: float, interval: float) -> float:
    """``phase`` on a coarser grid when the interval is short: slots at least ``MIN_SLOT``
    apart (a 100 ms interval has 2 slots, not 10), so a small plant's polls still come in
    groups and each group costs one wakeup, one buffer commit and one burst of messages."""
    slots = max(1, min(PHASES, int(interval / MIN_SLOT + 1e-9)))
    return math.floor(phase * slots + 1e-9) / slots


def grid_due(last: float, interval: float, now: float, phase: float) -> float:
    """The poll after the one due at ``last``: the first point of the grid ``k * interval +
    phase * interval`` at least half an interval after ``last`` and not before ``now``. Polls
    of one phase share due times, and missed slots are skipped; from an immediate first poll,
    the second comes 0.5 to 1.5 intervals later (on average one), then on the grid."""
    at = max(last + interval / 2, now)
    point = math.floor(at / interval) * interval + phase * interval
    while point < at - 1e-9:
        point += interval
    return point


async def until_due(due: Mapping[float, float]) -> float:
    """Sleep until the earliest of the due times (interval -> loop time); the loop's time
    then. The caller checks what is due: a timer may wake a moment early."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    next_due = min(due.values())
    if next_due > now:
        await asyncio.sleep(next_due - now)
        now = loop.time()
    return now
