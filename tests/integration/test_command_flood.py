"""A flood of command messages (issue: "a burst of command messages freezes the gateway").

80,000 one-byte messages published at QoS 0 by mosquitto_pub on a command topic of a device
that does not exist. The gateway must keep polling and delivering readings at its usual rate,
drop what it cannot take (counted, a log line per interval, not per message) and stop on
SIGTERM.
"""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.line import COUNTERS, events

FLOOD = 80_000
TOPIC = "acme/plant-1/assembly/line-1/nodev/x/set"
WRITABLE = "\n      - {name: sp, table: holding, address: 50, type: uint16, writable: true}"
DROPPED = "command messages dropped: more arrive than the gateway takes"
RATE = 400  # commands.rate: each one taken is parsed, refused, audited and answered


def _when(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts).timestamp()


def _encoded_in(readings: list[dict[str, Any]], start: float, end: float) -> int:
    """Readings the gateway encoded (its ``gw_ts``) between ``start`` and ``end``."""
    return sum(1 for r in readings if start <= _when(r["gw_ts"]) < end)


def _flood(port: int, lines: Path) -> None:
    """Every line of ``lines`` as a QoS 0 message on the command topic, as fast as C can."""
    with lines.open("rb") as stdin:
        subprocess.run(
            ["mosquitto_pub", "-p", str(port), "-q", "0", "-t", TOPIC, "-l"],
            stdin=stdin,
            check=True,
            timeout=60,
        )


def test_a_flood_of_commands_leaves_readings_flowing(make_line: Any, workdir: Path) -> None:
    line = make_line(points=COUNTERS + WRITABLE)
    gateway = line.gateway("", sections=f"commands: {{rate: {RATE}}}")
    window = 5.0
    # Readings flow: 11 points every 100 ms. A baseline of 5 s before the flood...
    line.collector.wait_for(lambda r: r["seq"] > 50, timeout=30)
    flowing = time.time()
    line.collector.wait_for(lambda r: _when(r["gw_ts"]) > flowing + window, timeout=30)
    flood_at = time.time()
    lines = workdir / "flood.txt"
    lines.write_bytes(b"1\n" * FLOOD)
    _flood(line.broker.port, lines)
    sent_in = time.time() - flood_at
    # ... and 5 s from the start of the flood: the gateway reads all of it meanwhile.
    line.collector.wait_for(lambda r: _when(r["gw_ts"]) > flood_at + window + 1, timeout=30)
    readings = line.collector.readings()
    before = _encoded_in(readings, flood_at - window, flood_at)
    during = _encoded_in(readings, flood_at, flood_at + window)
    print(f"flood sent in {sent_in:.2f} s; readings {before} before, {during} during")
    assert before > 0.8 * 110 * window  # the device really was polled at its rate
    assert during >= 0.9 * before

    # Every reading up to now arrived: nothing was lost while the flood was read.
    line.wait_complete(max(line.seqs()))

    # Each message was either taken (answered, audited as refused) or dropped and counted.
    def accounted() -> int:
        dropped = sum(e["count"] for e in events(gateway, DROPPED))
        return dropped + len(events(gateway, "command"))

    deadline = time.monotonic() + 60
    while accounted() < FLOOD and time.monotonic() < deadline:
        time.sleep(0.5)
    assert accounted() == FLOOD
    audited = events(gateway, "command")
    assert {e["error"] for e in audited} == {"unknown device 'nodev'"}
    # Taken at most at commands.rate after a burst of commands.queue (1,000).
    spell = _when(audited[-1]["timestamp"]) - flood_at
    assert len(audited) <= 1000 + RATE * (spell + 1), (len(audited), spell)
    assert len(events(gateway, DROPPED)) <= 2 + (time.time() - flood_at) / 10  # per 10 s

    # SIGTERM in the middle of another flood: the gateway stops by itself, within the helper's
    # 10 s (or it is killed and the exit code is -9), and says what it delivered.
    _flood(line.broker.port, lines)
    assert gateway.stop() == 0
    assert events(gateway, "delivery at shutdown")
