"""The contract between an adapter and the core.

A source is one device. ``readings()`` is an async iterator that yields a batch of readings per
poll cycle (or per subscription notification batch) and runs until cancelled: it owns its
connection, its timeouts and its reconnect backoff, and never raises for a device fault. A device
fault becomes bad-quality readings, so one dead device never stops the others; the source also
keeps its connection ``state`` up to date before yielding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gateway.model import Reading, Sample, Scalar, Value
from gateway.stats import DeviceStats

CONNECTED = "connected"
DISCONNECTED = "disconnected"  # the device does not answer (timeout, refused, lost)
ERROR = "error"  # it answers but cannot be used as configured (e.g. an untrusted certificate)


class Source(Protocol):
    device_id: str
    # (state, reason): one of the three above; the runtime publishes it, retained, on change.
    state: tuple[str, str | None]
    stats: DeviceStats  # counted by the source, read by /metrics

    def readings(self) -> AsyncIterator[Sequence[Sample]]:
        """Batches of readings (or blocks of values: ``gateway.model.Block``), forever; cancel
        the consuming task to stop."""
        ...

    async def close(self) -> None:
        """Release the connection. Safe to call more than once."""
        ...


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a write did: the value before, what the device should hold now, what it holds."""

    old: Value | None  # read just before writing (None when that read gave no value)
    expected: Value  # the written value at the point's resolution (e.g. float32, a 0.1 scale)
    reading: Reading  # read back right after writing; published as a normal reading


@runtime_checkable
class Writable(Protocol):
    """A source that can write its device's points (commands: docs/device-map.md)."""

    device_id: str
    state: tuple[str, str | None]

    def check(self, point: str, value: Scalar) -> None:
        """Raise ``CommandError`` when the value cannot fit the point, as far as that is known
        without the device: a bad command is refused as such while the device is down."""
        ...

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        """Read the old value, write ``value``, read it back: one uninterrupted sequence on the
        device's connection, so no poll request of the device runs in between.

        Raises ``CommandError`` before sending anything when the value does not fit the point
        (a wrong type, out of the data type's range), ``DeviceError`` when the device fails.
        The caller has checked ``writable``, ``min``/``max``/``allowed`` and bounds the time.
        """
        ...


def raise_if_cancelling(task: asyncio.Task[Any] | None = None) -> None:
    """Re-raise a cancellation that a library turned into an error.

    Protocol libraries wait with ``asyncio.wait_for`` (pymodbus does). On Python 3.11, a
    cancellation that arrives as the answer does is dropped (``wait_for`` returns the answer),
    and one that arrives as the socket closes surfaces as an I/O error. Either way the task is
    still marked as being cancelled: every adapter checks after each request, so a source
    cannot poll on forever and block shutdown. ``task``: the current task, when the caller
    holds it (on Python 3.11 asking for it costs a ``getpid`` system call, per request).
    """
    if task is None:
        task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
