"""The common information model: one reading type used everywhere downstream of the adapters.

A reading is a slotted dataclass, not a pydantic model: the hot path builds one per value, so it
must cost well under a microsecond. Pydantic is for configuration only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

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


def not_finite(value: float) -> str:
    """The reason a device's NaN or infinity is published as a bad reading (JSON has neither,
    and a null marked good would pass for a value)."""
    return "not a number (NaN)" if value != value else f"infinite value ({value})"


class NamedPoint(Protocol):
    """What ``bad_readings`` needs of a point of the map: its name and unit."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str | None: ...


def bad_readings(
    device: str, points: Iterable[NamedPoint], reason: str, ts: float
) -> list[Reading]:
    """Readings that mark every listed point of a device bad for the same reason."""
    return [Reading(device, p.name, None, BAD, ts, p.unit, reason) for p in points]


class Points:
    """The names and units of points that a source samples together, again and again.

    Built once by an adapter (one per Modbus read request, say) and passed with every block of
    their values: sinks key per-point renderings (topics, JSON fragments) on this object, so the
    hot path never formats a point's name twice. Compared by identity.
    """

    __slots__ = ("__weakref__", "names", "units")

    def __init__(self, names: tuple[str, ...], units: tuple[str | None, ...]) -> None:
        self.names = names
        self.units = units

    def __len__(self) -> int:
        return len(self.names)


@dataclass(slots=True, eq=False)
class Block:
    """Good values of several points of one device, sampled at the same moment.

    The fast lane for the common case: a poll that read plain numbers. It carries a list of
    values instead of one ``Reading`` per value; ``readings()`` turns it into readings for a
    stage that needs them (a deadband). ``values[i]`` belongs to ``points.names[i]``; values are
    numbers (int or float) only, so a sink may encode them as one JSON array. Within one batch
    a point is in at most one block, and then in no reading.
    """

    device: str
    points: Points
    values: list[int | float]
    ts: float

    def readings(self) -> list[Reading]:
        device, ts, points = self.device, self.ts, self.points
        return [
            Reading(device, name, value, GOOD, ts, unit)
            for name, unit, value in zip(points.names, points.units, self.values, strict=True)
        ]


# What a source yields per poll: readings, blocks, or both.
Sample: TypeAlias = Reading | Block


def expand(batch: Sequence[Sample]) -> list[Reading]:
    """Every sample of ``batch`` as readings, in order."""
    out: list[Reading] = []
    for sample in batch:
        if isinstance(sample, Block):
            out.extend(sample.readings())
        else:
            out.append(sample)
    return out
