"""The retained gateway status: online on connect, offline on a clean stop and on a crash."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import PLC2_POINTS, device, write_map

STATUS = "acme/plant-1/assembly/_gateway/gw-test/status"


def _statuses(collector: Collector) -> list[object]:
    return [p for t, p, _ in collector.snapshot() if t == STATUS]


def _wait_status(collector: Collector, state: str) -> None:
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(isinstance(p, dict) and p.get("state") == state for p in _statuses(collector)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {state} status; got {_statuses(collector)}")


def _start(workdir: Path, broker: Mosquitto) -> tuple[Process, Process, Collector]:
    port = free_port()
    path = write_map(workdir / "gw.yaml", broker.port, [device("plc-s", port, PLC2_POINTS)])
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    wait_port(port)
    collector = Collector(broker.port, STATUS)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    _wait_status(collector, "online")
    return sim, gateway, collector


def test_clean_stop_publishes_offline_and_exits_0(workdir: Path, broker: Mosquitto) -> None:
    sim, gateway, collector = _start(workdir, broker)
    try:
        assert gateway.stop() == 0  # SIGTERM
        _wait_status(collector, "offline")
        assert "gateway stopped" in gateway.output()
    finally:
        sim.stop()
        collector.close()


def test_crash_publishes_offline_through_the_last_will(workdir: Path, broker: Mosquitto) -> None:
    sim, gateway, collector = _start(workdir, broker)
    try:
        gateway.kill()  # SIGKILL: no chance to say goodbye; the broker sends the will
        _wait_status(collector, "offline")
    finally:
        gateway.stop()
        sim.stop()
        collector.close()
