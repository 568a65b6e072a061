"""One production line for the MQTT tests: a broker, a simulated device of counters, an
independent subscriber, and gateways started with the ``mqtt:`` keys a test gives."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import Amqtt, Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import device, write_map

COUNTERS = "".join(
    f"\n      - {{name: c{i}, table: holding, address: {i}, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
    for i in range(10)
)
# 60 registers of text: a per-point message of ~330 bytes
LONG_TEXT = (
    "\n      - {name: label, table: holding, address: 100, type: string, length: 60, "
    f"sim: {{constant: {'L' * 120}}}}}"
)


class Line:
    """``broker``: mosquitto configuration lines, or ``"amqtt"`` for the second broker."""

    def __init__(
        self,
        workdir: Path,
        broker: str = "",
        points: str = COUNTERS,
        login: tuple[str, str] | None = None,
        persistence: bool = True,
    ) -> None:
        self.workdir = workdir
        self.broker: Mosquitto | Amqtt
        if broker == "amqtt":
            self.broker = Amqtt(workdir)
        else:
            # mosquitto's own log beside the others, for a failure's report
            log = f"log_dest file {workdir}/mosquitto.log\n"
            extra = "max_queued_messages 0\n" + log + broker
            self.broker = Mosquitto(workdir, extra=extra, persistence=persistence)
        self.port = free_port()
        self.device = device("plc-q", self.port, points, poll="100ms")
        sim_map = write_map(workdir / "sim.yaml", self.broker.port, [self.device])
        self.sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
        self.gateways: list[Process] = []
        try:
            wait_port(self.port)
            self.collector = Collector(self.broker.port, "acme/#", persistent=True, login=login)
        except BaseException:
            self.sim.stop()
            self.broker.stop()
            raise

    def gateway(
        self, mqtt: str, qos: int = 1, port: int | None = None, sections: str = ""
    ) -> Process:
        """``port``: reach the broker there (a proxy) instead of directly; ``sections``: more
        top-level sections of the map."""
        n = len(self.gateways) + 1
        path = write_map(
            self.workdir / f"gw{n}.yaml",
            port or self.broker.port,
            [self.device],
            mqtt=mqtt,
            sections=sections,
        )
        path.write_text(path.read_text().replace("  qos: 1\n", f"  qos: {qos}\n"))
        gateway = Process("run", str(path), log=self.workdir / f"gw{n}.log")
        self.gateways.append(gateway)
        return gateway

    def seqs(self) -> set[int]:
        return {r["seq"] for r in self.collector.readings()}

    def wait_complete(self, upto: int, timeout: float = 60) -> set[int]:
        """Wait until every seq from the first received to ``upto`` arrived; the seqs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seqs = self.seqs()
            if seqs and set(range(min(seqs), upto + 1)) <= seqs:
                return seqs
            time.sleep(0.2)
        seqs = self.seqs()
        missing = sorted(set(range(min(seqs, default=0), upto + 1)) - seqs)
        raise AssertionError(f"{len(missing)} seqs missing up to {upto}: {missing[:10]}...")

    def close(self) -> None:
        self.collector.close()
        for gateway in self.gateways:
            gateway.stop()
        self.sim.stop()
        self.broker.stop()


def wait_buffered(workdir: Path, count: int, timeout: float = 60) -> int:
    """Wait until the gateway's disk buffer (``workdir/data/buffer``) holds ``count`` records:
    an outage long enough, measured by what waits rather than by the clock."""
    database = workdir / "data" / "buffer" / "buffer.sqlite3"
    deadline = time.monotonic() + timeout
    held = 0
    while time.monotonic() < deadline:
        if database.exists():  # the gateway may not have created it yet
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
                held = db.execute("SELECT count(*) FROM records").fetchone()[0]
        if held >= count:
            return int(held)
        time.sleep(0.2)
    raise AssertionError(f"{held} records buffered after {timeout}s, waited for {count}")


def log_events(process: Process) -> list[dict[str, Any]]:
    """Every JSON log event of the gateway, in order."""
    return [json.loads(x) for x in process.output().splitlines() if x.startswith("{")]


def buffered_seqs(workdir: Path) -> set[int]:
    """The seqs waiting in the gateway's disk buffer (``workdir/data/buffer``), read-only."""
    database = workdir / "data" / "buffer" / "buffer.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {seq for (seq,) in db.execute("SELECT seq FROM records")}


def events(process: Process, event: str) -> list[dict[str, Any]]:
    """The gateway's JSON log events named ``event``."""
    return [e for e in log_events(process) if e.get("event") == event]


def wait_event(process: Process, event: str, timeout: float = 20) -> dict[str, Any]:
    """The first ``event`` in the gateway's log, waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(process, event)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} within {timeout}s: {process.output()[-3000:]}")


@dataclass
class Plcs:
    """Devices of ``points``, each simulated by a process of its own (so one can be killed),
    and a gateway map listing them all with the HTTP listener on ``http``."""

    ports: dict[str, int]
    sims: dict[str, Process]
    http: int
    path: Path

    def wait(self) -> None:
        for port in self.ports.values():
            wait_port(port)

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()


def simulated_plcs(
    workdir: Path, broker_port: int, points: str, names: tuple[str, ...] = ("plc-a", "plc-b")
) -> Plcs:
    ports = {name: free_port() for name in names}
    devices = {name: device(name, port, points, poll="200ms") for name, port in ports.items()}
    http = free_port()
    path = write_map(
        workdir / "gw.yaml",
        broker_port,
        list(devices.values()),
        sections=f"http: {{listen: 127.0.0.1:{http}}}",
    )
    sims = {
        name: Process(
            "simulate",
            str(write_map(workdir / f"{name}.yaml", broker_port, [devices[name]])),
            log=workdir / f"{name}.log",
        )
        for name in devices
    }
    return Plcs(ports, sims, http, path)
