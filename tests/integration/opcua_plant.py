"""OPC UA test plant: the map's simulator running in this process, so a test can inject faults
(restart, drop sessions, delete a node) and count what the server holds (monitored items)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from adapters.opcua.config import OpcUaDevice
from gateway.registry import load_config
from simulators.opcua import EndpointSimulator, OpcUaSimulator
from tests.helpers import ROOT

T = TypeVar("T")


def opcua_device(
    name: str,
    port: int,
    points: str,
    extra: str = "",
    interval: str = "100ms",
) -> str:
    return f"""
  - id: {name}
    line: line-1
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:{port}/sim
    publishing_interval: {interval}
    timeout: 2s
    retry_unknown_nodes: 1s{extra}
    points:{points}"""


def browse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``factory-gateway browse ARGS`` in a subprocess, output captured; ``env``: more
    environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "browse", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


class SimThread:
    """The OPC UA simulator of a map, on its own event loop in a background thread."""

    def __init__(self, map_path: Path) -> None:
        config = load_config([map_path])
        devices = [d for d in config.devices if isinstance(d, OpcUaDevice)]
        self.simulator = OpcUaSimulator(devices, map_path.parent)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.simulator.start)

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def sync(self, function: Callable[[], T]) -> T:
        """Run a plain function on the simulator's loop (its state is not thread-safe)."""

        async def run() -> T:
            return function()

        return self.call(run)

    def server(self, device: str) -> EndpointSimulator:
        return self.simulator.of(device)

    def close(self) -> None:
        async def stop() -> None:
            await self.simulator.stop()
            # asyncua leaves session and subscription loops behind: end them too.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            self.call(stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def latest(readings: list[dict[str, Any]], device: str) -> dict[str, dict[str, Any]]:
    return {r["point"]: r for r in readings if r["device"] == device}
