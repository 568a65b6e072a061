"""The protocol-independent part of the device map: gateway, mqtt, and the base of every device.

Each adapter extends ``DeviceConfig`` and ``PointConfig`` with its own keys (see
``adapters/<protocol>/config.py``) and registers them in ``gateway/registry.py``.
"""

from __future__ import annotations

import ipaddress
import ssl
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from gateway.config.sim import SimSpec
from gateway.config.types import (
    POINT_CONFIG,
    ByteSize,
    Duration,
    FieldError,
    Name,
    OptionalText,
    StrictModel,
    existing_files,
)

DEFAULT_TOPIC = "{enterprise}/{site}/{area}/{line}/{device}/{point}"
DEFAULT_BATCH_TOPIC = "{enterprise}/{site}/{area}/{line}/{device}"
TOPIC_FIELDS = ("enterprise", "site", "area", "line", "device", "point", "gateway")


class Hierarchy(StrictModel):
    """ISA-95 levels above the line; they become the first levels of every topic."""

    enterprise: Name
    site: Name
    area: Name


class GatewaySection(StrictModel):
    id: Name
    hierarchy: Hierarchy


def _checked_url(url: str) -> str:
    if "@" in url:  # never echoed: what comes before @ may be a password (even with # or /)
        raise ValueError(
            "the broker URL carries a user name or password: give them as mqtt.username "
            "and mqtt.password instead (a URL is logged, and a password must not be)"
        )
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


BrokerUrl = Annotated[str, AfterValidator(_checked_url)]


def _server(url: str) -> tuple[str, int]:
    """A valid broker URL's host (lower case) and port."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


class MqttSection(StrictModel):
    # One broker, or a list: the first that answers, the next when it is lost (failover).
    url: list[BrokerUrl] = Field(default_factory=lambda: ["mqtt://127.0.0.1:1883"])
    version: Literal[3, 5] = 3  # 3 = MQTT 3.1.1
    client_id: str | None = None
    username: OptionalText = None
    password: OptionalText = Field(default=None, repr=False)
    # TLS (mqtts://): the CA that signed the broker's certificate (default: the system's), a
    # client certificate and key for brokers that require one; `insecure` skips the host check.
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    qos: Literal[0, 1, 2] = 1
    # Retained states and last will; false for a broker that keeps no retained messages.
    retain: bool = True
    # MQTT 5: a command's result goes to its response topic only under this prefix, which must
    # not overlap the gateway's own topics; otherwise to the command topic + "/result".
    response_prefix: str | None = None
    # MQTT 5: the largest packet the broker may send the gateway (its Maximum Packet Size).
    max_incoming: ByteSize = Field(default=256 * 1024, ge=1024)
    topic: str = DEFAULT_TOPIC
    # `device`: one message per device per poll cycle on `batch_topic`, instead of per point.
    batch: Literal["point", "device"] = "point"
    # `sparkplug`: Sparkplug B 3.0 (births, aliases, bdSeq) instead of JSON; see `sparkplug:`.
    format: Literal["json", "sparkplug"] = "json"
    batch_topic: str = DEFAULT_BATCH_TOPIC
    keepalive: Duration = 30.0
    session_expiry: Duration = 86_400.0  # MQTT 5: how long the broker keeps our session
    message_expiry: Duration | None = None  # MQTT 5: readings older than this are discarded

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, version: Any) -> Any:
        return 3 if version in (4, "3.1.1", "3") else (5 if version == "5" else version)

    @model_validator(mode="after")
    def _tls_files(self, info: ValidationInfo) -> MqttSection:
        if (self.cert is None) != (self.key is None):
            raise FieldError("cert", "a client certificate needs both cert and key")
        if (self.ca or self.cert) and not self.tls:
            raise FieldError("ca", "ca, cert and key need a TLS broker URL (mqtts://)")
        if self.message_expiry is not None and self.version != 5:
            raise FieldError("message_expiry", "message_expiry needs mqtt.version: 5")
        existing_files(self, ("ca", "cert", "key"), info)
        return self

    @field_validator("url", mode="before")
    @classmethod
    def _one_url(cls, url: Any) -> Any:
        if isinstance(url, str):  # several, separated by commas: through one variable
            return [part.strip() for part in url.split(",")] if "," in url else [url]
        if not isinstance(url, list) or not all(isinstance(item, str) for item in url):
            raise ValueError(
                f"mqtt.url is a broker URL (mqtt://host:port), or a list of them for failover, "
                f"not {url!r}"
            )
        return url

    @field_validator("url")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("mqtt.url names no broker: give a URL, or a list of them")
        seen: dict[tuple[str, int], int] = {}
        for index, url in enumerate(urls):
            first = seen.setdefault(_server(url), index)
            if first != index:  # at the list's item
                earlier = urls[first]
                same = "is listed twice" if earlier == url else f"is the same broker as {earlier!r}"
                raise FieldError(str(index), f"{url!r} {same}")
        if len({urlsplit(url).scheme for url in urls}) > 1:
            raise ValueError(
                "mqtt.url mixes mqtt:// and mqtts://: give every broker the same scheme, so "
                "that moving to the next one never drops TLS"
            )
        return urls

    @field_validator("response_prefix")
    @classmethod
    def _check_response_prefix(cls, prefix: str | None) -> str | None:
        if prefix is None:
            return None
        if not prefix.strip("/") or "+" in prefix or "#" in prefix or prefix.startswith("/"):
            raise ValueError(
                f"{prefix!r}: a response prefix is one or more topic levels without wildcards, "
                "e.g. replies/"
            )
        return prefix if prefix.endswith("/") else prefix + "/"

    @field_validator("batch_topic")
    @classmethod
    def _check_batch_topic(cls, topic: str) -> str:
        names = _topic_fields(topic)
        if "device" not in names or "point" in names:
            raise ValueError("batch_topic must contain {device} and not {point}")
        return topic

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        names = _topic_fields(topic)
        if "point" not in names or "device" not in names:
            raise ValueError("topic template must contain {device} and {point}")
        return topic

    @property
    def servers(self) -> list[tuple[str, int]]:
        """Each broker's host and port, in the order they are tried."""
        return [_server(url) for url in self.url]

    @property
    def host(self) -> str:
        """The first broker's host."""
        return self.servers[0][0]

    @property
    def port(self) -> int:
        """The first broker's port."""
        return self.servers[0][1]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url[0]).scheme == "mqtts"


def _fixed_head(template: str, gateway: GatewaySection) -> str:
    """The levels of a topic template before the first that names a line, device or point,
    rendered for this gateway (``acme/plant-1/assembly/``)."""
    h = gateway.hierarchy
    values = {"enterprise": h.enterprise, "site": h.site, "area": h.area, "gateway": gateway.id}
    head = ""
    for level in template.split("/"):
        if _topic_fields(level) - set(values):
            break
        head += level.format(**values) + "/"
    return head


def _topic_fields(topic: str) -> set[str]:
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
    if "+" in topic or "#" in topic:
        raise ValueError("topic template must not contain the wildcards + or #")
    return names


class BufferSection(StrictModel):
    """The store-and-forward buffer between the pipeline and the broker."""

    # disk: SQLite (WAL), survives a crash; memory: a bounded queue, lost on a crash.
    mode: Literal["disk", "memory"] = "disk"
    path: Path = Path("data/buffer")  # a folder; relative to the device map's folder
    max_size: ByteSize = 1024**3
    # drop_oldest: make room by dropping the oldest readings (counted); block_oldest_first:
    # keep them all, and make the devices' polls wait until the oldest are delivered.
    on_full: Literal["drop_oldest", "block_oldest_first"] = "drop_oldest"
    sync_interval: Duration = 0.2  # fsync at least this often (power-cut safety)
    # Share of publishes given to the backlog while live readings also wait (0 < r <= 1).
    replay_rate: float = Field(default=0.5, gt=0, le=1)

    def relative_to(self, base: Path) -> BufferSection:
        """The section with a relative ``path`` made relative to ``base`` (the map's folder)."""
        if self.path.is_absolute() or str(self.path) == ":memory:":
            return self
        return self.model_copy(update={"path": base / self.path})


class SparkplugSection(StrictModel):
    """The Sparkplug B edge node (``mqtt.format: sparkplug``): its group and its id."""

    group_id: Name
    edge_node_id: Name | None = None  # default: gateway.id
    # The primary host's id: births and data wait until its STATE says it is online, and the
    # server is left when it says offline.
    primary_host_id: Name | None = None
    # The Quality property's values: Ignition 8's codes, or the specification's 0/192/500.
    quality_codes: Literal["ignition", "specification"] = "ignition"


def _loopback(host: str) -> bool:
    """Only this host can reach an address: 127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


MIN_TOKEN = 12


class HttpAuth(StrictModel):
    """Who may read the listener (every path but /healthz): a user name and password (HTTP
    Basic, what a browser asks for), or a token (``Authorization: Bearer``, or a browser's
    password with any user name). Every key empty (``${HTTP_TOKEN:-}`` unset): no credentials.
    """

    username: OptionalText = None
    password: OptionalText = Field(default=None, repr=False)
    token: OptionalText = Field(default=None, repr=False)

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, token: Any) -> Any:
        """A token is one word: spaces around it (a file's) are not part of it."""
        if isinstance(token, str):
            token = token.strip()
            if token and (len(token) < MIN_TOKEN or any(c.isspace() for c in token)):
                raise ValueError(
                    f"a token is at least {MIN_TOKEN} characters without spaces "
                    "(openssl rand -hex 16 makes one)"
                )
        return token

    @property
    def empty(self) -> bool:
        return self.username is None and self.password is None and self.token is None

    @model_validator(mode="after")
    def _one_way(self) -> HttpAuth:
        if self.empty:
            return self
        if self.token is not None and (self.username or self.password) is not None:
            raise FieldError("token", "give a token, or a username and password, not both")
        if self.token is None and (self.username is None or self.password is None):
            raise FieldError(
                "username" if self.username is None else "password",
                "give a username and a password, or a token",
            )
        return self


class HttpSection(StrictModel):
    """The operations listener: /healthz, /readyz, /metrics and the status page
    (docs/operations.md)."""

    listen: str = "127.0.0.1:9108"
    # A polling device is stalled after this long without a good reading (default: three of
    # its intervals). A device that reports by exception is stalled only when disconnected.
    stale_after: Duration | None = None
    # Not ready while the buffer holds more than this (default: never for that reason).
    buffer_alarm: ByteSize | None = None
    # Required when the listener is reachable from other hosts (a listen address that is not
    # loopback); optional on loopback.
    auth: HttpAuth | None = None
    # HTTPS: the listener's certificate (with its chain) and key, PEM files.
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _guarded(self, info: ValidationInfo) -> HttpSection:
        if self.credentials is None and not _loopback(self.host):
            given = (
                " (http.auth is there, but every key of it is empty: an unset variable?)"
                if self.auth is not None
                else ""
            )
            raise FieldError(
                "listen",
                f"{self.listen} is reachable from other hosts: give http.auth (a username and "
                "password, or a token) so the status page and /metrics are not open to all, "
                f"or listen on 127.0.0.1{given}",
            )
        if (self.cert is None) != (self.key is None):
            raise FieldError("cert", "HTTPS needs both cert and key")
        existing_files(self, ("cert", "key"), info)
        if self.cert is not None and self.key is not None:
            try:  # a key that does not match, a PEM that is not one: said now, not at start
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    self.cert, self.key
                )
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                raise FieldError(
                    "cert",
                    f"{self.cert} and {self.key} are not a certificate and its key: {reason}",
                ) from None
        return self

    @field_validator("listen", mode="before")
    @classmethod
    def _check_listen(cls, listen: Any) -> Any:
        if isinstance(listen, int) and not isinstance(listen, bool):
            raise ValueError(f"{listen}: write it as host:port, e.g. 127.0.0.1:{listen}")
        if not isinstance(listen, str):
            return listen  # pydantic says what it wants
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{listen!r}: write it as host:port, e.g. 127.0.0.1:9108")
        return listen

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def credentials(self) -> HttpAuth | None:
        return self.auth if self.auth is not None and not self.auth.empty else None

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class CommandsSection(StrictModel):
    """Limits on command messages, all devices together (docs/security.md)."""

    # Messages handled per second; a burst waits in a queue of `queue` messages, and what finds
    # it full is dropped and counted, before anything is parsed.
    rate: float = Field(default=100.0, gt=0)
    queue: int = Field(default=1000, ge=1, le=100_000)
    # Refuse a command whose "ts" is older than this (replays); commands must then carry "ts".
    max_age: Duration | None = None


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class PointConfig:
    """Keys every point has, whatever its protocol. A slotted dataclass, not a model: see
    ``POINT_CONFIG``."""

    name: Name
    unit: str | None = None
    description: str | None = None
    # Absolute deadband: a new value is published only when it differs from the last published
    # one by more than this. Absent: every sample is published.
    deadband: float | None = Field(default=None, ge=0)
    # Commands (docs/device-map.md, "Commands"): nothing is writable unless the map says so.
    writable: bool = False
    min: float | None = None  # the lowest value a command may write (engineering units)
    max: float | None = None
    allowed: list[bool | int | float | str] | None = Field(default=None, min_length=1)
    sim: SimSpec | None = None

    @model_validator(mode="after")
    def _write_limits(self) -> PointConfig:
        for key in ("min", "max", "allowed"):
            if getattr(self, key) is not None and not self.writable:
                raise FieldError(key, f"{key} limits what commands write: add writable: true")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldError("max", f"max ({self.max:g}) is below min ({self.min:g})")
        return self


class DeviceConfig(StrictModel):
    """Keys every device has, whatever its protocol."""

    id: Name
    line: Name
    protocol: str
    description: str | None = None
    poll_interval: Duration = 1.0
    timeout: Duration = 1.0
    # Commands accepted per second for this device; more are refused (never queued).
    write_rate_limit: float = Field(default=10.0, gt=0)
    # The shard (gateway) that runs the device when one map serves several: --only shard=NAME.
    shard: Name | None = None
    points: Sequence[PointConfig] = Field(min_length=1)

    @property
    def writable(self) -> bool:
        return any(p.writable for p in self.points)

    @property
    def link_key(self) -> tuple[str, ...]:
        """Devices with the same key share one connection; by default a device has its own."""
        return (self.protocol, self.id)


class RootSection(StrictModel):
    """The top level; devices are validated one by one by their protocol's model."""

    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    buffer: BufferSection = BufferSection()
    commands: CommandsSection = CommandsSection()
    http: HttpSection | None = HttpSection()  # `http: false`: no listener
    sparkplug: SparkplugSection | None = None
    devices: list[dict[str, Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _sparkplug_with_its_format(self) -> RootSection:
        if self.mqtt.format == "sparkplug" and self.sparkplug is None:
            raise FieldError(
                "mqtt.format",
                "mqtt.format: sparkplug needs a sparkplug: section with its group_id, "
                "e.g. sparkplug: {group_id: plant-1}",
            )
        if self.sparkplug is not None and self.mqtt.format != "sparkplug":
            raise FieldError(
                "sparkplug",
                "a sparkplug: section is read only with mqtt.format: sparkplug: add format: "
                "sparkplug under mqtt:, or remove the section",
            )
        return self

    @field_validator("http", mode="before")
    @classmethod
    def _http_off(cls, http: Any) -> Any:
        return None if http is False else ({} if http is True else http)

    @model_validator(mode="after")
    def _response_prefix_apart(self) -> RootSection:
        """Results published under the prefix must never land on a topic the gateway reads
        (a command) or owns (a status): the prefix and the gateway's topics share no head."""
        prefix = self.mqtt.response_prefix
        if prefix is None:
            return self
        h = self.gateway.hierarchy
        heads = [f"{h.enterprise}/{h.site}/{h.area}/"]
        heads += [_fixed_head(t, self.gateway) for t in (self.mqtt.topic, self.mqtt.batch_topic)]
        for head in heads:
            if prefix.startswith(head) or head.startswith(prefix):
                raise FieldError(
                    "mqtt",
                    f"mqtt.response_prefix {prefix!r} overlaps the gateway's own topics "
                    f"({head}...): a result published there could be taken for a command; "
                    "choose a prefix outside them, e.g. replies/",
                )
        return self
