"""Who may read the listener: the map's ``http.auth`` checked on every request but /healthz
(a liveness probe needs no secret, and says nothing of the plant).

HTTP Basic is what a browser asks for by itself (the 401 carries ``WWW-Authenticate``); a token
goes as ``Authorization: Bearer`` (Prometheus, probes) or as a browser's password. Secrets are
compared in constant time.

A loopback listener without credentials answers only requests addressed to a loopback name:
a web page the operator opens elsewhere could otherwise point its own domain at 127.0.0.1
(DNS rebinding) and read the plant through the operator's browser.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.config.schema import HttpAuth

OPEN_PATHS = frozenset({"/healthz"})


def allowed(auth: HttpAuth, header: str | None) -> bool:
    """Whether an ``Authorization`` header carries the map's credentials."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return auth.token is not None and _same(value, auth.token)
    if scheme != "basic":
        return False
    try:
        user, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not colon:
        return False
    if auth.token is not None:
        return _same(password, auth.token)  # any user name
    assert auth.username is not None and auth.password is not None
    # Both compared, whatever the first gives: the time taken tells nothing.
    return _same(user, auth.username) & _same(password, auth.password)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def loopback_only(listen_host: str) -> Middleware:
    """An aiohttp middleware: 421 for a request whose Host is not a loopback name (or the
    listen address itself)."""
    names = LOOPBACK_NAMES | {listen_host.lower()}

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.host or "").lower()
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0]
        if request.path in OPEN_PATHS or (name or host) in names:
            return await handler(request)
        return web.Response(
            status=421,
            text="421: this listener answers requests to 127.0.0.1, localhost or ::1 only "
            "(give http.auth to reach it by another name)\n",
        )

    return check


def guard(auth: HttpAuth) -> Middleware:
    """An aiohttp middleware: 401 for a request without the credentials."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or allowed(auth, request.headers.get("Authorization")):
            return await handler(request)
        return web.Response(
            status=401,
            text="401: credentials required (http.auth in the device map)\n",
            headers={"WWW-Authenticate": 'Basic realm="factory-gateway", charset="UTF-8"'},
        )

    return check
