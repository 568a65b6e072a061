"""A broker outage: readings wait in the bounded queue and flow again when the broker is back.

The subscriber holds a persistent session on a broker with persistence on, so it sees every
message the gateway delivered, whenever it reconnects: a gap in ``seq`` is a real loss.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import PLC2_POINTS, device, write_map


def _run_outage(workdir: Path, queue_size: int) -> tuple[list[int], str]:
    broker = Mosquitto(workdir)
    port = free_port()
    dev = device("plc-q", port, PLC2_POINTS, poll="100ms")
    sim_map = write_map(workdir / "sim.yaml", broker.port, [dev])
    gw_map = write_map(workdir / "gw.yaml", broker.port, [dev])
    text = gw_map.read_text().replace("  qos: 1\n", f"  qos: 1\n  queue_size: {queue_size}\n")
    gw_map.write_text(text)
    collector = Collector(broker.port, "acme/#", persistent=True)
    sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(gw_map), log=workdir / "gw.log")
    try:
        collector.wait_for(lambda r: r["seq"] > 5)
        broker.stop()
        time.sleep(3.0)  # ~60 readings (2 points every 100 ms) are read meanwhile
        broker.start()
        last = collector.readings()[-1]["seq"]
        collector.wait_for(lambda r: r["seq"] > last + 100, timeout=40)
        seqs = [r["seq"] for r in collector.readings()]
    finally:
        collector.close()
        gateway.stop()
        sim.stop()
        broker.stop()
    return seqs, gateway.output()


def test_outage_with_room_in_the_queue_loses_nothing(workdir: Path) -> None:
    seqs, _ = _run_outage(workdir, queue_size=10_000)
    # Duplicates are allowed (QoS 1 redelivery); gaps are not.
    unique = sorted(set(seqs))
    assert unique == list(range(unique[0], unique[-1] + 1))


def test_outage_beyond_the_queue_drops_oldest_and_says_so(workdir: Path) -> None:
    seqs, log = _run_outage(workdir, queue_size=10)
    unique = sorted(set(seqs))
    missing = set(range(unique[0], unique[-1] + 1)) - set(unique)
    assert missing, "dropped readings must show as a seq gap"
    assert "reading queue full, dropping oldest" in log
    assert "readings were dropped while the broker was unreachable" in log
