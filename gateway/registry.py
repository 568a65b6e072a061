"""The one place where a southbound protocol is registered.

Adding a protocol = an adapter package with its config model and a factory of ``Source``s, plus
one entry here. The config loader validates each device with its protocol's model; the runtime
hands all devices of an entry to its factory at once, so an adapter can share connections
between devices (several Modbus units behind one gateway or on one RS-485 bus).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.modbus.config import (
    ModbusRtuDevice,
    ModbusTcpDevice,
    overlapping_points,
    shared_links,
)
from adapters.modbus.plan import describe
from adapters.opcua.config import OpcUaDevice
from gateway.config.schema import DeviceConfig
from gateway.config.yaml_source import Loc
from gateway.plan_report import DevicePlan
from gateway.source import Source

RawCheck = Callable[[Mapping[str, Any]], list[tuple[Loc, str]]]


# The protocol stacks are imported when a device needs them: asyncua alone is ~25 MB of
# memory that a Modbus-only edge box should not pay for.
def modbus_sources(devices: list[Any]) -> list[Any]:
    from adapters.modbus.source import create_sources

    return list(create_sources(devices))


def opcua_sources(devices: list[Any]) -> list[Any]:
    from adapters.opcua.source import create_sources

    return list(create_sources(devices))


@dataclass(frozen=True)
class ProtocolEntry:
    config_model: type[DeviceConfig]
    # Builds the sources of every device of this entry's family (same factory = same family).
    create_sources: Callable[[list[Any]], list[Any]]
    # Checks on the raw device mapping that must run even when the device fails validation.
    raw_checks: tuple[RawCheck, ...] = field(default=())
    # The device's request plan, for `factory-gateway plan` (protocols that poll in requests).
    describe_plan: Callable[[Any], DevicePlan] | None = None
    # Checks across the family's valid devices: (position in the list, key path, message).
    check_devices: Callable[[list[Any]], list[tuple[int, Loc, str]]] | None = None


_MODBUS_TCP = ProtocolEntry(
    ModbusTcpDevice, modbus_sources, (overlapping_points,), describe, shared_links
)

PROTOCOLS: dict[str, ProtocolEntry] = {
    "modbus-tcp": _MODBUS_TCP,
    "modbus-udp": _MODBUS_TCP,
    "modbus-rtu-over-tcp": _MODBUS_TCP,
    "modbus-rtu": ProtocolEntry(
        ModbusRtuDevice, modbus_sources, (overlapping_points,), describe, shared_links
    ),
    "opcua": ProtocolEntry(OpcUaDevice, opcua_sources),
}


def create_sources(devices: list[DeviceConfig]) -> list[Source]:
    """Every device's source, built by its protocol family's factory."""
    families: dict[Any, list[DeviceConfig]] = {}
    for device in devices:
        families.setdefault(PROTOCOLS[device.protocol].create_sources, []).append(device)
    sources: list[Source] = []
    for factory, members in families.items():
        sources.extend(factory(members))
    return sources
