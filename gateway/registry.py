"""The one place where the southbound protocols are composed into the gateway.

Adding a protocol = a folder under ``adapters/`` whose ``adapter.py`` defines an ``Adapter``
(gateway/adapter.py), plus one line in ``ADAPTERS``. The config loader, the runtime, the
simulators and the CLI (``validate``, ``plan``, ``simulate``, the protocols' own commands) all
iterate this list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adapters.modbus.adapter import MODBUS
from adapters.opcua.adapter import OPCUA
from adapters.s7.adapter import S7
from gateway.adapter import Adapter
from gateway.config.load import Config, read_map
from gateway.config.schema import DeviceConfig
from gateway.source import Source

ADAPTERS: list[Adapter] = [MODBUS, OPCUA, S7]


def adapter_of(protocol: str) -> Adapter:
    return next(a for a in ADAPTERS if protocol in a.models)


def load_config(paths: Sequence[str | Path]) -> Config:
    """A device map, each device validated by its protocol's adapter (``ConfigError``)."""
    return read_map(paths, ADAPTERS)


def families(devices: Sequence[DeviceConfig]) -> list[tuple[Adapter, list[DeviceConfig]]]:
    """The devices grouped by their protocol's adapter (adapters without devices left out)."""
    grouped = [(a, [d for d in devices if d.protocol in a.models]) for a in ADAPTERS]
    return [(adapter, members) for adapter, members in grouped if members]


def create_sources(devices: Sequence[DeviceConfig]) -> list[Source]:
    """Every device's source, built by its protocol family's factory (all at once, so devices
    of one family may share a connection)."""
    sources: list[Source] = []
    for adapter, members in families(devices):
        sources.extend(adapter.create_sources(members))
    return sources


def reading_intervals(devices: Sequence[DeviceConfig]) -> dict[str, float | None]:
    """How often each device delivers a reading when healthy (None: by exception)."""
    return {d.id: adapter_of(d.protocol).interval_of(d) for d in devices}


def value_types(device: DeviceConfig) -> dict[str, str | None]:
    """Each point's value type, as its adapter knows it (None: from its first value)."""
    describe = adapter_of(device.protocol).value_type
    return {p.name: describe(p) if describe else None for p in device.points}
