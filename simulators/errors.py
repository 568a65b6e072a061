"""The simulators' own error."""

from __future__ import annotations

from gateway.errors import GatewayError


class ListenError(GatewayError):
    """A simulator cannot serve where the device map says (address in use, no such device)."""
