"""What a command says, checked before anything reaches a device (pure functions).

A command is an MQTT message on ``{point topic}/set``: ``{"value": ..., "id": ...}`` or a bare
JSON scalar. Everything a caller can get wrong is a ``CommandError`` whose text is the result's
``error``: no exception of the parser or of a device library ever escapes with a stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from gateway.config.schema import PointConfig
from gateway.errors import CommandError
from gateway.model import Scalar

MAX_PAYLOAD = 4096  # bytes; a setpoint needs a few dozen
MAX_ID = 200  # characters of a correlation id

CommandId = str | int | float | None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A command message as it arrived (built on the MQTT side, protocol-neutral from here)."""

    topic: str
    payload: bytes
    retain: bool = False
    response_topic: str | None = None  # MQTT 5: answer here instead of ``{topic}/result``
    correlation: bytes | None = None  # MQTT 5: echoed with the answer
    client: str | None = None  # who sent it, when an MQTT 5 user property says so

    def size(self) -> int:
        """Roughly the bytes it holds."""
        return (
            len(self.topic)
            + len(self.payload)
            + len(self.response_topic or "")
            + len(self.correlation or b"")
            + len(self.client or "")
        )

    def cut(self, size: int) -> Incoming:
        """The same message with its payload cut to ``size`` bytes."""
        return dataclasses.replace(self, payload=self.payload[:size])


class Command(NamedTuple):
    id: CommandId
    value: Scalar
    ts: object = None  # the sender's "ts", read only with commands.max_age


def parse(payload: bytes) -> Command:
    """A command payload's id, value and time; ``CommandError`` carries the id when it was
    read."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload too large (more than {MAX_PAYLOAD} bytes)")
    try:
        data = json.loads(payload, parse_constant=_no_constant)
    except _NotANumber as exc:
        raise CommandError(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise CommandError(f"malformed JSON: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        return Command(None, scalar(data))
    command_id = data.get("id")
    if command_id is not None:
        if isinstance(command_id, bool) or not isinstance(command_id, str | int | float):
            raise CommandError("id must be a string or a number")
        if isinstance(command_id, str) and len(command_id) > MAX_ID:
            raise CommandError(f"id is longer than {MAX_ID} characters")
        if isinstance(command_id, str) and not _is_text(command_id):
            raise CommandError("id is not valid Unicode text (it holds a lone surrogate)")
        if isinstance(command_id, int) and abs(command_id) >= 2**63:
            raise CommandError("id is too large a number; use a string")
    if "value" not in data:
        raise CommandError('no "value" in the command', command_id)
    try:
        return Command(command_id, scalar(data["value"]), data.get("ts"))
    except CommandError as exc:
        raise CommandError(str(exc), command_id) from None


def check_age(ts: object, max_age: float, now: float) -> None:
    """Refuse a command sent more than ``max_age`` seconds ago (a replay, or stuck on the way),
    or one that does not say when it was sent."""
    if ts is None:
        raise CommandError('no "ts": commands must say when they were sent (commands.max_age)')
    age = now - _sent(ts)
    if age > max_age:
        raise CommandError(f"too old: sent {age:.1f} s ago, commands.max_age is {max_age:g} s")
    if age < -max_age:
        raise CommandError(f"sent {-age:.1f} s in the future: check the sender's clock")


def _sent(ts: object) -> float:
    if not isinstance(ts, str) or len(ts) > 40:
        raise CommandError('ts must be an ISO 8601 time, e.g. "2026-12-06T10:00:00Z"')
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        raise CommandError(f"ts {ts!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise CommandError('ts needs a UTC offset, e.g. "2026-12-06T10:00:00Z"')
    return when.timestamp()


def check_limits(point: PointConfig, value: Scalar) -> None:
    """The map's rules for commands: ``writable``, ``min``/``max``, ``allowed``."""
    if not point.writable:
        raise CommandError("not writable")
    if point.min is not None or point.max is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandError("expected a number")
        low = -math.inf if point.min is None else point.min
        high = math.inf if point.max is None else point.max
        if not low <= value <= high:
            raise CommandError(f"out of range [{low:g}, {high:g}]")  # 100.0 reads 100
    allowed = point.allowed
    if allowed is not None and not any(_same_json(value, a) for a in allowed):
        raise CommandError(f"not allowed; allowed: {json.dumps(allowed)}")


def scalar(value: object) -> Scalar:
    """A command's value, if a device may take it (a JSON value or a Sparkplug metric's)."""
    if value is None:
        raise CommandError("value is null")
    if isinstance(value, dict | list):
        raise CommandError("value must be a number, true/false or a string, not an object or array")
    assert isinstance(value, bool | int | float | str)
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError("value is not a finite number")  # 1e999 parses as infinity
    if isinstance(value, str) and not _is_text(value):
        raise CommandError("value is not valid Unicode text (it holds a lone surrogate)")
    return value


def _is_text(text: str) -> bool:
    """JSON may escape a lone UTF-16 surrogate ("\\ud800"), which no device or payload takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same_json(a: Scalar, b: Scalar) -> bool:
    """Equal as JSON values: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class _NotANumber(ValueError):
    pass


def _no_constant(name: str) -> object:
    raise _NotANumber(f"{name} is not a valid value (JSON numbers are finite)")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
