"""``factory-gateway write``: one command straight to a device, for commissioning.

The same checks, the same write-and-read-back and the same audit line as a command from MQTT;
only the transport differs. The device's source is started as the gateway would start it (so a
Modbus device is polled once and an OPC UA session is opened) and the command runs once the
source has reported the device's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from gateway.commands.execute import Result, execute
from gateway.commands.request import parse
from gateway.config.load import Config
from gateway.errors import CommandError, GatewayError
from gateway.model import Scalar
from gateway.registry import create_sources
from gateway.source import Writable


def parse_value(text: str) -> Scalar:
    """A value from the command line: JSON when it is a JSON scalar (``12.5``, ``true``,
    ``"42"``), otherwise the text itself (``auto``)."""
    try:
        json.loads(text)
    except ValueError:
        return text
    return parse(text.encode()).value  # the same checks as a command payload (no NaN...)


async def write_directly(config: Config, device_id: str, point: str, value: Scalar) -> Result:
    device = next((d for d in config.devices if d.id == device_id), None)
    if device is None:
        known = ", ".join(d.id for d in config.devices)
        raise GatewayError(f"no device {device_id!r} in the map (devices: {known})")
    (source,) = create_sources([device])
    if not isinstance(source, Writable):
        raise CommandError(f"protocol {device.protocol} cannot write")
    reported = asyncio.Event()

    async def run_source() -> None:
        async for _ in source.readings():
            reported.set()

    task = asyncio.create_task(run_source())
    try:
        # Connecting may take a few requests (an OPC UA session, a Modbus connect and poll).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * device.timeout + 1):
                await reported.wait()
        result, _ = await execute(device, source, point, value, None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()
    result.audit(client="factory-gateway write")
    return result
