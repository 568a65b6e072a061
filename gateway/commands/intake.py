"""Command messages between the transport and the router: a bounded queue drained at a bounded
rate, so a flood of messages costs an append each, never the readings' share of the event loop.

Nothing is parsed here. A message that finds the queue full is dropped and counted (one log
line per interval, not one per message); it gets no answer, as a caller of an overloaded
gateway sees a timeout. Payloads are cut to what the router reads, so the queue's memory is
bounded too.
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


class Intake:
    def __init__(self, rate: float, size: int) -> None:
        """``rate``: messages handed on per second (a burst waits its turn); ``size``: messages
        waiting at most."""
        self.rate = rate
        self.size = size
        self.queue: deque[Incoming] = deque()
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
        if len(self.queue) >= self.size:
            self.dropped.add()
            return
        if len(message.payload) > MAX_PAYLOAD:  # enough for the router to say "too large"
            message = message.cut(MAX_PAYLOAD + 1)
        self.queue.append(message)
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
                message = self.queue.popleft()
                try:
                    handle(message)
                except Exception:  # a bug must cost one message, never the gateway
                    log.exception("command message not handled", topic=message.topic)
        finally:
            self.dropped.close()
