"""The MQTT payload of a reading (public contract: docs/reading.schema.json).

orjson because encoding is on the hot path: ~0.15 us per reading against ~2.2 us with json.dumps.
"""

from __future__ import annotations

import time

import orjson

from gateway.model import GOOD, Reading

_second_cache: tuple[int, str] = (-1, "")


def iso_time(ts: float) -> str:
    """``2026-11-22T10:00:00.123Z``; the second part is cached, most readings share it."""
    global _second_cache
    second, millis = divmod(round(ts * 1000), 1000)
    cached_second, text = _second_cache
    if cached_second != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    return f"{text}.{millis:03d}Z"


def encode_reading(reading: Reading, seq: int, gw_ts: str) -> bytes:
    payload: dict[str, object] = {
        "device": reading.device,
        "point": reading.point,
        "value": reading.value,
        "quality": reading.quality,
        "ts": iso_time(reading.ts),
        "gw_ts": gw_ts,
        "unit": reading.unit,
        "seq": seq,
    }
    if reading.quality != GOOD:
        payload["reason"] = reading.reason or "unknown"
    return orjson.dumps(payload)
