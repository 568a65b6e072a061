"""The counters behind /metrics: a histogram as Prometheus defines one, error kinds."""

from __future__ import annotations

from adapters.modbus.errors import ModbusExceptionAnswer
from gateway.errors import DeviceError, DeviceTimeout
from gateway.stats import DeviceStats, Histogram


def test_buckets_count_values_up_to_and_including_their_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.10001, 1.0, 5.0):
        histogram.observe(value)
    histogram.observe(0.5, times=3)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 7), ("+Inf", 8)]
    assert histogram.total == 0.0 + 0.1 + 0.10001 + 1.0 + 5.0 + 1.5


def test_errors_are_counted_by_kind() -> None:
    stats = DeviceStats()
    for error in (
        DeviceTimeout(),
        DeviceError("connection refused"),
        ModbusExceptionAnswer(2),
        DeviceTimeout(),
    ):
        stats.failed(error)
    assert stats.errors == {"timeout": 2, "connection": 1, "answer": 1}
