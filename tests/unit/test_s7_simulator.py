"""The S7 simulator refuses a port it would share: python-snap7's server would take it
silently (SO_REUSEPORT) and connections would land on either PLC."""

from __future__ import annotations

import asyncio
import socket

import pytest
from structlog.testing import capture_logs

from adapters.s7.config import S7Device
from adapters.s7.source import S7Source
from gateway.model import Reading, Sample
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


def _first_batch(plc: S7Device, source: S7Source) -> list[Sample]:
    """The first batch ``source`` yields from a simulator of ``plc``."""

    async def first() -> list[Sample]:
        simulator = S7Simulator([plc])
        await simulator.start()
        try:
            async with asyncio.timeout(20):
                return list(await anext(aiter(source.readings())))
        finally:
            await source.close()
            await simulator.stop()

    return asyncio.run(first())


def test_the_plan_follows_the_pdu_size_the_plc_gives() -> None:
    """Asked for 960, python-snap7's server gives 480: the source plans for 480 (a request's
    answer at most 462 bytes), says so, and reads every value."""
    points = [
        {"name": f"r{i}", "address": f"DB1.DBD{4 * i}", "type": "REAL", "sim": {"constant": i}}
        for i in range(200)  # 800 bytes: one request at 960, two at 480
    ]
    port = free_port()
    device = S7Device.model_validate(
        {"id": "plc", "line": "l", "protocol": "s7", "host": "127.0.0.1", "port": port,
         "pdu_size": 960, "points": points}
    )  # fmt: skip
    assert [r.size for r in S7Source(device).groups[0].requests] == [800]

    source = S7Source(device)
    with capture_logs() as logs:
        batch = _first_batch(device, source)
    sizes = [r.size for g in source.groups for r in g.requests]
    assert sizes == [460, 340]  # whole REALs within 462 bytes
    assert {"event": "PDU size negotiated", "asked": 960, "given": 480} in [
        {k: e.get(k) for k in ("event", "asked", "given")} for e in logs
    ]
    values = {r.point: r.value for r in batch if isinstance(r, Reading)}
    assert values == {f"r{i}": float(i) for i in range(200)}


def test_a_plc_that_refuses_every_request_is_an_outage() -> None:
    """Every point in a data block the PLC does not have: nothing is read, so the device is
    down with the PLC's reason (and reconnects with backoff), not connected with bad points."""
    port = free_port()
    plc = _device("plc", port)  # has M only
    missing = S7Device.model_validate(
        {"id": "plc", "line": "l", "protocol": "s7", "host": "127.0.0.1", "port": port,
         "points": [{"name": "a", "address": "DB7.DBW0"}, {"name": "b", "address": "DB7.DBW2"}]}
    )  # fmt: skip

    source = S7Source(missing)
    batch, state = _first_batch(plc, source), source.state
    reasons = {(r.point, r.quality, r.reason) for r in batch if isinstance(r, Reading)}
    reason = state[1]
    assert state[0] == "disconnected" and reason is not None
    assert reason.startswith("the PLC refuses every request: "), reason
    assert reasons == {("a", "bad", reason), ("b", "bad", reason)}
