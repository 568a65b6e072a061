"""The README's demo command: simulators + embedded broker + gateway, values visible."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.registry import load_config
from tests.helpers import ROOT


@pytest.mark.parametrize("format", ["json", "sparkplug"])
def test_demo_shows_every_point_good_through_the_embedded_broker(format: str) -> None:
    """The table is what a subscriber decoded from the broker: JSON messages, or Sparkplug
    births and DDATA by alias (``make demo FORMAT=sparkplug``)."""
    command = ["demo", "--format", format, "--duration", "6"]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--log-format", "json", *command],
        capture_output=True,
        text=True,
        timeout=90,  # the demo's own watchdog ends a hung shutdown after 26 s, with stacks
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    last_table = result.stdout.split("factory-gateway demo - broker")[-1]
    config = load_config([ROOT / "configs" / "demo.yaml"])
    points = [(d.id, p.name) for d in config.devices for p in d.points]
    assert len(points) >= 30
    rows = {tuple(line.split()[:2]): line for line in last_table.splitlines()[3:] if line.strip()}
    for key in points:
        assert key in rows, key
        assert " good " in rows[key], rows[key]
    assert rows[("press-01", "recipe")].split()[2] == "BRKT-2041"
    assert rows[("oven-01", "zone1_setpoint")].split()[2:4] == ["180.000", "degC"]
    assert rows[("dryer-01", "state")].split()[2] == "DRYING"  # over OPC UA
    assert rows[("welder-01", "recipe")].split()[2] == "SPOT-A7"  # over S7
    assert rows[("welder-01", "weld_time")].split()[2:4] == ["0.800", "s"]
    # A slow sine behind a deadband still moves from one printed table to the next.
    tables = result.stdout.split("factory-gateway demo - broker")[1:]
    air = {line.split()[2] for t in tables for line in t.splitlines() if "air_temp" in line}
    assert len(air - {"-"}) > 1, air
    header = last_table.splitlines()[0]
    # Where the status page is (the map's default listener; nothing else in the tests uses it).
    assert " - status page http://127.0.0.1:9108/ - " in header, header
    if format == "sparkplug":
        # A fresh edge node (the first bdSeq), no message lost on the way; the rows' names
        # came from the DBIRTHs (DDATA carries aliases only).
        assert "edge node edge-01, bdSeq 0:" in header, header
        assert header.endswith(", 0 seq gaps - Ctrl-C to stop"), header
