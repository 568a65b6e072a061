"""OPC UA: subscriptions (or polled reads) of variables, one client session per device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.opcua.config import OpcUaDevice
from adapters.opcua.tool import BROWSE
from gateway.adapter import Adapter, Simulator
from gateway.source import Source


def _sources(devices: Sequence[Any]) -> Sequence[Source]:
    from adapters.opcua.source import create_sources

    return create_sources(list(devices))


def _simulator(devices: Sequence[Any], base_dir: Path) -> Simulator:
    from simulators.opcua import OpcUaSimulator

    return OpcUaSimulator(list(devices), base_dir)


OPCUA = Adapter(
    name="opcua",
    models={"opcua": OpcUaDevice},
    create_sources=_sources,
    simulator=_simulator,
    tools=(BROWSE,),
    # A subscription reports changes only: its liveness is its connection (keep-alives).
    reading_interval=lambda device: device.interval if device.mode == "poll" else None,
)
