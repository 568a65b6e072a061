"""systemd's notify protocol (sd_notify(3)): READY, RELOADING, STOPPING and the watchdog.

One datagram per state to the socket in ``$NOTIFY_SOCKET``; nothing happens without it, so the
gateway runs the same under systemd, Docker or a shell. The watchdog is fed from the event
loop itself (every half of ``$WATCHDOG_USEC``): a loop that stops turning stops feeding it, and
systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog

log = structlog.get_logger("gateway.systemd")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self.address = address
        self.watchdog = watchdog_usec / 1e6 if watchdog_usec else None
        self._socket: socket.socket | None = None
        self._failing = False  # a failure is logged once, until a send works again
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @classmethod
    def from_environment(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        return cls(address, int(usec) if usec.isdigit() and for_us else None)

    @property
    def active(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        """``fields``: ``KEY=value`` lines, sent as one datagram; a failure is logged, not
        raised (the gateway keeps running; systemd decides what a missed state means)."""
        if self._socket is None or self.address is None:
            return
        # "@name" is a socket in the abstract namespace (a leading NUL byte).
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._socket.sendto("\n".join(fields).encode(), address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd", socket=self.address, reason=exc.strerror)
            self._failing = True
        else:
            self._failing = False

    def ready(self) -> None:
        self.send("READY=1", "STATUS=running")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def run(self) -> None:
        """Until cancelled: ``WATCHDOG=1`` every half watchdog period (when systemd asks for
        it); cancelled, ``STOPPING=1`` at once, as the gateway starts to stop."""
        try:
            period = self.watchdog
            if period is None:
                await asyncio.get_running_loop().create_future()
                return
            while True:
                self.send("WATCHDOG=1")
                await asyncio.sleep(period / 2)
        finally:
            self.stopping()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
