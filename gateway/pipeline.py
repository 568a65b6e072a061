"""Transforms between the adapters and the sink. A stage is a plain callable on a batch.

Scaling belongs to decoding (it depends on the raw register format), so it lives in the adapters;
what is protocol-independent lives here: report by exception (deadband) and quality transitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gateway.config.schema import DeviceConfig
from gateway.model import Reading, Value


class Transform(Protocol):
    def __call__(self, batch: list[Reading]) -> list[Reading]: ...

    def covers(self, device_id: str) -> bool:
        """Whether the transform acts on this device's readings at all. A device no
        transform covers sends its blocks of values on untouched (no reading objects)."""
        ...


class Deadband:
    """Drops readings that carry no news.

    A reading passes when its quality or reason changed, when its point has no deadband, or when
    its value moved by more than the point's absolute deadband since the last *published* value
    (``deadband: 0`` = publish on any change). Comparing with the last published value, not the
    last sample, stops a slow drift from hiding under the deadband forever.
    """

    def __init__(self, devices: Iterable[DeviceConfig]) -> None:
        self._last: dict[tuple[str, str], tuple[Value | None, str, str | None]] = {}
        self.track(devices)

    def track(self, devices: Iterable[DeviceConfig], keep: Iterable[str] = ()) -> None:
        """Follow these devices (after a reload): those in ``keep`` keep their last values."""
        self._deadband: dict[tuple[str, str], float] = {
            (d.id, p.name): p.deadband for d in devices for p in d.points if p.deadband is not None
        }
        kept = set(keep)
        self._last = {key: last for key, last in self._last.items() if key[0] in kept}
        self._devices = {device for device, _ in self._deadband}

    def covers(self, device_id: str) -> bool:
        return device_id in self._devices

    def __call__(self, batch: list[Reading]) -> list[Reading]:
        if not self._deadband:
            return batch
        out = []
        deadbands, last = self._deadband, self._last
        for reading in batch:
            key = (reading.device, reading.point)
            band = deadbands.get(key)
            if band is not None:
                previous = last.get(key)
                if previous is not None and not _news(previous, reading, band):
                    continue
                last[key] = (reading.value, reading.quality, reading.reason)
            out.append(reading)
        return out

    def remember(self, reading: Reading) -> None:
        """Make ``reading`` the last published value of its point (published outside here)."""
        key = (reading.device, reading.point)
        if key in self._deadband:
            self._last[key] = (reading.value, reading.quality, reading.reason)


def _news(previous: tuple[Value | None, str, str | None], reading: Reading, band: float) -> bool:
    value, quality, reason = previous
    if quality != reading.quality or reason != reading.reason:
        return True
    new = reading.value
    if (
        isinstance(new, int | float)
        and isinstance(value, int | float)
        and not isinstance(new, bool)
        and not isinstance(value, bool)
    ):
        return abs(new - value) > band if band else new != value
    return new != value
