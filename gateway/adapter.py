"""What a southbound protocol gives the gateway: one ``Adapter`` per folder under ``adapters/``,
listed in ``gateway/registry.py``. The core knows protocols only through this contract.

An adapter's factories import its protocol stack when first called, so a map that does not use
a protocol never pays for its library (asyncua alone is ~25 MB of memory).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.config.schema import DeviceConfig
from gateway.config.yaml_source import Loc
from gateway.plan_report import DevicePlan
from gateway.source import Source

# Checks on a device's raw mapping, run even when the device fails validation.
RawCheck = Callable[[Mapping[str, Any]], list[tuple[Loc, str]]]


class Simulator(Protocol):
    """Serves simulated devices of a map (``factory-gateway simulate``, the demo, the tests)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Tool:
    """A command of the protocol's own (``factory-gateway browse`` for OPC UA)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Adapter:
    """A protocol family: devices whose ``protocol`` is one of ``models``' keys."""

    name: str
    # protocol key in a map -> the device's schema (its points' schema inside it)
    models: Mapping[str, type[DeviceConfig]]
    # All devices of the family at once, so devices may share a connection (a Modbus gateway,
    # an RS-485 bus). Sources that can write implement ``gateway.source.Writable``.
    create_sources: Callable[[Sequence[Any]], Sequence[Source]]
    raw_checks: tuple[RawCheck, ...] = field(default=())
    # Checks across the family's valid devices: (position in the list, key path, message).
    check_devices: Callable[[Sequence[Any]], list[tuple[int, Loc, str]]] | None = None
    # The device's request plan, for ``factory-gateway plan``.
    describe_plan: Callable[[Any], DevicePlan] | None = None
    # The simulator of the family's devices; the Path is the map's folder.
    simulator: Callable[[Sequence[Any], Path], Simulator] | None = None
    tools: tuple[Tool, ...] = ()
    # How often a healthy device delivers a reading (None: only on change, by exception);
    # not given: its poll_interval. /readyz calls a device stalled after three of them.
    reading_interval: Callable[[Any], float | None] | None = None
    # The model's type of a point's values ("int16", "float64", "string", ...: the keys of
    # gateway/delivery/sparkplug/payload.VALUE_TYPES); None, or not given: its first value's.
    value_type: Callable[[Any], str | None] | None = None

    def interval_of(self, device: DeviceConfig) -> float | None:
        if self.reading_interval is None:
            return device.poll_interval
        return self.reading_interval(device)
