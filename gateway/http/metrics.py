"""``/metrics``: the gateway's counters in the Prometheus text format, via prometheus_client.

A collector reads the live counters (``gateway/stats.py``, the buffer's outcomes, the health
view) when Prometheus scrapes, so the hot path never touches a metrics object and a device
added or removed by a reload appears or disappears with its series. Per device, never per
point: a plant's series stay in the hundreds, not the hundreds of thousands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.http.observed import Observed
from gateway.source import CONNECTED
from gateway.stats import Histogram

PREFIX = "factory_gateway"
# Always present (0 until it happens), so an alert's expression has a series to look at.
DROP_REASONS = (
    "buffer_full", "disk_full", "corrupt", "refused_by_broker", "too_large", "kills_connection",
    "not_this_node", "no_birth",
)  # fmt: skip


class GatewayCollector(Collector):
    def __init__(self, observed: Observed) -> None:
        self.observed = observed

    def collect(self) -> Iterable[Metric]:
        yield from self._gateway()
        yield from self._devices()

    def _gateway(self) -> Iterable[Metric]:
        seen = self.observed
        info = GaugeMetricFamily(
            f"{PREFIX}_info", "The gateway's id and version.", labels=["gateway", "version"]
        )
        info.add_metric([seen.gateway_id, __version__], 1)
        yield info
        yield CounterMetricFamily(
            f"{PREFIX}_readings",
            "Readings encoded for the broker (after the deadband).",
            value=seen.readings(),
        )
        outcomes = seen.buffer.outcomes
        yield CounterMetricFamily(
            f"{PREFIX}_messages_delivered",
            "Messages the broker acknowledged (QoS 1/2) or took (QoS 0).",
            value=outcomes.delivered,
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_messages_dropped",
            "Messages that will never be delivered, by reason.",
            labels=["reason"],
        )
        for reason in {**dict.fromkeys(DROP_REASONS, 0), **outcomes.dropped}:
            dropped.add_metric([reason], outcomes.dropped.get(reason, 0))
        yield dropped
        yield _histogram(
            f"{PREFIX}_reading_age_at_ack_seconds",
            "Age of a message's oldest reading (from its source timestamp) when the broker "
            "acknowledged it.",
            [],
            [([], seen.ack_age)],
        )
        buffer = seen.buffer
        stats = buffer.stats()
        yield GaugeMetricFamily(
            f"{PREFIX}_buffer_records", "Messages waiting for the broker.", value=buffer.count
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_buffer_bytes", "Bytes waiting for the broker.", value=buffer.bytes
        )
        oldest = stats["oldest_buffered_s"]
        yield GaugeMetricFamily(
            f"{PREFIX}_buffer_oldest_age_seconds",
            "Age of the oldest message waiting (0 when none).",
            value=float(oldest) if isinstance(oldest, int | float) else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_connected",
            "1 while the readings' MQTT session is connected.",
            value=1 if seen.broker_connected() else 0,
        )
        url = seen.broker_url()
        if url and seen.broker_connected():  # not the ones tried in turn during an outage
            broker = GaugeMetricFamily(
                f"{PREFIX}_broker_info",
                "The broker the readings' session is connected to (mqtt.url may list several: "
                "the session moves to the next when it loses one).",
                labels=["url"],
            )
            broker.add_metric([url], 1)
            yield broker
        yield CounterMetricFamily(
            f"{PREFIX}_broker_reconnects",
            "Sessions the broker accepted after the first one.",
            value=max(seen.connections() - 1, 0),
        )
        commands = CounterMetricFamily(
            f"{PREFIX}_commands",
            "Commands by outcome: written, refused (by the gateway), failed (at the device), "
            "dropped (the intake was full).",
            labels=["outcome"],
        )
        counts = seen.commands()
        for outcome in ("written", "refused", "failed", "dropped"):
            commands.add_metric([outcome], counts.get(outcome, 0))
        yield commands
        reloads = CounterMetricFamily(
            f"{PREFIX}_reloads",
            "Map reloads: applied, or refused (invalid, or unusable: the running map stayed).",
            labels=["outcome"],
        )
        done = seen.reloads()
        for outcome in ("applied", "refused"):
            reloads.add_metric([outcome], done.get(outcome, 0))
        yield reloads

    def _devices(self) -> Iterable[Metric]:
        devices = self.observed.devices()
        health = self.observed.health
        now = time.monotonic()
        labels = ["device", "protocol"]
        polls = CounterMetricFamily(
            f"{PREFIX}_device_polls",
            "Poll cycles started (or a subscription's notification batches).",
            labels=labels,
        )
        requests = CounterMetricFamily(
            f"{PREFIX}_device_requests", "Read requests sent to the device.", labels=labels
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_device_errors",
            "Failed requests or connections, by kind: timeout, connection (refused or lost), "
            "answer (the device answered with an error).",
            labels=[*labels, "kind"],
        )
        connected = GaugeMetricFamily(
            f"{PREFIX}_device_connected", "1 while the device is connected.", labels=labels
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_device_last_good_age_seconds",
            "Seconds since the device's last good reading (absent until it has given one).",
            labels=labels,
        )
        durations: list[tuple[list[str], Histogram]] = []
        for device, (protocol, stats) in devices.items():
            names = [device, protocol]
            polls.add_metric(names, stats.polls)
            requests.add_metric(names, stats.requests)
            for kind in ("timeout", "connection", "answer"):
                errors.add_metric([*names, kind], stats.errors.get(kind, 0))
            state = health.devices.get(device)
            up = state is not None and state.state[0] == CONNECTED
            connected.add_metric(names, 1 if up else 0)
            if state is not None and state.last_good is not None:
                age.add_metric(names, round(now - state.last_good, 3))
            durations.append((names, stats.read_seconds))
        yield from (polls, requests, errors, connected, age)
        yield _histogram(
            f"{PREFIX}_device_read_duration_seconds",
            "Seconds a device took to answer one read request.",
            labels,
            durations,
        )


def _histogram(
    name: str, doc: str, labels: list[str], series: list[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in series:
        family.add_metric(values, histogram.cumulative(), histogram.total)
    return family


class Metrics:
    """The registry behind ``/metrics``: the gateway's collector and the process' own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, observed: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.registry.register(GatewayCollector(observed))

    def render(self) -> bytes:
        return generate_latest(self.registry)
