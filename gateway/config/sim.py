"""Schema of the per-point ``sim:`` block: which generator the simulator uses for that point.

It lives in the core config (not in ``simulators/``) because every protocol's points may carry it
and ``validate`` must check it; ``run`` ignores it. Per-point records, so slotted dataclasses like
the points (see ``POINT_CONFIG``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import model_validator
from pydantic.dataclasses import dataclass

from gateway.config.types import POINT_CONFIG, Duration


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class Sine:
    min: float = 0.0
    max: float = 100.0
    period: Duration = 10.0


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class Ramp:
    """A sawtooth from ``min`` to ``max`` over ``period``."""

    min: float = 0.0
    max: float = 100.0
    period: Duration = 10.0


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class RandomWalk:
    start: float | None = None  # default: middle of [min, max]
    step: float = 1.0
    min: float = 0.0
    max: float = 100.0
    interval: Duration = 1.0


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class Counter:
    start: int = 0
    step: int = 1
    interval: Duration = 1.0


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class Toggle:
    period: Duration = 2.0


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class SimSpec:
    """Exactly one generator, e.g. ``{sine: {period: 5s}}`` or ``{constant: 21.5}``."""

    constant: bool | int | float | str | None = None
    sine: Sine | None = None
    ramp: Ramp | None = None
    random_walk: RandomWalk | None = None
    counter: Counter | None = None
    toggle: Toggle | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_params(cls, data: Any) -> Any:
        # `{counter: }` (null parameters) means "all defaults", like `{counter: {}}`.
        if isinstance(data, dict):
            return {k: ({} if v is None and k != "constant" else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SimSpec:
        names = [field.name for field in dataclasses.fields(self)]
        if sum(getattr(self, name) is not None for name in names) != 1:
            raise ValueError(f"sim takes exactly one generator: one of {', '.join(names)}")
        return self
