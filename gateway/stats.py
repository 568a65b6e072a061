"""Counters the hot path can afford: plain integers and bucket counts that ``/metrics`` reads
when it is scraped (``gateway/http/metrics.py``), so no metrics library is on the hot path."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

from gateway.errors import DeviceError, DeviceTimeout

# Seconds a device takes to answer one read request.
READ_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from a reading's source timestamp to the broker's acknowledgement of its message.
AGE_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 86400.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per bucket (``value <= bound``, the last one unbounded) and
    their sum, as Prometheus histograms report them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, cumulative, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def error_kind(error: DeviceError) -> str:
    """A device error's kind, for counting: ``timeout``, ``connection`` (refused, lost) or
    ``answer`` (the device answered, refusing the request)."""
    if isinstance(error, DeviceTimeout):
        return "timeout"
    return "connection" if error.connection_lost else "answer"


class DeviceStats:
    """What a source counts of its device: poll cycles, requests, errors, read durations."""

    __slots__ = ("errors", "last_error", "polls", "read_seconds", "requests")

    def __init__(self) -> None:
        self.polls = 0
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.last_error: str | None = None  # the reason of the latest (for /readyz)
        self.read_seconds = Histogram(READ_SECONDS)

    def failed(self, error: DeviceError) -> None:
        self.errors[error_kind(error)] += 1
        self.last_error = error.reason
