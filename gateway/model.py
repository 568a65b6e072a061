"""The common information model: one reading type used everywhere downstream of the adapters.

A reading is a slotted dataclass, not a pydantic model: the hot path builds one per value, so it
must cost well under a microsecond. Pydantic is for configuration only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

Scalar: TypeAlias = bool | int | float | str
# Arrays (OPC UA) become JSON arrays.
Value: TypeAlias = Scalar | list["Value | None"]

GOOD: Final = "good"
UNCERTAIN: Final = "uncertain"
BAD: Final = "bad"


@dataclass(slots=True)
class Reading:
    """One sample of one point.

    ``ts`` is when the device value was sampled (the source timestamp when the protocol gives one),
    as seconds since the epoch. ``value`` is ``None`` only for a not-good reading that has no value.
    ``reason`` says why a reading is not good (``"timeout"``, ``"connection refused"``...).
    """

    device: str
    point: str
    value: Value | None
    quality: str
    ts: float
    unit: str | None = None
    reason: str | None = None


def bad_readings(
    device: str, points: list[tuple[str, str | None]], reason: str, ts: float
) -> list[Reading]:
    """Readings that mark every listed ``(point, unit)`` of a device bad for the same reason."""
    return [Reading(device, name, None, BAD, ts, unit, reason) for name, unit in points]
