"""Free ports and a real mosquitto on loopback, for the test suite and the benchmarks (which
import it from here: none of it ships with the gateway)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port free on loopback right now, below the kernel's ephemeral range.

    A port the kernel hands out with ``bind(0)`` is an ephemeral one: while a test's broker is
    stopped, any outgoing connection on the machine may take it as its source port, and the
    broker cannot listen on it again. Ports below that range are never taken that way.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded machine: any free port will do
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 10_001)


def no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open`` for test and benchmark clients: send small packets at once.
    paho leaves Nagle's algorithm on, so a packet written while the previous one is
    unacknowledged (a command after the PUBACK of the last one) waits ~40 ms for the peer's
    delayed ACK."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on loopback ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: `make test` installs Debian's mosquitto")
    return found


class Mosquitto:
    """Debian's mosquitto on a free loopback port, configured in ``workdir``.

    Persistence is on, so sessions and their queued messages survive ``stop``/``start``.
    ``extra`` lines are appended to the configuration.
    """

    def __init__(self, workdir: Path, extra: str = "", persistence: bool = True) -> None:
        """``persistence``: false for a broker that forgets every session when it stops."""
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # Started as root, mosquitto drops to its own user, which cannot write a private test
        # folder: persistence would silently not happen. Stay root, as the tests are.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence {str(persistence).lower()}\npersistence_location {workdir}/\n{extra}"
        )
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
