"""The one place where a southbound protocol is registered.

Adding a protocol = an adapter package with its config model and a ``Source`` factory, plus one
entry here. The config loader validates each device with its protocol's model; the runtime builds
its source with the factory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.modbus.config import ModbusTcpDevice, overlapping_points
from adapters.modbus.source import ModbusSource
from gateway.config.schema import DeviceConfig
from gateway.source import Source

Loc = tuple[str | int, ...]
RawCheck = Callable[[Mapping[str, Any]], list[tuple[Loc, str]]]


@dataclass(frozen=True)
class ProtocolEntry:
    config_model: type[DeviceConfig]
    create_source: Callable[[Any], Source]
    # Checks on the raw device mapping that must run even when the device fails validation.
    raw_checks: tuple[RawCheck, ...] = field(default=())


PROTOCOLS: dict[str, ProtocolEntry] = {
    "modbus-tcp": ProtocolEntry(ModbusTcpDevice, ModbusSource, (overlapping_points,)),
}
