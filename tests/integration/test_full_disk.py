"""A full disk under a running gateway (issue: "a full disk loses readings silently").

The disk fills: the gateway's file size limit (RLIMIT_FSIZE, set on the running process, as a
filesystem that runs out of space would) stops the buffer's files from growing. Readings are
committed to the buffer before they are published, so none goes out meanwhile. The gateway
must say why once, keep every reading in memory, report them as buffered, stay up, and write
and deliver them all when space returns.
"""

from __future__ import annotations

import resource
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.line import events, wait_event

CANNOT_WRITE = "the buffer cannot write: readings wait in memory"
WRITES_AGAIN = "the buffer writes again"
STATUS = "acme/plant-1/assembly/_gateway/gw-test/status"


def _largest(folder: Path) -> int:
    return max(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _moment(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def test_a_full_disk_keeps_the_readings_reports_them_and_recovers(
    make_line: Any, workdir: Path
) -> None:
    line = make_line()
    gateway = line.gateway("")
    line.collector.wait_for(lambda r: r["seq"] > 100, timeout=30)
    buffer = workdir / "data" / "buffer"
    limit = max(_largest(buffer), gateway.log.stat().st_size) + 32 * 1024
    pid = gateway.proc.pid
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        full = wait_event(gateway, CANNOT_WRITE, timeout=60)
        assert full["reason"] in ("disk I/O error", "database or disk is full"), full
        full_at = _moment(full["timestamp"])

        # The status (every 10 s) tells the truth: what was read and not delivered is buffered.
        status = line.collector.wait_for_message(
            lambda t, p: t == STATUS and _moment(p["ts"]) > full_at + 1, timeout=30
        )
        delivered = max(line.seqs())
        assert status["buffered"] >= status["last_seq"] - delivered > 0, (status, delivered)
        assert status["dropped"] == {}
        assert gateway.proc.poll() is None  # still running
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

    again = wait_event(gateway, WRITES_AGAIN, timeout=30)
    assert again["written"] > 0 and again["dropped"] == 0, again
    line.wait_complete(status["last_seq"], timeout=60)  # every reading held in memory arrived
    assert gateway.stop() == 0
    assert len(events(gateway, CANNOT_WRITE)) == 1  # said once, not once per failed commit
    (summary,) = events(gateway, "delivery at shutdown")
    assert summary["dropped"] == {}, summary
