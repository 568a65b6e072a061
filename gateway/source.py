"""The contract between an adapter and the core.

A source is one device. ``readings()`` is an async iterator that yields a batch of readings per
poll cycle (or per subscription notification batch) and runs until cancelled: it owns its
connection, its timeouts and its reconnect backoff, and never raises for a device fault. A device
fault becomes bad-quality readings, so one dead device never stops the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.model import Reading


class Source(Protocol):
    device_id: str

    def readings(self) -> AsyncIterator[list[Reading]]:
        """Batches of readings, forever; cancel the consuming task to stop."""
        ...

    async def close(self) -> None:
        """Release the connection. Safe to call more than once."""
        ...
