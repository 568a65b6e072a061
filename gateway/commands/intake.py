"""Command messages between the transport and the router: a bounded queue drained at a bounded
rate, so a flood of messages costs an append each, never the readings' share of the event loop.

Nothing is parsed here. A message that finds the queue full (``size`` messages, or
``size`` x ``BYTES_EACH`` bytes of topics, payloads and properties) is dropped and counted, one
log line per interval, not one per message; it gets no answer, as a caller of an overloaded
gateway sees a timeout. Payloads are cut to what the router reads.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog

from gateway.commands.request import MAX_PAYLOAD, Incoming
from gateway.logging import Tally

log = structlog.get_logger("gateway.commands")

BYTES_EACH = 4096  # the queue's memory: this much per message of its size, on average


class Intake:
    def __init__(self, rate: float, size: int) -> None:
        """``rate``: messages handed on per second (a burst waits its turn); ``size``: messages
        waiting at most."""
        self.rate = rate
        self.size = size
        self.queue: deque[tuple[Incoming, int]] = deque()  # (message, its bytes)
        self.bytes = 0
        self.max_bytes = size * BYTES_EACH
        self.dropped = Tally(
            log,
            "command messages dropped: more arrive than the gateway takes",
            rate=rate,
            queue=size,
            hint="commands.rate and commands.queue in the map",
        )
        self._ready = asyncio.Event()

    def offer(self, message: Incoming) -> None:
        """Take one message (on the event loop) or drop it."""
        if len(message.payload) > MAX_PAYLOAD:  # enough for the router to say "too large"
            message = message.cut(MAX_PAYLOAD + 1)
        size = message.size()
        full = self.queue and self.bytes + size > self.max_bytes  # one message always fits
        if len(self.queue) >= self.size or full:
            self.dropped.add()
            return
        self.queue.append((message, size))
        self.bytes += size
        self._ready.set()

    async def run(self, handle: Callable[[Incoming], None]) -> None:
        """Hand the messages to ``handle`` in arrival order, at most ``rate`` per second."""
        gap = 1.0 / self.rate
        due = time.monotonic()
        try:
            while True:
                if not self.queue:
                    self._ready.clear()
                    await self._ready.wait()
                now = time.monotonic()
                due = max(due, now - 1.0)  # an idle spell saves up a second's worth
                # Always yield: handling a message logs and publishes its answer.
                await asyncio.sleep(max(0.0, due - now))
                due += gap
                message, size = self.queue.popleft()
                self.bytes -= size
                try:
                    handle(message)
                except Exception:  # a bug must cost one message, never the gateway
                    log.exception("command message not handled", topic=message.topic)
        finally:
            self.dropped.close()
