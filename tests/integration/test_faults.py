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
      - {{name: flag0, table: holding, address: 6, bit: 0}}
      - {{name: flag1, table: holding, address: 6, bit: 1}}
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
    # The points inside the refused range are the only ones bad, with the device's reason.
    for name in ("refused", "flag0", "flag1"):
        assert {(r["quality"], r["reason"]) for r in by_point[name]} == {
            ("bad", "illegal data address")
        }, name
    assert "learned unreadable addresses" in gateway.output()
    # Refused again at every poll, said once in the log (the readings say it every time).
    told = [
        e
        for e in map(json.loads, (x for x in gateway.output().splitlines() if x.startswith("{")))
        if e.get("event") == "the device refuses a request: its points are bad"
    ]
    assert [(e["reason"], e["table"]) for e in told] == [("illegal data address", "holding")]

    # What the simulator saw: the merged request 0..8 hit the range, then its split 5..6 (the
    # refused register and the flags' register, with no gap to blame); from then on only the
    # lone reads of register 5 and of register 6 (both flags in one request) touch the range.
    refusals = [
        (r["address"], r["count"])
        for r in map(json.loads, (x for x in sim.output().splitlines() if x.startswith("{")))
        if r.get("event") == "injected exception"
    ]
    assert refusals[:2] == [(0, 9), (5, 2)]
    assert len(refusals) > 8
    assert set(refusals[2:]) == {(5, 1), (6, 1)}
