"""Sparkplug B from a running gateway, decoded by pysparkplug (an implementation nobody here
wrote): births, data by alias, seq, bdSeq across a restart and a kill -9, device deaths.
Statement ids of the Sparkplug 3.0 specification in brackets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pysparkplug as ps
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import Collector, Mosquitto, Process, Proxy, free_port, until, wait_port
from tests.integration.line import events, wait_buffered, wait_event
from tests.integration.plant import device, write_map

POINTS = """
      - {name: count, table: holding, address: 0, type: uint16, sim: {counter: {interval: 100ms}}}
      - {name: temp, table: holding, address: 1, type: float32, unit: degC, sim: {constant: 21.5}}
      - {name: pressure, table: holding, address: 3, type: int16, scale: 0.1, unit: bar,
         sim: {constant: -12.3}}
      - {name: label, table: holding, address: 4, type: string, length: 4, sim: {constant: PRESS-A}}
      - {name: running, table: coil, address: 0, sim: {constant: true}}"""
EXPECTED = {
    "temp": (21.5, ps.DataType.FLOAT),
    "pressure": (-12.3, ps.DataType.DOUBLE),
    "label": ("PRESS-A", ps.DataType.STRING),
    "running": (True, ps.DataType.BOOLEAN),
}
GROUP, NODE = "plant-1", "gw-test"
PREFIX = f"spBv1.0/{GROUP}"


class Host:
    """What a Sparkplug host sees: every message of the edge node, decoded in arrival order."""

    def __init__(self, port: int) -> None:
        self.collector = Collector(port, f"{PREFIX}/#")

    def messages(self) -> list[tuple[str, str | None, Any]]:
        """(message type, device or None, decoded payload), DATA resolved through the latest
        birth of its device [tck-id-payloads-alias-birth-requirement]."""
        births: dict[str, ps.DBirth] = {}
        out: list[tuple[str, str | None, Any]] = []
        for topic, raw, _ in self.collector.snapshot():
            parts = topic.split("/")
            kind, dev = parts[2], parts[4] if len(parts) > 4 else None
            assert isinstance(raw, bytes), topic
            if kind == "NBIRTH":
                payload: Any = ps.NBirth.decode(raw)
            elif kind == "NDEATH":
                payload = ps.NDeath.decode(raw)
            elif kind == "DBIRTH":
                payload = births[str(dev)] = ps.DBirth.decode(raw)
            elif kind == "DDATA":
                payload = ps.DData.decode(raw, birth=births[str(dev)])
            elif kind == "DDEATH":
                payload = ps.DDeath.decode(raw)
            else:
                continue
            out.append((kind, dev, payload))
        return out

    def wait(
        self, kind: str, dev: str | None = None, after: int = 0, live: bool = False, **match: Any
    ) -> int:
        """The index of the first message of ``kind`` (for ``dev``; ``live``: with no
        historical metric) from index ``after`` whose metrics have the values ``match`` says."""

        def found() -> int | None:
            for i, (k, d, payload) in enumerate(self.messages()):
                if i < after or k != kind or (dev is not None and d != dev):
                    continue
                if live and any(m.is_historical for m in payload.metrics):
                    continue
                if all(_value(payload, n) == v for n, v in match.items()):
                    return i + 1  # 1-based: never falsy
            return None

        return until(found, f"{kind} {dev or ''} {match}") - 1

    def get(self, kind: str, dev: str | None = None, after: int = 0, **match: Any) -> Any:
        """The payload of the message ``wait`` finds."""
        at = self.wait(kind, dev, after, **match)
        return self.messages()[at][2]

    def close(self) -> None:
        self.collector.close()


def _value(payload: Any, name: str) -> Any:
    return next((m.value for m in payload.metrics if m.name == name), None)


def _seqs_in_order(messages: list[tuple[str, str | None, Any]]) -> None:
    """Every message but NDEATH has a seq one more than the one before, 255 wrapping to 0;
    NBIRTH starts again from 0 [tck-id-payloads-sequence-num-incrementing]."""
    previous: int | None = None
    for kind, dev, payload in messages:
        if kind == "NDEATH":
            previous = None  # the next session starts with its NBIRTH
            continue
        assert previous is not None or kind == "NBIRTH", f"{kind} {dev} before an NBIRTH"
        if kind == "NBIRTH":
            assert payload.seq == 0  # [tck-id-payloads-sequence-num-zero-nbirth]
        elif previous is not None:
            assert payload.seq == (previous + 1) % 256, (kind, dev, payload.seq, previous)
        previous = payload.seq


def _scada(port: int) -> mqtt.Client:
    """A host application's client, to send what a SCADA sends (NCMD, DCMD, STATE)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"scada-{free_port()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _close(client: mqtt.Client) -> None:
    client.loop_stop()
    client.disconnect()


def _plant(
    workdir: Path, broker: Mosquitto, points: str = POINTS, sparkplug: str = ""
) -> tuple[int, Process, Path]:
    """A simulated press (its port and simulator) and a gateway map for it in Sparkplug mode;
    ``sparkplug``: more keys of the sparkplug section."""
    port = free_port()
    plc = device("press", port, points, poll="200ms")
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", broker.port, [plc])),
                  log=workdir / "sim.log")  # fmt: skip
    wait_port(port)
    section = f"sparkplug: {{group_id: {GROUP}{sparkplug}}}"
    path = write_map(workdir / "gw.yaml", broker.port, [plc], mqtt="format: sparkplug",
                     sections=section)  # fmt: skip
    return port, sim, path


def test_births_data_by_alias_and_seq_from_a_running_gateway(
    workdir: Path, broker: Mosquitto
) -> None:
    _, sim, path = _plant(workdir, broker)
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        # NBIRTH: seq 0, bdSeq 0 on a first start, Node Control/Rebirth false.
        nbirth = host.get("NBIRTH")
        assert _value(nbirth, "bdSeq") == 0  # [tck-id-topics-nbirth-bdseq-increment]
        assert _value(nbirth, "Node Control/Rebirth") is False
        assert _value(nbirth, "Properties/Software").startswith("factory-gateway ")
        # The device's birth once it answered: every metric, with its current value.
        at = host.wait("DBIRTH", "press", temp=21.5)
        birth = host.messages()[at][2]
        metrics = {m.name: m for m in birth.metrics}
        assert set(metrics) == {"count", "temp", "pressure", "label", "running"}
        assert len({m.alias for m in birth.metrics}) == 5
        for name, (value, datatype) in EXPECTED.items():
            assert (metrics[name].value, metrics[name].datatype) == (value, datatype), name
        assert metrics["count"].datatype == ps.DataType.UINT16
        # Data by alias only, resolved through the birth; the counter moves.
        counts: list[int] = []
        for _ in range(3):
            at = host.wait("DDATA", "press", after=at + 1)
            data = host.messages()[at][2]
            assert all(m.alias is not None for m in data.metrics)
            count = _value(data, "count")
            if count is not None:
                counts.append(count)
        assert counts and counts == sorted(counts)
    finally:
        assert gateway.stop() == 0
        sim.stop()
    # A clean stop: NDEATH with the NBIRTH's bdSeq [tck-id-payloads-ndeath-bdseq].
    assert host.get("NDEATH").bd_seq_metric.value == 0
    _seqs_in_order(host.messages())
    host.close()


def test_bd_seq_pairs_deaths_with_births_across_a_restart_and_a_kill(
    workdir: Path, broker: Mosquitto
) -> None:
    _, sim, path = _plant(workdir, broker)
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw-1.log")
    try:
        host.wait("NBIRTH", bdSeq=0)
        assert gateway.stop() == 0  # NDEATH 0, sent by the gateway
        deaths = host.wait("NDEATH")

        gateway = Process("run", str(path), log=workdir / "gw-2.log")
        host.wait("NBIRTH", after=deaths, bdSeq=1)  # the next CONNECT, the next bdSeq
        host.wait("DDATA", "press", after=deaths)
        gateway.proc.kill()  # kill -9: the broker sends the will
        gateway.proc.wait()
        at = host.wait("NDEATH", after=deaths + 1)
        assert host.get("NDEATH", after=deaths + 1).bd_seq_metric.value == 1

        gateway = Process("run", str(path), log=workdir / "gw-3.log")
        host.wait("NBIRTH", after=at, bdSeq=2)
        assert gateway.stop() == 0
    finally:
        gateway.stop()  # already stopped, unless a wait above failed
        sim.stop()
    host.close()


def test_a_device_outage_is_a_ddeath_and_its_return_a_dbirth(
    workdir: Path, broker: Mosquitto
) -> None:
    port, sim, path = _plant(workdir, broker)
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        up = host.wait("DBIRTH", "press", temp=21.5)
        sim.kill()
        down = host.wait("DDEATH", "press", after=up)  # [tck-id-operational-behavior-device-ddeath]
        sim = Process("simulate", str(workdir / "sim.yaml"), log=workdir / "sim-2.log")
        wait_port(port)
        back = host.wait("DBIRTH", "press", after=down, temp=21.5)
        host.wait("DDATA", "press", after=back)
        # No data for the device between its death and its birth.
        between = host.messages()[down + 1 : back]
        assert not [m for m in between if m[0] == "DDATA" and m[1] == "press"]
    finally:
        assert gateway.stop() == 0
        sim.stop()
    _seqs_in_order(host.messages())
    host.close()


def test_a_host_asks_for_a_rebirth_and_gets_every_birth_again(
    workdir: Path, broker: Mosquitto
) -> None:
    _, sim, path = _plant(workdir, broker)
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    commander = _scada(broker.port)
    try:
        up = host.wait("DBIRTH", "press", temp=21.5)
        host.wait("DDATA", "press", after=up)
        # NCMD with Node Control/Rebirth true, as a host encodes it (pysparkplug).
        now = ps.get_current_timestamp()
        rebirth = ps.Metric(
            timestamp=now, name="Node Control/Rebirth", datatype=ps.DataType.BOOLEAN, value=True
        )
        request = ps.NCmd(timestamp=now, metrics=(rebirth,))
        at = len(host.messages())
        commander.publish(f"{PREFIX}/NCMD/{NODE}", request.encode(include_dtypes=True), qos=1)
        again = host.wait("NBIRTH", after=at)
        # The same session: the same bdSeq [tck-id-operational-behavior-data-commands-rebirth-
        # action-3], seq from 0, and the device's birth with its current values.
        assert host.messages()[again][2].seq == 0
        assert _value(host.messages()[again][2], "bdSeq") == 0
        host.wait("DBIRTH", "press", after=again, temp=21.5)
        # A payload that is not Sparkplug is ignored, and the gateway goes on.
        commander.publish(f"{PREFIX}/NCMD/{NODE}", b"not protobuf", qos=1)
        last = len(host.messages())
        host.wait("DDATA", "press", after=last)
        assert not [m for m in host.messages()[last:] if m[0] == "NBIRTH"]
    finally:
        _close(commander)
        assert gateway.stop() == 0
        sim.stop()
    _seqs_in_order(host.messages())
    host.close()


def test_with_a_primary_host_data_waits_for_it_and_nothing_is_lost(
    workdir: Path, broker: Mosquitto
) -> None:
    """Host offline: no birth, readings held in the buffer. Host online: births, then what
    waited (historical, in order), then live data. Host offline again: the gateway leaves the
    server (the broker publishes its NDEATH) and waits again."""
    host_id = f"scada-{free_port()}"
    _, sim, path = _plant(workdir, broker, sparkplug=f", primary_host_id: {host_id}")
    scada = _scada(broker.port)

    def state(online: bool, timestamp: int) -> None:
        body = json.dumps({"online": online, "timestamp": timestamp})
        scada.publish(f"spBv1.0/STATE/{host_id}", body, qos=1, retain=True).wait_for_publish()

    state(False, 1000)
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        wait_event(gateway, "waiting for the primary host to be online")
        held = wait_buffered(workdir, 10)  # ten polls' worth of DDATA wait on disk
        assert not [m for m in host.messages() if m[0] != "NDEATH"]  # nothing was published

        state(True, 2000)
        born = host.wait("NBIRTH")
        live = host.wait("DDATA", "press", after=born, live=True)
        after_birth = host.messages()[born:live]
        historical = [m[2] for m in after_birth if m[0] == "DDATA"]
        # Every DDATA that waited; the device's DBIRTH that waited with them is replaced by
        # this session's births.
        assert len(historical) >= held - 1
        assert all(metric.is_historical for p in historical for metric in p.metrics)
        counts = [_value(p, "count") for p in historical if _value(p, "count") is not None]
        assert counts == sorted(counts)  # in order
        _seqs_in_order(host.messages())

        state(False, 3000)
        death = host.wait("NDEATH", after=live)  # the will: the gateway left the server
        assert host.messages()[death][2].bd_seq_metric.value == 0
        wait_event(gateway, "the primary host is offline: leaving the server")
        state(True, 4000)
        host.wait("NBIRTH", after=death, bdSeq=1)
    finally:
        scada.publish(f"spBv1.0/STATE/{host_id}", b"", retain=True).wait_for_publish()
        _close(scada)
        assert gateway.stop() == 0
        sim.stop()
    host.close()


def test_what_a_hung_connection_swallowed_is_sent_again_as_history(
    workdir: Path, broker: Mosquitto
) -> None:
    """Sparkplug data goes at QoS 0: written is not delivered. The broker hangs (a relay
    that passes nothing), then the connection breaks: everything written meanwhile must
    reach the host after the next births, as history. Counter values show any gap."""
    port, sim, _ = _plant(workdir, broker)
    relay = Proxy(broker.port)
    plc = device("press", port, POINTS, poll="200ms")
    path = write_map(workdir / "gw.yaml", relay.port, [plc], mqtt="format: sparkplug",
                     sections=f"sparkplug: {{group_id: {GROUP}}}")  # fmt: skip
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        host.wait("DDATA", "press")
        relay.freeze()
        wait_buffered(workdir, 15)  # written into the hung connection, not confirmed
        relay.cut()
        relay.restore()
        reborn = host.wait("NBIRTH", after=1)
        host.wait("DDATA", "press", after=reborn, live=True)
    finally:
        relay.cut()
        assert gateway.stop() == 0
        sim.stop()
    counts = sorted(
        {m.value for kind, _, p in host.messages() if kind in ("DBIRTH", "DDATA")
         for m in p.metrics if m.name == "count" and m.value is not None}
    )  # fmt: skip
    # The counter moves by one every 100 ms, polled every 200 ms: steps of about 2.
    gaps = [(a, b) for a, b in itertools.pairwise(counts) if b - a > 5]
    assert not gaps, gaps
    assert counts[-1] - counts[0] > 20  # the freeze is in the range
    _seqs_in_order(host.messages())
    host.close()


def test_a_backlog_from_before_a_map_edit_resolves_to_the_same_metrics(
    workdir: Path, broker: Mosquitto
) -> None:
    """DDATA held on disk name their metrics by alias only: after a restart with a point
    inserted first and one removed, the new births must still resolve them to the metrics
    they were read from (the aliases are kept beside bdSeq)."""
    host_id = f"scada-{free_port()}"
    port, sim, path = _plant(workdir, broker, sparkplug=f", primary_host_id: {host_id}")
    scada = _scada(broker.port)
    topic = f"spBv1.0/STATE/{host_id}"
    scada.publish(topic, json.dumps({"online": False, "timestamp": 1}), 1, True).wait_for_publish()
    host = Host(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw-1.log")
    try:
        wait_buffered(workdir, 5)  # the first DDATA has every metric, the next the counter
        assert gateway.stop() == 0

        # The next map: a point inserted first (a word of the label), the label removed.
        raw = "\n      - {name: raw, table: holding, address: 4, type: uint16}"
        kept = "\n".join(line for line in POINTS.splitlines() if "label" not in line)
        edited = device("press", port, raw + kept)
        section = f"sparkplug: {{group_id: {GROUP}, primary_host_id: {host_id}}}"
        write_map(path, broker.port, [edited], mqtt="format: sparkplug", sections=section)
        gateway = Process("run", str(path), log=workdir / "gw-2.log")
        wait_event(gateway, "waiting for the primary host to be online")
        online = json.dumps({"online": True, "timestamp": 2})
        scada.publish(topic, online, 1, True).wait_for_publish()
        born = host.wait("NBIRTH")
        live = host.wait("DDATA", "press", after=born, live=True)
        birth = host.get("DBIRTH", "press", after=born)
        assert {m.name for m in birth.metrics} == {"raw", "count", "temp", "pressure", "running"}
        # The backlog's first DDATA, through the new birth: each value under its own name.
        first = next(m[2] for m in host.messages()[born:live] if m[0] == "DDATA")
        values = {m.name: m.value for m in first.metrics}
        assert all(m.is_historical for m in first.metrics)
        assert {k: values.get(k) for k in ("temp", "pressure", "running")} == {
            "temp": 21.5,
            "pressure": -12.3,
            "running": True,
        }
        assert isinstance(values["count"], int)
        assert "raw" not in values  # it was not read then; the label's value is left out
    finally:
        scada.publish(topic, b"", retain=True).wait_for_publish()
        _close(scada)
        assert gateway.stop() == 0
        sim.stop()
    _seqs_in_order(host.messages()[born:])
    host.close()


SETPOINT = """
      - {name: setpoint, table: holding, address: 10, type: float32, unit: degC, writable: true,
         min: 0, max: 300, sim: {constant: 180}}"""


def test_dcmd_writes_through_the_command_checks_and_the_value_comes_back_as_ddata(
    workdir: Path, broker: Mosquitto
) -> None:
    _, sim, path = _plant(workdir, broker, POINTS + SETPOINT)
    host = Host(broker.port)
    scada = _scada(broker.port)
    gateway = Process("run", str(path), log=workdir / "gw.log")

    def dcmd(**metric: Any) -> None:
        now = ps.get_current_timestamp()
        command = ps.DCmd(timestamp=now, metrics=(ps.Metric(timestamp=now, **metric),))
        topic = f"{PREFIX}/DCMD/{NODE}/press"
        scada.publish(topic, command.encode(include_dtypes=True), qos=1).wait_for_publish()

    try:
        at = host.wait("DBIRTH", "press", setpoint=180.0)
        alias = next(m.alias for m in host.messages()[at][2].metrics if m.name == "setpoint")
        # By name: written, read back, published as DDATA.
        dcmd(name="setpoint", datatype=ps.DataType.FLOAT, value=185.5)
        at = host.wait("DDATA", "press", after=at, setpoint=185.5)
        # By alias, as hosts send them after a birth.
        dcmd(name=None, alias=alias, datatype=ps.DataType.FLOAT, value=190.0)
        at = host.wait("DDATA", "press", after=at, setpoint=190.0)
        # Refused by the same checks as any command: above max, not writable.
        dcmd(name="setpoint", datatype=ps.DataType.FLOAT, value=500.0)
        dcmd(name="count", datatype=ps.DataType.UINT16, value=7)

        def refusals() -> list[dict[str, Any]] | None:
            found = [e for e in events(gateway, "command") if e["outcome"] == "refused"]
            return found if len(found) == 2 else None

        refused = until(refusals, "two refusals in the audit log")
        assert [e["point"] for e in refused] == ["setpoint", "count"]
        assert "300" in refused[0]["error"] and refused[1]["error"] == "not writable"
        host.wait("DDATA", "press", after=at)  # data goes on
        assert all(
            _value(m[2], "setpoint") != 500.0 for m in host.messages()[at:] if m[0] == "DDATA"
        )
        written = [e for e in events(gateway, "command") if e["outcome"] == "written"]
        assert [(e["new"], e["read_back"]) for e in written] == [(185.5, 185.5), (190.0, 190.0)]
    finally:
        _close(scada)
        assert gateway.stop() == 0
        sim.stop()
    _seqs_in_order(host.messages())
    host.close()
