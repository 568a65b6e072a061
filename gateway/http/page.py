"""The status page: ``/`` (the page and its assets), ``/status.json`` (everything at once) and
``/events`` (Server-Sent Events, a few a second whatever the reading rate).

An event carries the gateway, every device's row and the last commands; the points and trends
only of the devices the page has open (``/events?open=a,b``; ``*`` for all), and of those only
what changed since the client's previous event. The page reconnects by itself (EventSource),
and the first event after a reconnect carries everything again.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from gateway import __version__
from gateway.delivery.encode_json import iso_time
from gateway.http.observed import Observed
from gateway.http.status import PointTable, Status
from gateway.stats import DeviceStats

EVENTS_PER_SECOND = 4.0  # the open devices' points
SUMMARY_EVERY = 1.0  # seconds: the gateway, the devices' rows and the commands
# Points sent at once for "every device" (/status.json, /events?open=*): a bigger plant is
# asked for device by device, so one answer never holds the event loop for long.
MAX_POINTS_AT_ONCE = 10_000
TOO_MANY = (
    f"more than {MAX_POINTS_AT_ONCE:,} points: ask for devices by name "
    "(/status.json?device=a,b; the page: open devices one by one)"
)
READ_WINDOW = 2.0  # seconds over which a device's read duration is averaged
ASSETS = {
    "status.css": "text/css",
    "status.js": "text/javascript",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass
class _Client:
    """What one page has been sent: per open device, its table, the fold and trend rows."""

    open: frozenset[str] | None  # None: every device
    summary: int = -1  # the summary it was sent last
    tables: dict[str, PointTable] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)


@dataclass
class _Reads:
    count: int = 0
    total: float = 0.0
    at: float = 0.0
    mean_ms: float | None = None


class StatusPage:
    def __init__(self, observed: Observed, status: Status) -> None:
        self.observed = observed
        self.status = status
        self.period = 1.0 / EVENTS_PER_SECOND
        self._page = _asset("index.html")
        self._assets = {name: _asset(name) for name in ASSETS}
        self._summary: tuple[float, int, dict[str, Any]] = (-math.inf, -1, {})
        self._reads: dict[str, _Reads] = {}
        self.streams: set[asyncio.Task[Any]] = set()  # open /events, ended at shutdown

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/assets/{name}", self._asset)
        app.router.add_get("/status.json", self._snapshot)
        app.router.add_get("/events", self._events)
        app.on_shutdown.append(self._end_streams)

    # -- handlers ----------------------------------------------------------------------------

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._page, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._assets:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._assets[name],
            content_type=ASSETS[name],
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def _snapshot(self, request: web.Request) -> web.Response:
        """What the page shows (no trends), with the points of ``?device=a,b``, or of every
        device when the plant is small enough."""
        client, notice = self._client(request.query.get("device", "*"))
        body = {**self._summary_part()[1], "points": self._points(client)}
        if notice is not None:
            body["notice"] = notice
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers=SECURITY_HEADERS
        )

    def _client(self, wanted: str) -> tuple[_Client, str | None]:
        """A client of the devices ``wanted`` names (``*``: all, if not too many points)."""
        if wanted != "*":
            return _Client(open=frozenset(d for d in wanted.split(",") if d)), None
        if self.status.points > MAX_POINTS_AT_ONCE:
            return _Client(open=frozenset()), TOO_MANY
        return _Client(open=None), None

    async def _events(self, request: web.Request) -> web.StreamResponse:
        client, notice = self._client(request.query.get("open", ""))
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
            }
        )
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")  # the page reconnects after 2 s
            while True:
                event: dict[str, Any] = {"notice": notice} if notice else {}
                notice = None
                made, summary = self._summary_part()
                if made != client.summary:  # new since this client's last event
                    client.summary = made
                    event.update(summary)
                if points := self._points(client):
                    event["points"] = points
                if trends := self._trends(client):
                    event["trends"] = trends
                if event:
                    await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
                await asyncio.sleep(self.period)
        except ConnectionError:
            pass  # the page went away (when the gateway stops, the task is cancelled)
        finally:
            self.streams.discard(task)
        return response

    async def _end_streams(self, _app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    # -- what an event says --------------------------------------------------------------------

    def _summary_part(self) -> tuple[int, dict[str, Any]]:
        """The gateway, the devices' rows and the commands, and which summary it is: made at
        most once every ``SUMMARY_EVERY`` seconds, shared by every page."""
        at, made, summary = self._summary
        now = time.monotonic()
        if now - at >= SUMMARY_EVERY * 0.95:
            made += 1
            summary = {
                "gateway": self._gateway(),
                "devices": self._devices(),
                "commands": self._commands(),
            }
            self._summary = (now, made, summary)
        return made, summary

    def _gateway(self) -> dict[str, Any]:
        seen = self.observed
        buffer = seen.buffer
        stats = buffer.stats()
        outcomes = buffer.outcomes
        reload = seen.last_reload()
        now = time.time()
        connected = seen.broker_connected()
        return {
            "id": seen.gateway_id,
            "version": __version__,
            "now": iso_time(now),
            "uptime_s": round(now - seen.started, 1),
            "broker": {
                "url": seen.broker_url(),
                "connected": connected,
                "since": iso_time(seen.broker_since()),
                "held": seen.health.held() if connected else None,
                "reconnects": max(seen.connections() - 1, 0),
            },
            "delivered": outcomes.delivered,
            "dropped": sum(outcomes.dropped.values()),
            "dropped_by_reason": dict(outcomes.dropped),
            "readings": seen.readings(),
            "buffer": {
                "records": buffer.count,
                "bytes": buffer.bytes,
                "oldest_s": stats["oldest_buffered_s"],
                "alarm": seen.health.buffer_alarm,
            },
            "map": {
                "files": list(seen.map_files()),
                "reload": None
                if reload is None
                else {
                    "at": iso_time(reload.ts),
                    "outcome": reload.outcome,
                    "reason": reload.reason,
                },
            },
            "commands": dict(seen.commands()),
        }

    def _devices(self) -> list[dict[str, Any]]:
        _, report = self.observed.health.ready()
        health: dict[str, Any] = report["devices"]  # type: ignore[assignment]
        stats = self.observed.devices()
        for gone in self._reads.keys() - self.status.tables.keys():
            del self._reads[gone]
        rows = []
        for device, table in self.status.tables.items():
            state = health.get(device, {})
            protocol, counters = stats.get(device, (table.protocol, None))
            row: dict[str, Any] = {
                "id": device,
                "protocol": protocol,
                "line": table.line,
                "ok": bool(state.get("ready")),
                "state": state.get("state"),
                "reason": state.get("reason"),
                "last_good_age_s": state.get("last_good_age_s"),
                "points": len(table.names),
            }
            if counters is not None:
                row["polls"] = counters.polls
                row["requests"] = counters.requests
                row["errors"] = sum(counters.errors.values())
                row["last_error"] = counters.last_error
                row["read_ms"] = self._read_ms(device, counters)
            rows.append(row)
        return rows

    def _read_ms(self, device: str, counters: DeviceStats) -> float | None:
        """The device's mean read duration over the last ``READ_WINDOW`` seconds or so (the
        previous window's while no read ended in this one)."""
        reads = self._reads.setdefault(device, _Reads())
        now = time.monotonic()
        if now - reads.at >= READ_WINDOW:
            count, total = sum(counters.read_seconds.counts), counters.read_seconds.total
            if count > reads.count:
                reads.mean_ms = round((total - reads.total) / (count - reads.count) * 1000, 2)
            reads.count, reads.total, reads.at = count, total, now
        return reads.mean_ms

    def _commands(self) -> list[dict[str, Any]]:
        return [
            {
                "at": iso_time(c.ts),
                "id": c.id,
                "device": c.device,
                "point": c.point,
                "requested": c.requested,
                "outcome": c.outcome,
                "value": c.value,
                "error": c.error,
                "client": c.client,
            }
            for c in reversed(self.observed.recent_commands())
        ]

    def _points(self, client: _Client) -> dict[str, Any]:
        """Per open device: its names and units the first time, then the points that changed
        since the client's last event, as ``[index, value, quality, ts, reason]``."""
        out: dict[str, Any] = {}
        tables = self.status.tables
        for gone in [d for d in client.tables if tables.get(d) is not client.tables[d]]:
            del client.tables[gone]  # removed or replaced by a reload: its memory goes
            client.folds.pop(gone, None)
            client.samples.pop(gone, None)
        for device, table in self._open(client):
            entry: dict[str, Any] = {}
            if client.tables.get(device) is not table:  # new to this client, or reloaded
                client.tables[device] = table
                client.folds[device] = 0
                client.samples[device] = 0
                entry["names"] = table.names
                entry["units"] = table.units
                entry["slots"] = table.slots
            table.settle()
            rows = [
                [i, state.value, state.quality, iso_time(state.ts), state.reason]
                for i in table.changed_since(client.folds[device])
                if (state := table.state(i)) is not None
            ]
            client.folds[device] = table.folds
            if rows:
                entry["rows"] = rows
            if entry:
                out[device] = entry
        return out

    def _trends(self, client: _Client) -> dict[str, Any]:
        """Per open device, the trend rows the client has not had: ``t`` (epoch ms) and ``v``
        (per row, every point's value; null where none)."""
        out: dict[str, Any] = {}
        for device, table in self._open(client):
            seen = client.samples.get(device, 0)
            if table.samples == seen:
                continue
            times, rows = table.trend_rows(seen)
            client.samples[device] = table.samples
            out[device] = {
                "t": [round(t * 1000) for t in times],
                "v": [row.tolist() for row in rows],
            }
        return out

    def _open(self, client: _Client) -> list[tuple[str, PointTable]]:
        tables = self.status.tables
        if client.open is None:
            return list(tables.items())
        return [(d, tables[d]) for d in client.open if d in tables]


def _asset(name: str) -> bytes:
    return (resources.files("gateway.http") / "page" / name).read_bytes()
