"""Nothing lost: broker outages, crashes of the gateway, and a full buffer, counted exactly.

The subscriber holds a persistent session on a broker with persistence on (and no limit on the
messages it queues for a subscriber), so it sees every message the gateway delivered, whenever
it reconnects: a gap in ``seq`` is a real loss.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

from tests.helpers import Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.line import wait_buffered
from tests.integration.plant import device, write_map

UNLIMITED = "max_queued_messages 0\n"


def _points(count: int) -> str:
    return "".join(
        f"\n      - {{name: c{i:03d}, table: holding, address: {i}, type: uint16, "
        f"sim: {{counter: {{interval: 100ms}}}}}}"
        for i in range(count)
    )


class Line:
    """A Modbus device of ``points`` counters polled every 100 ms, the gateway, a subscriber."""

    def __init__(self, workdir: Path, points: int, buffer: str = "") -> None:
        self.workdir = workdir
        self.broker = Mosquitto(workdir, extra=UNLIMITED)
        port = free_port()
        dev = device("plc-b", port, _points(points), poll="100ms")
        self.map = write_map(workdir / "gw.yaml", self.broker.port, [dev])
        if buffer:
            self.map.write_text(self.map.read_text() + f"buffer: {buffer}\n")
        self.collector = Collector(self.broker.port, "acme/#", persistent=True)
        self.sim = Process("simulate", str(self.map), log=workdir / "sim.log")
        wait_port(port)
        self.runs = 0
        self.gateway = self.start_gateway()

    def start_gateway(self) -> Process:
        self.runs += 1
        return Process("run", str(self.map), log=self.workdir / f"gw{self.runs}.log")

    def seqs(self) -> list[int]:
        return [r["seq"] for r in self.collector.readings()]

    def wait_until_delivered(self, seq: int, timeout: float = 60) -> None:
        self.collector.wait_for(lambda r: r["seq"] >= seq, timeout=timeout)

    def wait_until_complete(self, upto: int, timeout: float = 120) -> None:
        """Until every seq from the first received to ``upto`` arrived; fails at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            seqs = set(self.seqs())
            missing = set(range(min(seqs, default=0), upto + 1)) - seqs
            if seqs and not missing:
                return
            if time.monotonic() > deadline:
                first = sorted(missing)[:10]
                raise AssertionError(f"{len(missing)} seqs up to {upto} missing: {first}")
            time.sleep(0.5)

    def close(self) -> None:
        self.collector.close()
        self.gateway.stop()
        self.sim.stop()
        self.broker.stop()


def _events(log: str, event: str) -> list[dict[str, object]]:
    lines = (json.loads(x) for x in log.splitlines() if x.startswith("{"))
    return [e for e in lines if e.get("event") == event]


def test_a_60_s_broker_outage_at_1000_readings_per_s_loses_nothing(workdir: Path) -> None:
    line = Line(workdir, points=100)
    try:
        line.collector.wait_for(lambda r: r["seq"] > 3000, timeout=30)
        line.broker.stop()
        wait_buffered(workdir, 60_000, timeout=120)  # ~60 s: 60,000 readings wait
        line.broker.start()
        # The backlog is replayed while live values keep flowing; wait until all is there.
        resumed = time.monotonic()
        line.wait_until_delivered(max(line.seqs()) + 60_000, timeout=60)
        # Live values overtake the replay, so the newest ~second may still be on its way.
        upto = max(line.seqs()) - 1000
        line.wait_until_complete(upto, timeout=180)
        catch_up = time.monotonic() - resumed
        readings = line.collector.readings()
    finally:
        line.close()
    seqs = [r["seq"] for r in readings]
    received = set(seqs)
    first = min(received)
    assert first <= 100  # from the very first readings on
    missing = set(range(first, upto + 1)) - received
    assert not missing, f"{len(missing)} seqs missing, from {min(missing)}"
    replayed = [r for r in readings if r.get("replayed")]
    assert len(replayed) > 50_000  # what waited for the broker, marked as such
    # Replayed messages keep their original timestamps: read before the newest live value
    # (the last message received may itself be a replayed one, when the replay ends last).
    newest_live = max(r["gw_ts"] for r in readings if not r.get("replayed"))
    assert all(r["gw_ts"] < newest_live for r in replayed)
    # Live values were interleaved with the replay, not starved behind it.
    first_replayed = seqs.index(replayed[0]["seq"])
    last_replayed = max(i for i, r in enumerate(readings) if r.get("replayed"))
    live_during_replay = [
        r for r in readings[first_replayed:last_replayed] if not r.get("replayed")
    ]
    assert len(live_during_replay) > 1000
    print(f"60 s outage: {len(replayed)} replayed, caught up {catch_up:.1f} s after restart")


def test_kill_9_at_random_moments_loses_nothing(workdir: Path) -> None:
    line = Line(workdir, points=20)  # 200 readings/s
    rng = random.Random(20261122)
    try:
        line.collector.wait_for(lambda r: r["seq"] > 200, timeout=30)
        for _ in range(4):
            # A random moment: after 60 to 500 more readings (0.3 to 2.5 s at 200 a second).
            line.wait_until_delivered(max(line.seqs()) + rng.randint(60, 500), timeout=30)
            line.gateway.kill()
            line.gateway = line.start_gateway()
        upto = max(line.seqs()) + 400  # well past the last kill's replay
        line.wait_until_complete(upto)
        logs = [(workdir / f"gw{n}.log").read_text() for n in range(1, line.runs + 1)]
    finally:
        line.close()
    counts = Counter(seq for seq in line.seqs() if seq <= upto)
    unique = sorted(counts)
    assert unique == list(range(unique[0], upto + 1)), "a seq is missing"
    # Duplicates only for what was in flight at each kill: sent, and not yet known to be
    # acknowledged (acknowledgements are committed every sync_interval, 200 ms).
    duplicates = sum(n - 1 for n in counts.values())
    print(f"kill -9 x4: {len(unique)} seqs, none missing, {duplicates} duplicates")
    assert duplicates <= 4 * 300, duplicates
    # Each restart said what it replayed, and seq continued.
    assert sum(len(_events(text, "replaying what a previous run left")) for text in logs) >= 1


def test_a_full_buffer_drops_the_oldest_and_counts_exactly_what_is_missing(
    workdir: Path,
) -> None:
    line = Line(workdir, points=20, buffer="{max_size: 32KiB}")  # ~150 messages
    try:
        line.collector.wait_for(lambda r: r["seq"] > 100, timeout=30)
        line.broker.stop()
        # Room for ~150 readings: the outage lasts until the oldest are being dropped.
        deadline = time.monotonic() + 30
        while not _events(line.gateway.output(), "buffer full: dropping the oldest readings"):
            assert time.monotonic() < deadline, "the buffer never filled"
            time.sleep(0.1)
        line.broker.start()
        line.wait_until_delivered(max(line.seqs()) + 1000, timeout=60)
        assert line.gateway.stop() == 0
        log = line.gateway.output()
        readings = line.collector.readings()
    finally:
        line.close()
    (summary,) = _events(log, "delivery at shutdown")
    dropped, still_buffered = summary["dropped"], summary["buffered"]
    assert isinstance(dropped, dict) and isinstance(still_buffered, int)
    seqs = {r["seq"] for r in readings}
    missing = sorted(set(range(min(seqs), max(seqs) + 1)) - seqs)
    # The oldest were dropped: one run of missing seqs, exactly as many as counted, and what
    # was kept from the outage (replayed) is newer.
    run = [seq for seq in missing if seq <= missing[0] + len(missing)]
    run = run[: next((i for i, s in enumerate(run) if s != run[0] + i), len(run))]
    assert run and dropped == {"buffer_full": len(run)}
    kept = [r["seq"] for r in readings if r.get("replayed")]
    assert kept and min(kept) > run[-1]
    # Any other gap is the tail still in the buffer at shutdown (sent at the next start).
    assert len(missing) - len(run) <= still_buffered
    assert "buffer full: dropping the oldest readings" in log
