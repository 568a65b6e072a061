"""Schema of the per-point ``sim:`` block: which generator the simulator uses for that point.

It lives in the core config (not in ``simulators/``) because every protocol's points may carry it
and ``validate`` must check it; ``run`` ignores it.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from gateway.config.types import Duration, StrictModel


class Sine(StrictModel):
    min: float = 0.0
    max: float = 100.0
    period: Duration = 10.0


class Ramp(StrictModel):
    """A sawtooth from ``min`` to ``max`` over ``period``."""

    min: float = 0.0
    max: float = 100.0
    period: Duration = 10.0


class RandomWalk(StrictModel):
    start: float | None = None  # default: middle of [min, max]
    step: float = 1.0
    min: float = 0.0
    max: float = 100.0
    interval: Duration = 1.0


class Counter(StrictModel):
    start: int = 0
    step: int = 1
    interval: Duration = 1.0


class Toggle(StrictModel):
    period: Duration = 2.0


class SimSpec(StrictModel):
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
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"sim takes exactly one generator: one of {names}")
        return self
