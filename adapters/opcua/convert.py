"""OPC UA values, status codes and timestamps -> the common information model (pure functions).

- Built-in types map to JSON: numbers and booleans as they are, DateTime as ISO 8601 UTC text,
  ByteString as base64, LocalizedText as its text, QualifiedName as ``ns:Name``, NodeId and Guid
  as their string forms, arrays as JSON arrays (element by element).
- A StatusCode maps to good / uncertain / bad by its severity bits; a not-good reading carries the
  status name (``BadNodeIdUnknown``...) as its reason.
- ``ts`` is the SourceTimestamp; the ServerTimestamp, then the receive time, are fallbacks.
"""

from __future__ import annotations

import base64
import enum
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from gateway.model import BAD, GOOD, UNCERTAIN, Value, not_finite

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_value(raw: Any) -> Value | None:
    """One OPC UA value as a JSON-ready Python value."""
    if raw is None or isinstance(raw, bool | str):
        return raw
    if isinstance(raw, enum.Enum):  # enumerations decode to IntEnum members
        return int(raw.value) if isinstance(raw.value, int) else str(raw.name)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        # JSON has no NaN or infinity: inside an array, null (a scalar one is a bad reading).
        return raw if math.isfinite(raw) else None
    if isinstance(raw, datetime):
        return iso_datetime(raw)
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(raw).decode("ascii")
    if isinstance(raw, list | tuple):
        return [to_value(item) for item in raw]
    if isinstance(raw, ua.LocalizedText):
        return raw.Text
    if isinstance(raw, ua.QualifiedName):
        return f"{raw.NamespaceIndex}:{raw.Name}"
    if isinstance(raw, ua.NodeId):
        return raw.to_string()
    if isinstance(raw, ua.StatusCode):
        return raw.name
    if isinstance(raw, uuid.UUID):
        return str(raw)
    return str(raw)  # structures and anything exotic: readable rather than lost


def iso_datetime(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; OPC UA DateTimes without a zone are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = (moment - _EPOCH).total_seconds()
    # 1601-01-01 (OPC UA's zero) and earlier mean "no timestamp".
    return seconds if seconds > 0 else None


def quality_of(status: ua.StatusCode | None) -> tuple[str, str | None]:
    """(quality, reason) of a status code; reason is None when good."""
    if status is None or status.is_good():
        return GOOD, None
    return (UNCERTAIN if status.is_uncertain() else BAD), status.name


def convert(data: ua.DataValue, received: float) -> tuple[Value | None, str, float, str | None]:
    """A DataValue -> (value, quality, ts, reason)."""
    quality, reason = quality_of(data.StatusCode)
    ts = to_epoch(data.SourceTimestamp) or to_epoch(data.ServerTimestamp) or received
    variant = data.Value
    raw = variant.Value if variant is not None else None
    if quality == BAD:
        return None, quality, ts, reason
    if isinstance(raw, float) and not math.isfinite(raw):
        return None, BAD, ts, not_finite(raw)
    value = to_value(raw)
    if quality == GOOD and isinstance(raw, list | tuple) and _holds_not_finite(raw):
        return value, UNCERTAIN, ts, "NaN or infinity in the array (published as null)"
    return value, quality, ts, reason


def _holds_not_finite(items: list[Any] | tuple[Any, ...]) -> bool:
    return any(
        (isinstance(x, float) and not math.isfinite(x))
        or (isinstance(x, list | tuple) and _holds_not_finite(x))
        for x in items
    )
