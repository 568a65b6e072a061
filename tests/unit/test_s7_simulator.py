"""The S7 simulator refuses a port it would share: python-snap7's server would take it
silently (SO_REUSEPORT) and connections would land on either PLC."""

from __future__ import annotations

import asyncio
import socket

import pytest

from adapters.s7.config import S7Device
from simulators.errors import ListenError
from simulators.s7 import S7Simulator
from tests.mosquitto import free_port


def _device(name: str, port: int) -> S7Device:
    return S7Device.model_validate(
        {"id": name, "line": "l", "protocol": "s7", "host": "127.0.0.1", "port": port,
         "points": [{"name": "t", "address": "MW0"}]}
    )  # fmt: skip


def test_two_devices_on_one_port_are_refused() -> None:
    port = free_port()
    with pytest.raises(ListenError, match="are both on 127"):
        S7Simulator([_device("a", port), _device("b", port)])


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        simulator = S7Simulator([_device("a", port)])
        with pytest.raises(ListenError, match="address in use"):
            asyncio.run(simulator.start())
