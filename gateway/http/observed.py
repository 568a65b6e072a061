"""What the listener reads of the running gateway (``/metrics``, the status page): its parts,
as callables read when asked, so a reload that replaces a part is seen at the next request."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.delivery.buffer import Buffer
from gateway.http.health import Health
from gateway.stats import DeviceStats, Histogram


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One command as the status page lists it."""

    ts: float
    id: str | None
    device: str | None
    point: str | None
    requested: object
    outcome: str  # written | refused | failed
    value: object  # read back after writing
    error: str | None
    client: str | None


@dataclass(frozen=True, slots=True)
class ReloadRow:
    """The latest reload: when, how it went, and why it was refused."""

    ts: float
    outcome: str  # applied | refused
    reason: str | None


@dataclass
class Observed:
    gateway_id: str
    devices: Callable[[], Mapping[str, tuple[str, DeviceStats]]]  # id -> (protocol, stats)
    health: Health
    buffer: Buffer
    readings: Callable[[], int]  # values encoded
    broker_connected: Callable[[], bool]
    connections: Callable[[], int]
    ack_age: Histogram
    commands: Callable[[], Mapping[str, int]]  # outcome -> count (dropped included)
    reloads: Callable[[], Mapping[str, int]]  # applied | refused -> count
    # For the status page:
    started: float = 0.0  # wall time the gateway started
    broker_since: Callable[[], float] = lambda: 0.0  # wall time it connected or lost it
    broker_url: Callable[[], str] = lambda: ""  # the broker it is on, or tries next
    map_files: Callable[[], Sequence[str]] = lambda: ()
    last_reload: Callable[[], ReloadRow | None] = lambda: None
    recent_commands: Callable[[], Sequence[CommandRow]] = lambda: ()
