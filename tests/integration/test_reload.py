"""Hot reload of a running gateway: SIGHUP and ``run --watch``. Only what changed restarts,
nothing is lost, and a broken map leaves the running one in place."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema

from tests.helpers import ROOT, Collector, Mosquitto, Process, Proxy, free_port, until, wait_port
from tests.integration.line import buffered_seqs, events, log_events, wait_buffered, wait_event
from tests.integration.plant import device, write_map

COUNTER = (
    "\n      - {name: c, table: holding, address: 0, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
)
MORE = "\n      - {name: d, table: holding, address: 1, type: int16, unit: bar, sim: {constant: 7}}"
TOPIC = "acme/plant-1/assembly/line-1"
STATUS_SCHEMA = json.loads((ROOT / "docs/schemas/device-status.schema.json").read_text())


def _seqs_have_no_gap(collector: Collector) -> list[int]:
    seqs = sorted({r["seq"] for r in collector.readings()})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a reading is missing"
    return seqs


def _statuses(collector: Collector, name: str) -> list[dict[str, Any]]:
    topic = f"{TOPIC}/{name}/_status"
    return [p for t, p, _ in collector.snapshot() if t == topic]


def test_sighup_applies_a_new_map_device_by_device(workdir: Path, broker: Mosquitto) -> None:
    ports = {name: free_port() for name in ("keep", "edit", "gone", "new")}
    everything = [device(n, p, COUNTER + MORE, poll="200ms") for n, p in ports.items()]
    sim = Process(
        "simulate", str(write_map(workdir / "sim.yaml", broker.port, everything)),
        log=workdir / "sim.log",
    )  # fmt: skip
    keep, edit, gone, new = (device(n, ports[n], COUNTER, poll="200ms") for n in ports)
    path = write_map(workdir / "gw.yaml", broker.port, [keep, edit, gone])
    collector = Collector(broker.port, "acme/#", persistent=True)
    gateway = None
    try:
        for port in ports.values():
            wait_port(port)
        gateway = Process("run", str(path), log=workdir / "gw.log")
        for name in ("keep", "edit", "gone"):
            collector.wait_for(lambda r, n=name: r["device"] == n and r["quality"] == "good")
        until(lambda: _statuses(collector, "keep"), "keep's state published")

        # "edit" gets a point more, and moves to another line.
        edited = device("edit", ports["edit"], COUNTER + MORE, poll="200ms")
        edited = edited.replace("line: line-1", "line: line-2")
        write_map(path, broker.port, [keep, edited, new])
        gateway.proc.send_signal(signal.SIGHUP)

        collector.wait_for(lambda r: r["device"] == "new" and r["quality"] == "good")
        reading = collector.wait_for(lambda r: r["device"] == "edit" and r["point"] == "d")
        assert (reading["value"], reading["unit"], reading["quality"]) == (7, "bar", "good")
        final = until(
            lambda: [p for p in _statuses(collector, "gone") if p["state"] == "removed"],
            "gone's final state",
        )[-1]
        assert final["reason"] == "removed from the device map"
        jsonschema.validate(final, STATUS_SCHEMA)
        (change,) = until(lambda: events(gateway, "map reloaded"), "the reload logged")
        assert change["added"] == ["new"] and change["removed"] == ["gone"]
        assert change["restarted"] == ["edit"] and change["unchanged"] == 1
        # Its state on the old line's topic says where it went; the new one says connected.
        moved = until(
            lambda: [p for p in _statuses(collector, "edit") if p["state"] == "removed"],
            "edit's old state",
        )[-1]
        assert moved["reason"] == "moved to acme/plant-1/assembly/line-2/edit/_status"
        here = f"{TOPIC.replace('line-1', 'line-2')}/edit/_status"
        until(
            lambda: [
                p for t, p, _ in collector.snapshot() if t == here and p["state"] == "connected"
            ],
            "edit's state on its new line",
        )

        # The untouched device went on as if nothing happened: never restarted (its state was
        # published once, at its start), never bad.
        after = len(collector.readings())
        collector.wait_for(lambda r: r["device"] == "keep", since=after)
        assert len(_statuses(collector, "keep")) == 1
        assert all(r["quality"] == "good" for r in collector.readings() if r["device"] == "keep")
        last_gone = max(r["seq"] for r in collector.readings() if r["device"] == "gone")

        # A broken edit: every error is logged where it is, and the running map stays.
        (workdir / "broken.yaml").write_text(
            path.read_text().replace("poll_interval: 200ms", "poll_interval: soon", 1)
            .replace("unit_id: 1", "unit_id: 1\n    colour: red", 1)
        )  # fmt: skip
        path.write_text((workdir / "broken.yaml").read_text())
        expected = subprocess.run(
            [sys.executable, "-m", "gateway", "validate", str(path)],
            capture_output=True, text=True, cwd=ROOT,
        ).stderr.splitlines()[:-1]  # fmt: skip
        assert len(expected) == 2 and all(re.match(rf"{path}:\d+:\d+: ", e) for e in expected)
        gateway.proc.send_signal(signal.SIGHUP)
        wait_event(gateway, "the new device map is not valid: the running one stays")
        logged = [e["event"] for e in log_events(gateway) if e["event"].startswith(f"{path}:")]
        assert logged == expected
        after = len(collector.readings())
        for name in ("keep", "edit", "new"):
            collector.wait_for(lambda r, n=name: r["device"] == n, since=after)

        # A map that validates but cannot be used (a CA file that is not a certificate): the
        # running map stays, on the same broker, with every device.
        (workdir / "ca.pem").write_text("not a certificate\n")
        write_map(path, broker.port, [keep, edited, new], mqtt="ca: ca.pem")
        path.write_text(path.read_text().replace("mqtt://", "mqtts://"))
        gateway.proc.send_signal(signal.SIGHUP)
        refusal = wait_event(gateway, "the new device map cannot be applied: the running one stays")
        assert "TLS" in refusal["reason"]
        after = len(collector.readings())
        for name in ("keep", "edit", "new"):
            collector.wait_for(lambda r, n=name: r["device"] == n, since=after)
        assert len(events(gateway, "map reloaded")) == 1
        assert gateway.proc.poll() is None
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        sim.stop()
    # Everything the gateway read arrived, the removed device's readings ended at its removal.
    seqs = _seqs_have_no_gap(collector)
    assert all(r["seq"] <= last_gone for r in collector.readings() if r["device"] == "gone")
    assert _statuses(collector, "gone")[-1]["state"] == "removed"
    assert seqs[-1] > last_gone
    collector.close()


def test_watch_follows_included_files_and_a_new_broker(workdir: Path, broker: Mosquitto) -> None:
    """The gateway reaches its first broker through a relay; the relay freezes (the broker
    hangs: what was sent is never acknowledged, readings pile up in the buffer), and the map is
    changed to another broker: what was in flight, the backlog and the live readings go there,
    and the two brokers together saw every seq."""
    (workdir / "other").mkdir()
    other = Mosquitto(workdir / "other")
    relay = Proxy(broker.port)
    ports = {"a": free_port(), "b": free_port()}
    devices = {n: device(n, p, COUNTER, poll="200ms") for n, p in ports.items()}
    sim = Process(
        "simulate", str(write_map(workdir / "sim.yaml", broker.port, list(devices.values()))),
        log=workdir / "sim.log",
    )  # fmt: skip
    (workdir / "lines").mkdir()
    (workdir / "lines" / "a.yaml").write_text(f"devices:{devices['a']}\n")
    path = write_map(workdir / "gw.yaml", relay.port, [], sections="include: lines/*.yaml")
    first, second = Collector(broker.port, "acme/#"), Collector(other.port, "acme/#")
    gateway = None
    try:
        for port in ports.values():
            wait_port(port)
        gateway = Process("run", "--watch", str(path), log=workdir / "gw.log")
        first.wait_for(lambda r: r["device"] == "a")

        # A new file in the included folder: its device starts, the other is left alone.
        (workdir / "lines" / "b.yaml").write_text(f"devices:{devices['b']}\n")
        first.wait_for(lambda r: r["device"] == "b")
        (change,) = until(lambda: events(gateway, "map reloaded"), "the reload logged")
        assert change["added"] == ["b"] and change["unchanged"] == 1

        # The first broker hangs: it acknowledges nothing, readings wait in flight and in the
        # buffer.
        relay.freeze()
        wait_buffered(workdir, 300)
        waiting = buffered_seqs(workdir)
        # Another broker in the map: the gateway moves there, the devices are not restarted.
        path.write_text(path.read_text().replace(f":{relay.port}", f":{other.port}"))
        moved = until(lambda: events(gateway, "map reloaded")[1:], "the second reload")[0]
        assert moved["broker"] == "reconnecting" and moved["restarted"] == []
        # Everything that waited (in flight to the hung broker, or in the buffer) gets there.
        until(
            lambda: waiting <= {r["seq"] for c in (first, second) for r in c.readings()},
            "every reading that waited reached a broker",
        )
        replayed = second.wait_for(lambda r: r.get("replayed") is True)
        assert replayed["device"] in ("a", "b")
        after = len(second.readings())
        for name in ("a", "b"):
            second.wait_for(lambda r, n=name: r["device"] == n and "replayed" not in r, since=after)
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        sim.stop()
        relay.cut()
    # Nothing lost in the move: every seq reached one of the brokers, or waits in the buffer
    # for the next start.
    seqs = sorted(
        {r["seq"] for c in (first, second) for r in c.readings()} | buffered_seqs(workdir)
    )
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    for collector in (first, second):
        collector.close()
    other.stop()
