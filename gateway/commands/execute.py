"""One command, start to end: check, write, read back, compare, audit. Used by the MQTT router
and by ``factory-gateway write``, so both apply exactly the same rules.

Nothing here is queued for later: a device that is down is answered at once, a device that does
not answer within its timeout is answered ``device timeout``, and the command is gone. A setpoint
applied minutes late, after the caller gave up, is worse than one refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import orjson
import structlog

from gateway.commands.request import CommandId, check_limits
from gateway.config.schema import DeviceConfig
from gateway.delivery.encode_json import iso_time
from gateway.errors import CommandError, DeviceError, DeviceTimeout
from gateway.model import GOOD, Reading, Scalar, Value
from gateway.source import CONNECTED, Writable

audit_log = structlog.get_logger("gateway.audit")

WRITTEN, REFUSED, FAILED = "written", "refused", "failed"


@dataclass(slots=True)
class Result:
    """The answer to one command (docs/schemas/command-result.schema.json) and its audit."""

    command_id: CommandId
    device: str | None
    point: str | None
    requested: Scalar | None
    outcome: str  # written | refused (by the gateway, nothing sent) | failed (at the device)
    error: str | None = None
    value: Value | None = None  # read back after writing
    old: Value | None = None  # read just before writing
    ts: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == WRITTEN

    def payload(self) -> bytes:
        answer: dict[str, object] = {"id": self.command_id, "ok": self.ok}
        if self.device is not None:
            answer["device"] = self.device
        if self.point is not None:
            answer["point"] = self.point
        if self.error is not None:
            answer["error"] = self.error
        if self.outcome != REFUSED and (self.ok or self.value is not None):
            answer["value"] = self.value
        answer["ts"] = iso_time(self.ts or time.time())
        return orjson.dumps(answer)

    def audit(self, client: str | None = None) -> None:
        """One log line per command, accepted or not."""
        log = audit_log.info if self.ok else audit_log.warning
        log(
            "command",
            outcome=self.outcome,
            id=self.command_id,
            device=self.device,
            point=self.point,
            old=self.old,
            new=self.requested,
            read_back=self.value,
            error=self.error,
            # What the sender's MQTT 5 user property says: self-asserted, never checked.
            claimed_client=client,
        )


async def execute(
    device: DeviceConfig, source: Writable, point: str, value: Scalar, command_id: CommandId
) -> tuple[Result, Reading | None]:
    """Run one command; never raises. The reading read back (if any) is to be published."""
    result = Result(command_id, device.id, point, value, REFUSED)
    try:
        check_command(device, point, value)
        source.check(point, value)
    except CommandError as exc:
        result.error = str(exc)
        return result, None
    result.outcome = FAILED
    state, reason = source.state
    if state != CONNECTED:
        result.error = f"device {state}: {reason}" if reason else f"device {state}"
        return result, None
    try:
        async with asyncio.timeout(write_bound(device)):
            outcome = await source.write(point, value)
    except CommandError as exc:
        result.outcome, result.error = REFUSED, str(exc)
        return result, None
    except (DeviceError, TimeoutError) as exc:
        timed_out = isinstance(exc, DeviceTimeout | TimeoutError)
        result.error = "device timeout" if timed_out else f"device error: {exc}"
        return result, None
    except Exception:  # a bug must cost one command, never the gateway
        audit_log.exception("command failed unexpectedly", device=device.id, point=point)
        result.error = "internal error (see the gateway log)"
        return result, None
    reading = outcome.reading
    result.old, result.value, result.ts = outcome.old, reading.value, reading.ts
    if reading.quality != GOOD:
        result.error = f"read back {reading.quality}: {reading.reason}"
    elif not same(outcome.expected, reading.value):
        result.error = f"read back {_text(reading.value)} after writing {_text(outcome.expected)}"
    else:
        result.outcome = WRITTEN
    return result, reading


def write_bound(device: DeviceConfig) -> float:
    """Seconds a write may take: each request of it (read, write, read back) has the device's
    timeout; this bounds the whole sequence."""
    return 3 * device.timeout + 0.5


def check_command(device: DeviceConfig, point: str, value: Scalar) -> None:
    """The map's rules for this command (``CommandError`` when it breaks one)."""
    config = next((p for p in device.points if p.name == point), None)
    if config is None:
        raise CommandError(f"unknown point {point!r} of device {device.id!r}")
    check_limits(config, value)


def same(expected: Value | None, actual: Value | None) -> bool:
    """Equal within the point's resolution (``expected`` is already at that resolution; floats
    may still differ in their last bits after a device's own arithmetic)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, float | int) and isinstance(actual, float | int):
        return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-12)
    return expected == actual


def _text(value: Value | None) -> str:
    return orjson.dumps(value).decode()
