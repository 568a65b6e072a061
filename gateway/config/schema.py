"""The protocol-independent part of the device map: gateway, mqtt, and the base of every device.

Each adapter extends ``DeviceConfig`` and ``PointConfig`` with its own keys (see
``adapters/<protocol>/config.py``) and registers them in ``gateway/registry.py``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.config.sim import SimSpec
from gateway.config.types import Duration, Name, StrictModel

DEFAULT_TOPIC = "{enterprise}/{site}/{area}/{line}/{device}/{point}"
TOPIC_FIELDS = ("enterprise", "site", "area", "line", "device", "point", "gateway")


class Hierarchy(StrictModel):
    """ISA-95 levels above the line; they become the first levels of every topic."""

    enterprise: Name
    site: Name
    area: Name


class GatewaySection(StrictModel):
    id: Name
    hierarchy: Hierarchy


class MqttSection(StrictModel):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    qos: Literal[0, 1, 2] = 1
    topic: str = DEFAULT_TOPIC
    keepalive: Duration = 30.0
    queue_size: int = Field(default=100_000, ge=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"{url!r}: the broker URL starts with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"{url!r}: the broker URL needs a host, e.g. mqtt://127.0.0.1:1883")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
        return url

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name is not None}
        except ValueError as exc:
            raise ValueError(f"topic template {topic!r} is malformed: {exc}") from None
        unknown = names - set(TOPIC_FIELDS)
        if unknown:
            raise ValueError(
                f"topic template uses unknown field(s) {', '.join(sorted(unknown))}; "
                f"available: {', '.join(TOPIC_FIELDS)}"
            )
        if "point" not in names or "device" not in names:
            raise ValueError("topic template must contain {device} and {point}")
        if "+" in topic or "#" in topic:
            raise ValueError("topic template must not contain the wildcards + or #")
        return topic

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class PointConfig(StrictModel):
    """Keys every point has, whatever its protocol."""

    name: Name
    unit: str | None = None
    description: str | None = None
    # Absolute deadband: a new value is published only when it differs from the last published
    # one by more than this. Absent: every sample is published.
    deadband: float | None = Field(default=None, ge=0)
    sim: SimSpec | None = None


class DeviceConfig(StrictModel):
    """Keys every device has, whatever its protocol."""

    id: Name
    line: Name
    protocol: str
    description: str | None = None
    poll_interval: Duration = 1.0
    timeout: Duration = 1.0
    points: Sequence[PointConfig] = Field(min_length=1)


class RootSection(StrictModel):
    """The top level; devices are validated one by one by their protocol's model."""

    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    devices: list[dict[str, Any]] = Field(min_length=1)
