"""The gateway's HTTP listener: /healthz, /readyz and /metrics (next: the status page).

aiohttp serves it on the gateway's own event loop: a probe that gets an answer has seen the
loop answer. No HTTP is parsed here.
"""

from __future__ import annotations

import asyncio

import orjson
import structlog
from aiohttp import web

from gateway.http.health import Health
from gateway.http.metrics import Metrics

log = structlog.get_logger("gateway.http")


class HttpListener:
    def __init__(self, host: str, port: int, health: Health, metrics: Metrics) -> None:
        self.host, self.port, self.health, self.metrics = host, port, health, metrics
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.started = asyncio.Event()  # listening, or failed to

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as exc:
                # The readings matter more than their health page: they keep flowing.
                log.error(
                    "the HTTP listener cannot listen: /healthz, /readyz, /metrics are not served",
                    listen=f"{self.host}:{self.port}",
                    reason=exc.strerror or str(exc),
                    hint="http.listen in the map (another gateway on this box?), or http: false",
                )
            else:
                log.info("HTTP listener started", listen=f"{self.host}:{self.port}")
            self.started.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        alive = self.health.running
        return _json({"alive": alive}, 200 if alive else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, report = self.health.ready()
        return _json(report, 200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = self.metrics.content_type
        return response


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
