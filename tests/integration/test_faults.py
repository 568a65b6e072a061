"""Fault injection: the simulator refuses an address range inside a block the planner merged."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port

MAP = """gateway: {{id: gw-f, hierarchy: {{enterprise: acme, site: s1, area: a1}}}}
mqtt: {{url: 'mqtt://127.0.0.1:{broker}'}}
devices:
  - id: plc-holes
    line: line-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: {port}
    poll_interval: 200ms
    timeout: 500ms
    sim: {{exception: {{code: 2, table: holding, start: 5, end: 6}}}}
    points:
      - {{name: a, table: holding, address: 0, type: uint16, sim: {{constant: 11}}}}
      - {{name: b, table: holding, address: 3, type: uint16, sim: {{constant: 22}}}}
      - {{name: refused, table: holding, address: 5, type: uint16}}
      - {{name: c, table: holding, address: 8, type: uint16, sim: {{constant: 33}}}}
"""


def test_exception_2_hole_is_learned_and_avoided(workdir: Path, broker: Mosquitto) -> None:
    port = free_port()
    path = workdir / "map.yaml"
    path.write_text(MAP.format(broker=broker.port, port=port))
    collector = Collector(broker.port, "acme/s1/a1/#")
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        # Ten polls' worth of readings of `a`.
        collector.wait_for(lambda r: r["point"] == "a" and r["seq"] > 40)
        readings = collector.readings()
    finally:
        gateway.stop()
        sim.stop()
        collector.close()

    by_point: dict[str, list[dict[str, object]]] = {}
    for reading in readings:
        by_point.setdefault(str(reading["point"]), []).append(reading)
    # The points around the hole were good from the first poll on: the split happened at once.
    for name, value in (("a", 11), ("b", 22), ("c", 33)):
        assert all(r["quality"] == "good" and r["value"] == value for r in by_point[name]), name
    # The point inside the refused range is the only one bad, with the device's reason.
    assert {(r["quality"], r["reason"]) for r in by_point["refused"]} == {
        ("bad", "illegal data address")
    }
    assert "learned unreadable addresses" in gateway.output()

    # What the simulator saw: one merged request hit the hole; afterwards only the lone read of
    # the refused point itself touches the range.
    refusals = [
        json.loads(line) for line in sim.output().splitlines() if '"injected exception"' in line
    ]
    assert (refusals[0]["address"], refusals[0]["count"]) == (0, 9)
    assert len(refusals) > 5
    assert {(r["address"], r["count"]) for r in refusals[1:]} == {(5, 1)}
