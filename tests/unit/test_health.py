"""Readiness, device by device: stalled is about missing readings, not unchanged values."""

from __future__ import annotations

import time

from gateway.http.health import Health
from gateway.model import BAD, GOOD, Block, Points, Reading
from gateway.source import CONNECTED, DISCONNECTED

UP = (CONNECTED, None)


def _health(**more: object) -> Health:
    settings: dict[str, object] = {
        "broker_connected": lambda: True,
        "buffer_bytes": lambda: 100,
        "buffer_alarm": None,
        "stale_after": None,
    } | more
    health = Health({"poller": 0.5, "subscriber": None}, **settings)  # type: ignore[arg-type]
    health.running = True
    return health


def test_a_polling_device_is_stalled_without_good_readings_a_subscriber_is_not() -> None:
    health = _health()
    block = Block("poller", Points(("a",), (None,)), [1.0], 0.0)
    health.seen("poller", UP, [block])
    health.seen("subscriber", UP, [])  # connected, nothing changed: not stalled
    assert health.ready()[0] is True
    # Three intervals (1.5 s) with readings, none good: stalled, whatever the state says.
    health.seen("poller", UP, [Reading("poller", "a", None, BAD, 0.0, None, "timeout")])
    health.devices["poller"].last_good = time.monotonic() - 2
    ready, report = health.ready()
    assert ready is False
    poller = report["devices"]["poller"]  # type: ignore[index]
    assert poller["reason"] == "stalled: no good reading for 1.5 s"
    # With the device's latest error, the reason says it.
    health.last_error = lambda device: "illegal data address" if device == "poller" else None
    poller = health.ready()[1]["devices"]["poller"]  # type: ignore[index]
    assert (
        poller["reason"] == "stalled: no good reading for 1.5 s (last error: illegal data address)"
    )
    health.seen("poller", UP, [Reading("poller", "a", 2.0, GOOD, 0.0)])
    assert health.ready()[0] is True
    health.seen("subscriber", (DISCONNECTED, "connection lost"), [])
    ready, report = health.ready()
    assert ready is False
    assert report["devices"]["subscriber"]["reason"] == "disconnected: connection lost"  # type: ignore[index]


def test_the_broker_the_buffer_and_a_stopping_gateway_make_it_not_ready() -> None:
    for health in (
        _health(broker_connected=lambda: False),
        _health(buffer_alarm=50),
        _health(),
    ):
        health.seen("poller", UP, [Reading("poller", "a", 1.0, GOOD, 0.0)])
        health.seen("subscriber", UP, [])
        if health.buffer_alarm is None and health.broker_connected():
            health.running = False  # shutting down
        assert health.ready()[0] is False


def test_a_broker_that_gets_no_data_yet_is_not_ready_and_says_why() -> None:
    health = _health()
    for device in ("poller", "subscriber"):
        health.seen(device, UP, [Reading(device, "a", 1.0, GOOD, time.time())])
    assert health.ready()[0] is True
    health.held = lambda: "waiting for the primary host scada-1 to be online"
    ready, report = health.ready()
    assert ready is False
    assert report["broker"] == {
        "connected": True,
        "held": "waiting for the primary host scada-1 to be online",
    }
