"""Small reusable config types: durations, names that are safe inside MQTT topics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

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

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


def parse_size(value: Any) -> int:
    """``64KiB`` / ``512MiB`` / ``1GiB`` / ``10MB`` (or a bare number of bytes) -> bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is written like 64KiB, 512MiB or 1GiB")
    if isinstance(value, int | float):
        size = float(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a size; write it like 64KiB, 512MiB or 1GiB")
    if size <= 0:
        raise ValueError("a size must be greater than zero")
    return int(size)


ByteSize = Annotated[int, BeforeValidator(parse_size)]

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


# A text that may be left empty (`username: ${USER:-}`): empty means not set.
OptionalText = Annotated[str | None, BeforeValidator(lambda v: None if v == "" else v)]


def relative_to_map(model: BaseModel, names: tuple[str, ...], info: ValidationInfo) -> None:
    """Make the model's relative path fields relative to the device map's folder.

    The loader passes the folder as validation context (``base_dir``); validated without it
    (a test, the ``browse`` command), paths stay relative to the working directory.
    """
    base = (info.context or {}).get("base_dir")
    if base is None:
        return
    for name in names:
        value: Path | None = getattr(model, name)
        if value is not None and not value.is_absolute():
            object.__setattr__(model, name, Path(base) / value)


def existing_files(model: BaseModel, names: tuple[str, ...], info: ValidationInfo) -> None:
    """The model's file fields, made relative to the map's folder, must name existing files."""
    relative_to_map(model, names, info)
    for name in names:
        path: Path | None = getattr(model, name)
        if path is not None and not path.is_file():
            raise FieldError(name, f"{path}: no such file")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Points (and their ``sim:`` blocks) are validated as slotted pydantic dataclasses rather than
# models: a map holds up to hundreds of thousands of them, and a model keeps a 25-key
# ``__dict__`` and a fields-set per point (~1.1 KB) where slots take ~0.25 KB. Same rules, same
# errors; declare such a class with
# ``@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)``.
POINT_CONFIG = ConfigDict(extra="forbid")


class FieldError(ValueError):
    """A cross-field rule broken by one named key (``a.b`` for one in a section, ``points.3.a``
    for one of a list's items): the error is reported at that key's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
