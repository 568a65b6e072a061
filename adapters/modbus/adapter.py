"""Modbus TCP, UDP, RTU over TCP and RTU (serial) as one protocol family: devices behind one
Modbus gateway or on one RS-485 bus share a connection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.modbus.config import (
    ModbusRtuDevice,
    ModbusTcpDevice,
    overlapping_points,
    shared_links,
)
from adapters.modbus.plan import describe
from gateway.adapter import Adapter, Simulator
from gateway.source import Source


def _sources(devices: Sequence[Any]) -> Sequence[Source]:
    from adapters.modbus.source import create_sources

    return create_sources(list(devices))


def _simulator(devices: Sequence[Any], _base_dir: Path) -> Simulator:
    from simulators.modbus import ModbusSimulator

    return ModbusSimulator(list(devices))


MODBUS = Adapter(
    name="modbus",
    models={
        "modbus-tcp": ModbusTcpDevice,
        "modbus-udp": ModbusTcpDevice,
        "modbus-rtu-over-tcp": ModbusTcpDevice,
        "modbus-rtu": ModbusRtuDevice,
    },
    create_sources=_sources,
    raw_checks=(overlapping_points,),
    check_devices=shared_links,
    describe_plan=describe,
    simulator=_simulator,
    reading_interval=lambda device: min(device.interval_of(p) for p in device.points),
    value_type=lambda point: point.value_type,
)
