from __future__ import annotations

import tracemalloc
from typing import Any

from gateway.delivery.encode_json import encode_reading, iso_time
from gateway.model import BAD, GOOD, Reading
from gateway.pipeline import Deadband
from gateway.registry import load_config
from gateway.topics import Topics
from tests.helpers import ROOT


def test_deadband_publishes_only_news() -> None:
    config = load_config([ROOT / "configs" / "demo.yaml"])
    deadband = Deadband(config.devices)  # oven-01 zone temps have deadband 0.5

    def passes(value: Any, quality: str = GOOD, point: str = "zone1_temp") -> bool:
        return bool(deadband([Reading("oven-01", point, value, quality, 0.0, "degC")]))

    assert passes(180.0)  # first value always
    assert not passes(180.4)  # within 0.5 of the last *published* value
    assert not passes(180.5)  # not more than the deadband
    assert passes(180.6)
    assert not passes(180.2)  # 0.4 below 180.6
    assert passes(None, BAD)  # quality change always passes
    assert not passes(None, BAD)
    assert passes(180.2)  # back to good
    # A point without deadband passes every sample.
    assert passes(180.0, point="zone1_setpoint") and passes(180.0, point="zone1_setpoint")


def test_topics_render_the_template() -> None:
    config = load_config([ROOT / "configs" / "demo.yaml"])
    topics = Topics(config.mqtt.topic, config.gateway, config.devices)
    assert (
        topics.point("oven-01", "zone1_temp") == "acme/plant-1/assembly/line-1/oven-01/zone1_temp"
    )
    assert topics.status == "acme/plant-1/assembly/_gateway/edge-01/status"
    custom = Topics("{gateway}/{device}/{point}", config.gateway, config.devices)
    assert custom.point("press-01", "force") == "edge-01/press-01/force"


def test_payload_shape() -> None:
    good = Reading("press-01", "temperature", 21.5, GOOD, 1795341600.123, "degC")
    assert encode_reading(good, 7, "2026-11-22T10:00:00.200Z") == (
        b'{"device":"press-01","point":"temperature","value":21.5,"quality":"good",'
        b'"ts":"2026-11-22T10:00:00.123Z","gw_ts":"2026-11-22T10:00:00.200Z","unit":"degC","seq":7}'
    )
    bad = Reading("press-01", "temperature", None, BAD, 1795341600.0, "degC", "timeout")
    assert encode_reading(bad, 8, "x").endswith(b'"seq":8,"reason":"timeout"}')


def test_payloads_kept_in_the_buffer_take_their_own_size() -> None:
    """A payload waits in the buffer until the broker acknowledges it: it must not keep the
    4 KB that orjson allocates for any result."""
    reading = Reading("press-01", "temperature", 21.5, GOOD, 1795341600.123, "degC")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_reading(reading, seq, "2026-11-22T10:00:00.200Z") for seq in range(1000)]
        per_payload = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert len(kept[0]) < 200
    assert per_payload < 400, per_payload


def test_iso_time() -> None:
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1795341600.5) == "2026-11-22T10:00:00.500Z"
    assert iso_time(1795341601.999) == "2026-11-22T10:00:01.999Z"
