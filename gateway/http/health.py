"""Is the gateway doing its job? Liveness (it runs) and readiness (the broker is connected and
every device delivers), with the reason for each device, for /healthz and /readyz.

A device that polls is stalled when no good reading came for ``stale_after`` (default three of
its intervals); one that reports by exception (an OPC UA subscription) only when it is not
connected: a value that does not change is not stalled, only missing readings are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.model import GOOD, Block, Reading, Sample
from gateway.source import CONNECTED

STALE_INTERVALS = 3


@dataclass
class DeviceHealth:
    stale_after: float | None  # None: the device reports by exception
    last_good: float | None = None  # monotonic time of the last good reading
    state: tuple[str, str | None] = ("disconnected", "not connected yet")


class Health:
    def __init__(
        self,
        intervals: Mapping[str, float | None],
        stale_after: float | None,
        broker_connected: Callable[[], bool],
        buffer_bytes: Callable[[], int],
        buffer_alarm: int | None,
        last_error: Callable[[str], str | None] = lambda _device: None,
    ) -> None:
        """``intervals``: each device's expected reading interval (None: by exception);
        ``stale_after``: one bound for every polling device instead of three intervals."""
        self.stale_after = stale_after
        self.devices: dict[str, DeviceHealth] = {}
        self.track(intervals)
        self.broker_connected = broker_connected
        self.buffer_bytes = buffer_bytes
        self.buffer_alarm = buffer_alarm
        self.last_error = last_error  # a device's latest error, to say why it stalls
        # Why a connected broker gets no data yet (a Sparkplug primary host offline), or None.
        self.held: Callable[[], str | None] = lambda: None
        self.running = False

    def track(self, intervals: Mapping[str, float | None], keep: Iterable[str] = ()) -> None:
        """Follow these devices (after a reload): those in ``keep`` carry their state over."""
        kept = {d: self.devices[d] for d in keep if d in self.devices}
        stale_after = self.stale_after
        self.devices = {
            device: kept.get(device)
            or DeviceHealth(
                None if interval is None else (stale_after or STALE_INTERVALS * interval)
            )
            for device, interval in intervals.items()
        }

    def seen(self, device: str, state: tuple[str, str | None], batch: Sequence[Sample]) -> None:
        """A batch of the device's samples, before any transform (the pump calls it)."""
        health = self.devices[device]
        health.state = state
        for sample in batch:
            if isinstance(sample, Block) or (
                isinstance(sample, Reading) and sample.quality == GOOD
            ):
                health.last_good = time.monotonic()
                return

    def ready(self) -> tuple[bool, dict[str, object]]:
        """Ready or not, and why, as a JSON-ready report."""
        now = time.monotonic()
        devices: dict[str, object] = {}
        all_ready = True
        for device, health in self.devices.items():
            state, reason = health.state
            age = None if health.last_good is None else round(now - health.last_good, 3)
            why = None
            if state != CONNECTED:
                why = f"{state}: {reason}" if reason else state
            elif health.stale_after is not None and (age is None or age > health.stale_after):
                why = f"stalled: no good reading for {health.stale_after:g} s"
                if (error := self.last_error(device)) is not None:
                    why += f" (last error: {error})"
            devices[device] = {
                "ready": why is None,
                "state": state,
                "reason": why,
                "last_good_age_s": age,
            }
            all_ready = all_ready and why is None
        connected = self.broker_connected()
        buffered = self.buffer_bytes()
        over = self.buffer_alarm is not None and buffered > self.buffer_alarm
        held = self.held() if connected else None
        ready = self.running and connected and held is None and all_ready and not over
        broker: dict[str, object] = {"connected": connected}
        if held is not None:
            broker["held"] = held
        report: dict[str, object] = {
            "ready": ready,
            "broker": broker,
            "buffer": {"bytes": buffered, "alarm": self.buffer_alarm, "over_alarm": over},
            "devices": devices,
        }
        return ready, report
