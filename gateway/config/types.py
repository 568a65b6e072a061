"""Small reusable config types: durations, names that are safe inside MQTT topics."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, allow_zero: bool = False) -> float:
    """``250ms`` / ``1s`` / ``2m`` / ``1h`` (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is written like 250ms, 1s, 2m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write it like 250ms, 1s, 2m or 1h")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
# A pause may be zero (``0s``, the default of every pause).
Pause = Annotated[float, BeforeValidator(lambda v: parse_duration(v, allow_zero=True))]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} cannot be used in an MQTT topic: use letters, digits and _ . : - "
            "(starting with a letter or digit)"
        )
    return value


# Ids and names end up as MQTT topic levels: no '/', '+', '#', spaces, or a leading '_'
# (topics starting with '_' are the gateway's own, e.g. '_status').
Name = Annotated[str, AfterValidator(_check_name)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(ValueError):
    """A cross-field rule broken by one named key: the error is reported at that key's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
