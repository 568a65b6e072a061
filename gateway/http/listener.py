"""The gateway's HTTP listener: /healthz, /readyz, /metrics and the status page (page.py).

aiohttp serves it on the gateway's own event loop: a probe that gets an answer has seen the
loop answer. No HTTP is parsed here. With ``http.auth`` every path but /healthz needs the
credentials (auth.py); with ``http.cert`` and ``http.key`` it speaks HTTPS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import orjson
import structlog
from aiohttp import web

from gateway.config.schema import HttpSection
from gateway.errors import GatewayError
from gateway.http.auth import guard, loopback_only
from gateway.http.health import Health
from gateway.http.metrics import Metrics
from gateway.http.page import StatusPage

log = structlog.get_logger("gateway.http")

SHUTDOWN_SECONDS = 2.0  # open requests get this long when the gateway stops


class HttpListener:
    def __init__(
        self, settings: HttpSection, health: Health, metrics: Metrics, page: StatusPage
    ) -> None:
        self.host, self.port = settings.host, settings.port
        self.health, self.metrics, self.page = health, metrics, page
        self.tls = _tls(settings)
        auth = settings.credentials
        check = guard(auth) if auth is not None else loopback_only(self.host)
        self.app = web.Application(middlewares=[check])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        page.add_routes(self.app)
        self.started = asyncio.Event()  # listening, or failed to
        self.listening = False
        scheme = "https" if self.tls is not None else "http"
        # Listening on every address: the box's name is what a tablet on the LAN can open.
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{self.port}/"

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls)
            try:
                await site.start()
            except OSError as exc:
                # The readings matter more than their health page: they keep flowing.
                log.error(
                    "the HTTP listener cannot listen: /healthz, /readyz, /metrics and the "
                    "status page are not served",
                    listen=f"{self.host}:{self.port}",
                    reason=exc.strerror or str(exc),
                    hint="http.listen in the map (another gateway on this box?), or http: false",
                )
            else:
                self.listening = True
                log.info("HTTP listener started", listen=f"{self.host}:{self.port}", page=self.url)
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


def _tls(settings: HttpSection) -> ssl.SSLContext | None:
    """The HTTPS context of ``http.cert`` and ``http.key`` (None: plain HTTP)."""
    if settings.cert is None or settings.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"http.cert and http.key cannot be loaded: {exc}") from exc
    return context


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
