"""Slow and flaky devices, from the simulator's fault injection: stale values and dropped links."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port

MAP = """gateway: {{id: gw-s, hierarchy: {{enterprise: acme, site: s1, area: a1}}}}
mqtt: {{url: 'mqtt://127.0.0.1:{broker}'}}
devices:
  - id: {device}
    line: line-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: {port}
    poll_interval: 200ms
    timeout: 3s
    sim: {sim}
    points:
      - {{name: level, table: holding, address: 0, type: uint16, sim: {{constant: 42}}}}
"""


def _run(workdir: Path, broker: Mosquitto, device: str, sim: str, until: int) -> list[dict]:  # type: ignore[type-arg]
    port = free_port()
    path = workdir / "map.yaml"
    path.write_text(MAP.format(broker=broker.port, port=port, device=device, sim=sim))
    collector = Collector(broker.port, f"acme/s1/a1/line-1/{device}/#")
    sim_proc = Process("simulate", str(path), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        collector.wait_for(lambda r: r["seq"] >= until, timeout=30)
        return collector.readings()
    finally:
        gateway.stop()
        sim_proc.stop()
        collector.close()


def test_slow_device_goes_stale_then_fresh(workdir: Path, broker: Mosquitto) -> None:
    """Each answer takes 1 s, the poll interval is 200 ms: values age past 3 intervals."""
    readings = _run(workdir, broker, "slow", "{delay: 1s}", until=8)
    qualities = [(r["quality"], r.get("reason"), r["value"]) for r in readings]
    assert ("uncertain", "stale", 42) in qualities  # the last value, marked stale
    first_stale = qualities.index(("uncertain", "stale", 42))
    assert ("good", None, 42) in qualities[first_stale:]  # and fresh again after the answer
    assert not any(q == "bad" for q, _, _ in qualities)


def test_connections_closed_by_the_device_are_reopened(workdir: Path, broker: Mosquitto) -> None:
    """The device drops every connection each second; the gateway reconnects each time."""
    readings = _run(workdir, broker, "flaky", "{close_every: 1s}", until=40)
    assert readings[-1]["quality"] == "good"
    assert sum(1 for r in readings if r["quality"] == "good" and r["value"] == 42) >= 20
    bad = [r for r in readings if r["quality"] == "bad"]
    assert all(
        r["reason"] in ("connection lost", "timeout") or "connect" in r["reason"] for r in bad
    )
