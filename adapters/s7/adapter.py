"""Siemens S7 (S7-300/400, S7-1200/1500 with PUT/GET, LOGO!) over ISO-on-TCP, on
python-snap7."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.s7.config import S7Device
from adapters.s7.plan import describe
from gateway.adapter import Adapter, Simulator
from gateway.source import Source


def _sources(devices: Sequence[Any]) -> Sequence[Source]:
    from adapters.s7.source import create_sources

    return create_sources(list(devices))


def _simulator(devices: Sequence[Any], _base_dir: Path) -> Simulator:
    from simulators.s7 import S7Simulator

    return S7Simulator(list(devices))


S7 = Adapter(
    name="s7",
    models={"s7": S7Device},
    create_sources=_sources,
    describe_plan=describe,
    simulator=_simulator,
    reading_interval=lambda device: min(device.interval_of(p) for p in device.points),
    value_type=lambda point: point.value_type,
)
