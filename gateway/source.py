"""The contract between an adapter and the core.

A source is one device. ``readings()`` is an async iterator that yields a batch of readings per
poll cycle (or per subscription notification batch) and runs until cancelled: it owns its
connection, its timeouts and its reconnect backoff, and never raises for a device fault. A device
fault becomes bad-quality readings, so one dead device never stops the others; the source also
keeps its connection ``state`` up to date before yielding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.model import Reading

CONNECTED = "connected"
DISCONNECTED = "disconnected"  # the device does not answer (timeout, refused, lost)
ERROR = "error"  # it answers but cannot be used as configured (e.g. an untrusted certificate)


class Source(Protocol):
    device_id: str
    # (state, reason): one of the three above; the runtime publishes it, retained, on change.
    state: tuple[str, str | None]

    def readings(self) -> AsyncIterator[list[Reading]]:
        """Batches of readings, forever; cancel the consuming task to stop."""
        ...

    async def close(self) -> None:
        """Release the connection. Safe to call more than once."""
        ...


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library turned into an error.

    Protocol libraries wait with ``asyncio.wait_for`` (pymodbus does). On Python 3.11, a
    cancellation that arrives as the answer does is dropped (``wait_for`` returns the answer),
    and one that arrives as the socket closes surfaces as an I/O error. Either way the task is
    still marked as being cancelled: every adapter checks after each request, so a source
    cannot poll on forever and block shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
