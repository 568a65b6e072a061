"""Benchmark scenarios. Each prints a table and writes bench/results/<scenario>.json."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.modbus.config import ModbusTcpDevice
from adapters.modbus.source import create_sources
from adapters.s7.config import S7Device
from adapters.s7.plan import plan_device
from bench.harness import (
    Broker,
    Counter,
    EventReader,
    PageWatcher,
    Requester,
    Scraper,
    SparkplugCounter,
    cpu_seconds,
    event_bytes_per_s,
    free_port_block,
    gateway_process,
    percentiles,
    rss_mb,
    scratch,
    stop_all,
    threads,
    warm_up,
)
from gateway.config.schema import GatewaySection
from gateway.delivery.encode_json import JsonEncoder, encode_batch, iso_time
from gateway.model import Sample
from gateway.registry import load_config
from gateway.topics import Topics
from tests.mosquitto import free_port, wait_port


def hot_path(_args: Any) -> dict[str, Any]:
    """CPU per value, in process, of the fast lane: one 124-register answer (62 float32) ->
    block decode -> a device-batch payload, and -> 62 per-point payloads (no I/O)."""
    points = [
        {"name": f"p{i}", "table": "holding", "address": 2 * i, "type": "float32", "unit": "degC"}
        for i in range(62)
    ]
    device = ModbusTcpDevice.model_validate(
        {
            "id": "bench",
            "line": "l1",
            "protocol": "modbus-tcp",
            "host": "127.0.0.1",
            "points": points,
            "poll_interval": "1s",
        }
    )
    (source,) = create_sources([device])
    (decoder,) = source._decoders
    gateway = GatewaySection.model_validate(
        {"id": "gw", "hierarchy": {"enterprise": "e", "site": "s", "area": "a"}}
    )
    buffer = _NullBuffer()
    encoder = JsonEncoder(Topics("{device}/{point}", gateway, [device]), buffer)
    rounds = 2000
    answers = [struct.pack(">62f", *[20.0 + i / 8 + n for i in range(62)]) for n in range(7)]
    figures: dict[str, Any] = {}
    for label in ("device_batch", "per_point"):
        started = time.process_time()
        for n in range(rounds):
            samples: list[Sample] = []
            decoder.decode(answers[n % 7], time.time(), samples)
            if label == "device_batch":
                encode_batch(samples, n, iso_time(time.time()))
            else:
                encoder.send(samples)
        cpu = time.process_time() - started
        figures[f"{label}_us_per_value"] = round(cpu / (rounds * 62) * 1e6, 2)
        figures[f"{label}_values_per_cpu_s"] = round(rounds * 62 / cpu)
    return {"values": rounds * 62, **figures}


class _NullBuffer:
    """Takes records and drops them: the hot path without the store."""

    seq = 0

    def take_seq(self) -> int:
        self.seq += 1
        return self.seq

    def add(self, record: Any) -> None:
        pass


def modbus_1000dev(args: Any) -> dict[str, Any]:
    """1,000 devices x 20 points at 1 s, each device on its own TCP connection (the lean
    simulator serves them all): connection scale and memory. Device-batched by default, so
    that the gateway is not saturated and its memory is what the devices cost, not a backlog
    (``--batch point`` for one message per value)."""
    return _lean_modbus(args, args.devices or 1000, 20, args.poll or 1.0, args.batch or "device")


def opcua_latency(args: Any) -> dict[str, Any]:
    """Source -> publish latency of an OPC UA subscription with ``--items`` monitored items.

    A driver changes ``--rate`` values per second round-robin over the items, each stamped with
    its SourceTimestamp; an independent subscriber compares it with the gateway's publish time
    (``gw_ts``, in the payload) and with its own receive time. The figure includes the server's
    wait for the next publishing interval (uniform in 0..interval): the gateway's own part is
    what exceeds it.
    """
    items, interval = args.items, args.publishing_interval
    work = scratch("bench-opcua-")
    broker = Broker()
    port = free_port_block(1)
    lines = [
        "gateway: {id: bench, hierarchy: {enterprise: bench, site: s1, area: a1}}",
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', qos: {args.qos}, "
        f"batch: {args.batch or 'point'}}}",
        "devices:",
        "  - id: ua",
        "    line: l1",
        "    protocol: opcua",
        f"    endpoint: opc.tcp://127.0.0.1:{port}/bench",
        f"    publishing_interval: {interval}s",
        "    timeout: 10s",
        "    points:",
    ]
    lines += [
        f'      - {{name: p{i:05d}, node: "ns=2;i={100000 + i}", data_type: Int32, '
        "sim: {constant: 0}}"
        for i in range(items)
    ]
    path = work / "map.yaml"
    path.write_text("\n".join(lines) + "\n")
    counter = Counter(broker.port, "bench/#", latency=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.opcua_server", str(path), "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    gateway = None
    try:
        assert server.stdout is not None
        for line in server.stdout:  # its log lines, then "ready"
            if line.strip() == b"ready":
                break
        else:
            raise RuntimeError("the OPC UA simulator did not start")
        launched = time.monotonic()
        gateway = gateway_process("run", str(path), log=work / "gateway.log")
        while counter.values < items:  # the initial value of every item
            if gateway.poll() is not None or time.monotonic() - launched > 300:
                raise RuntimeError(f"the gateway did not start: see {work / 'gateway.log'}")
            time.sleep(0.2)
        subscribed_s = time.monotonic() - launched
        time.sleep(args.warmup)
        counter.reset()
        start_cpu, start = cpu_seconds(gateway.pid), time.monotonic()
        server_cpu = cpu_seconds(server.pid)
        time.sleep(args.duration)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(gateway.pid) - start_cpu
        server_cpu = cpu_seconds(server.pid) - server_cpu
        with counter.lock:
            latencies = list(counter.latencies)
        source_to_receive = [r for r, _ in latencies]
        source_to_publish = [p for _, p in latencies]
        p50, p95, p99 = percentiles(source_to_publish, 50, 95, 99)
        r50, r99 = percentiles(source_to_receive, 50, 99)
        return {
            "items": items,
            "changes_per_s": args.rate,
            "publishing_interval_ms": round(interval * 1000),
            "qos": args.qos,
            "all_items_first_value_after_s": round(subscribed_s, 1),
            "values_per_s": round(len(latencies) / elapsed),
            "source_to_publish_ms_p50_p95_p99": [p50, p95, p99],
            "source_to_subscriber_ms_p50_p99": [r50, r99],
            "batch": args.batch or "point",
            "gateway_cpu_per_s": round(cpu / elapsed, 3),
            "values_per_cpu_s": round(len(latencies) / cpu) if cpu else None,
            "simulator_cpu_per_s": round(server_cpu / elapsed, 3),
            "lost_seq": counter.lost(),
        }
    finally:
        counter.stop()
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
        broker.stop()


def _gapped_points(
    rng: random.Random, count: int, deadband: str, moving: float | None = None
) -> list[str]:
    """``clock`` at holding 0, then float32/int16 points in runs of 5-40 with gaps between
    runs: mostly small (1-60 registers, read through), one in ten large (150-400: a new
    request), as real register maps are laid out. ``moving``: the share of points whose value
    changes (a fast ramp); the others are constant. Default: every point drifts slowly."""
    lines = ["      - {name: clock, table: holding, address: 0, type: uint32}"]
    address = {"holding": 10, "input": 0}
    left = count - 1
    while left > 0:
        table = rng.choice(("holding", "holding", "input"))
        for _ in range(min(left, rng.randint(5, 40))):
            kind = rng.choice(("float32", "int16"))
            width = 2 if kind == "float32" else 1
            sim = ""
            if moving is not None:
                sim = (
                    ", sim: {ramp: {min: 0, max: 1000, period: 10s}}"
                    if rng.random() < moving
                    else f", sim: {{constant: {rng.randint(0, 1000)}}}"
                )
            lines.append(
                f"      - {{name: p{count - left}, table: {table}, address: {address[table]}, "
                f"type: {kind}{deadband}{sim}}}"
            )
            address[table] += width
            left -= 1
        address[table] += rng.randint(150, 400) if rng.random() < 0.1 else rng.randint(1, 60)
    return lines


def _contiguous_points(count: int) -> list[str]:
    """``count`` uint16 holding registers from address 0, each counting up."""
    return [
        f"      - {{name: r{i}, table: holding, address: {i}, type: uint16, "
        "sim: {counter: {interval: 100ms}}}"
        for i in range(count)
    ]


def _lean_modbus(
    args: Any,
    devices: int,
    points: int,
    poll: float,
    batch: str,
    deadband: str = "",
    moving: float | None = None,
    contiguous: bool = False,
) -> dict[str, Any]:
    """``devices`` Modbus TCP devices of ``points`` on the lean simulator (its own process),
    each on its own port; values counted and latencies taken by ``mosquitto_sub``.
    ``contiguous``: uint16 holding registers 0..points-1 (one request each poll)."""
    work = scratch("bench-modbus-")
    broker = Broker()
    base = free_port_block(devices)
    http_port = free_port()
    rng = random.Random(7)
    lines = [
        "gateway: {id: bench, hierarchy: {enterprise: bench, site: s1, area: a1}}",
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', qos: {args.qos}, batch: {batch}, "
        f"format: {args.format}}}",
        *(["sparkplug: {group_id: bench}"] if args.format == "sparkplug" else []),
        f"buffer: {{mode: {args.buffer}}}",
        "http: false" if args.http == "off" else f"http: {{listen: '127.0.0.1:{http_port}'}}",
        "devices:",
    ]
    for d in range(devices):
        lines += [
            f"  - id: dev{d:03d}",
            "    line: l1",
            "    protocol: modbus-tcp",
            "    host: 127.0.0.1",
            f"    port: {base + d}",
            f"    poll_interval: {poll}s",
            "    timeout: 2s",
            "    points:",
            *(
                _contiguous_points(points)
                if contiguous
                else _gapped_points(rng, points, deadband, moving)
            ),
        ]
    path = work / "map.yaml"
    path.write_text("\n".join(lines) + "\n")
    # Per-point messages are few enough to also time each one from its read (ts) to receipt.
    if args.format == "sparkplug":
        counter: Counter = SparkplugCounter(broker.port, "spBv1.0/#", clock=True)
    else:
        counter = Counter(broker.port, "bench/#", latency=batch == "point", clock=True)
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulators.lean_modbus", str(path), "--tick", "100ms"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    gateway = None
    try:
        gateway, first_value_s = warm_up(path, counter, (base, base + devices - 1), args.warmup)
        start_cpu, start = cpu_seconds(gateway.pid), time.monotonic()
        sim_cpu = cpu_seconds(simulator.pid)
        rss = [rss_mb(gateway.pid)]
        scraper = Scraper(http_port) if args.http == "scrape" else None
        page = PageWatcher(http_port) if args.http == "page" else None
        reader = EventReader(http_port, "dev000") if args.http == "events" else None
        while time.monotonic() - start < args.duration:
            time.sleep(5)
            rss.append(rss_mb(gateway.pid))
        if scraper is not None:
            scraper.stop()
        threads_end = threads(gateway.pid)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(gateway.pid) - start_cpu
        if reader is not None:
            reader.stop()
        with counter.lock:
            values, messages, changes = counter.values, counter.messages, list(counter.changes)
            timed = list(counter.latencies)
        shown = page.shown() if page is not None else None
        if page is not None:
            page.stop()
        events = event_bytes_per_s(http_port, "dev000") if page is not None else None
        p50, p99, worst = percentiles(changes, 50, 99, 100)
        read_to_receive = percentiles([r for r, _ in timed], 50, 99, 100) if timed else None
        # read -> gw_ts (the publisher took it in): the part before the buffer and the broker
        read_to_send = percentiles([g for _, g in timed], 50, 99, 100) if timed else None
        return {
            "devices": devices,
            "points": devices * points,
            "poll_interval_s": poll,
            "batch": batch,
            "qos": args.qos,
            "buffer": args.buffer,
            "first_value_after_s": round(first_value_s, 1),
            "expected_values_per_s": round(devices * points / poll),
            "values_per_s": round(values / elapsed),
            "messages_per_s": round(messages / elapsed),
            "gateway_cpu_per_s": round(cpu / elapsed, 3),
            "values_per_cpu_s": round(values / cpu) if cpu else None,
            "change_to_receive_ms_p50_p99_max": [p50, p99, worst],
            "read_to_receive_ms_p50_p99_max": read_to_receive,
            "read_to_send_ms_p50_p99_max": read_to_send,
            "rss_mb_start_end_max": [round(rss[0], 1), round(rss[-1], 1), round(max(rss), 1)],
            "rss_mb_every_5s": [round(r, 1) for r in rss],
            "gateway_threads": threads_end,
            "simulator_cpu_per_s": round((cpu_seconds(simulator.pid) - sim_cpu) / elapsed, 3),
            "lost_seq": counter.lost(),
            "duplicate_seq": counter.duplicates,
            "http": args.http,
            "format": args.format,
            "metrics_scrapes_bytes": [scraper.scrapes, scraper.bytes] if scraper else None,
            "page_bytes": page.page_bytes if page else None,
            "page_points_shown": shown,
            "page_event_bytes_per_s": round(events) if events is not None else None,
            "event_reader_bytes_per_s": round(reader.bytes / elapsed) if reader else None,
        }
    finally:
        stop_all(counter, gateway, [simulator], broker)


def modbus_100k(args: Any) -> dict[str, Any]:
    """100 devices x 1,000 points at 1 s: 100,000 values/s, device-batched, QoS 1, disk buffer."""
    return _lean_modbus(args, args.devices or 100, 1000, args.poll or 1.0, args.batch or "device")


def modbus_fast(args: Any) -> dict[str, Any]:
    """10 devices x 200 points at 100 ms, per-point messages, deadband 0: 20,000 values/s."""
    return _lean_modbus(
        args, args.devices or 10, 200, args.poll or 0.1, args.batch or "point", ", deadband: 0"
    )


def modbus_small(args: Any) -> dict[str, Any]:
    """A small plant: 10 devices x 100 uint16 holding registers at 100 ms, device batches,
    QoS 1: 10,000 values/s in 100 messages/s, where the fixed cost per poll and per message
    shows."""
    return _lean_modbus(
        args, args.devices or 10, 100, args.poll or 0.1, args.batch or "device", contiguous=True
    )


def opcua_10k(args: Any) -> dict[str, Any]:
    """``opcua-latency`` with 10,000 monitored items, 1,000 changing every 100 ms (10,000
    notifications/s) unless ``--rate`` says otherwise."""
    args.items = 10_000
    if args.rate == 1000.0:  # the option's default
        args.rate = 10_000.0
    return opcua_latency(args)


def report_by_exception(args: Any) -> dict[str, Any]:
    """50 devices x 1,000 points at 1 s, 2 % of them changing, deadband 0.5, per-point messages:
    what matters is the CPU spent reading and discarding the 98 % that did not change."""
    return _lean_modbus(
        args,
        args.devices or 50,
        1000,
        args.poll or 1.0,
        args.batch or "point",
        ", deadband: 0.5",
        moving=0.02,
    )


def command_latency(args: Any) -> dict[str, Any]:
    """Command -> result round trip, as an application sees it: publish on ``.../set``, wait for
    ``.../set/result`` (QoS 1 both ways), one command at a time, while the devices are polled.

    Each command is a full safe write: read the old value, write, read back, compare, publish
    the new reading, answer. Modbus on the pymodbus simulator (100 ms polls of 50 registers),
    OPC UA on the asyncua simulator (subscribed, 100 ms). ``--commands`` per device.
    """
    work = scratch("bench-commands-")
    broker = Broker(nodelay=args.broker_nodelay == "on")
    modbus_port = free_port_block(2)
    opcua_port = modbus_port + 1
    registers = "\n".join(
        f"      - {{name: r{i}, table: holding, address: {10 + i}, type: uint16, sim: {{ramp: "
        f"{{min: 0, max: 1000, period: 10s}}}}}}"
        for i in range(50)
    )
    path = work / "map.yaml"
    path.write_text(
        f"""gateway: {{id: bench, hierarchy: {{enterprise: bench, site: s1, area: a1}}}}
mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', version: 5}}
buffer: {{mode: memory}}
devices:
  - id: plc
    line: l1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: {modbus_port}
    poll_interval: 100ms
    write_rate_limit: 1000
    points:
      - {{name: setpoint, table: holding, address: 0, type: float32, scale: 0.1, writable: true,
          sim: {{constant: 0}}}}
{registers}
  - id: mixer
    line: l1
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:{opcua_port}/bench
    publishing_interval: 100ms
    write_rate_limit: 1000
    points:
      - {{name: speed, node: "ns=2;s=Mixer.Speed", data_type: Double, writable: true,
          sim: {{constant: 0}}}}
      - {{name: load, node: "ns=2;s=Mixer.Load", data_type: Double,
          sim: {{sine: {{max: 5, period: 2s}}}}}}
"""
    )
    simulator = gateway_process("simulate", str(path), log=work / "simulators.log")
    gateway = None
    requester = None
    try:
        wait_port(modbus_port, timeout=60)
        wait_port(opcua_port, timeout=60)
        gateway = gateway_process("run", str(path), log=work / "gateway.log")
        requester = Requester(broker.port, "bench/s1/a1/l1/+/+/set/result")
        time.sleep(args.warmup)
        # The polls' and the subscription's own CPU, subtracted from the commands' figure.
        idle_cpu, idle_start = cpu_seconds(gateway.pid), time.monotonic()
        time.sleep(5)
        idle = (cpu_seconds(gateway.pid) - idle_cpu) / (time.monotonic() - idle_start)
        result: dict[str, Any] = {
            "commands_per_device": args.commands,
            "broker_set_tcp_nodelay": args.broker_nodelay,
        }
        for device, point in (("plc", "setpoint"), ("mixer", "speed")):
            topic = f"bench/s1/a1/l1/{device}/{point}/set"
            start_cpu, start = cpu_seconds(gateway.pid), time.monotonic()
            times = [requester.command(topic, round(n * 0.5, 1)) for n in range(args.commands)]
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(gateway.pid) - start_cpu - idle * elapsed
            p50, p99, worst = percentiles(times, 50, 99, 100)
            result[f"{device}_ms_p50_p99_max"] = [p50, p99, worst]
            result[f"{device}_gateway_cpu_ms_per_command"] = round(1000 * cpu / len(times), 2)
        result["gateway_cpu_idle_per_s"] = round(idle, 3)
        return result
    finally:
        if requester is not None:
            requester.stop()
        for process in (gateway, simulator):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        broker.stop()


def buffer_cost(args: Any) -> dict[str, Any]:
    """The same Modbus workload twice: memory buffer, then the durable (disk) buffer."""
    results = {}
    for mode in ("memory", "disk"):
        args.buffer = mode
        results[mode] = modbus_1000dev(args)
    memory, disk = results["memory"], results["disk"]
    return {
        "devices": args.devices,
        "poll_interval_s": args.poll,
        "expected_values_per_s": memory["expected_values_per_s"],
        "memory_values_per_s": memory["values_per_s"],
        "disk_values_per_s": disk["values_per_s"],
        "memory_values_per_cpu_s": memory["values_per_cpu_s"],
        "disk_values_per_cpu_s": disk["values_per_cpu_s"],
        "throughput_cost_pct": round(100 * (1 - disk["values_per_s"] / memory["values_per_s"]), 1),
        "cpu_cost_pct": round(100 * (1 - disk["values_per_cpu_s"] / memory["values_per_cpu_s"]), 1),
        "lost_seq": [memory["lost_seq"], disk["lost_seq"]],
    }


def s7_10k(args: Any) -> dict[str, Any]:
    """10 S7 PLCs (python-snap7's server, ``factory-gateway simulate``) x 1,000 addresses at
    1 s: REALs, INTs and BOOLs in three data blocks, device batches: 10,000 values/s."""
    devices = args.devices or 10
    poll = args.poll or 1.0
    work = scratch("bench-s7-")
    broker = Broker()
    base = free_port_block(devices)
    lines = [
        "gateway: {id: bench, hierarchy: {enterprise: bench, site: s1, area: a1}}",
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', qos: {args.qos}, batch: device}}",
        f"buffer: {{mode: {args.buffer}}}",
        "http: false",
        "devices:",
    ]
    for d in range(devices):
        lines += [
            f"  - id: plc{d:02d}", "    line: l1", "    protocol: s7", "    host: 127.0.0.1",
            f"    port: {base + d}", f"    poll_interval: {poll}s", "    timeout: 2s",
            "    points:",
        ]  # fmt: skip
        for i in range(400):  # REALs, every 5th moving
            sim = (
                "{sine: {min: 0, max: 100, period: 20s}}" if i % 5 == 0 else f"{{constant: {i}.5}}"
            )
            lines.append(f"      - {{name: r{i}, address: DB1.DBD{4 * i}, type: REAL, sim: {sim}}}")
        for i in range(400):  # INTs with gaps of a word
            sim = "{counter: {interval: 1s}}" if i % 5 == 0 else f"{{constant: {i}}}"
            lines.append(f"      - {{name: n{i}, address: DB2.DBW{4 * i}, type: INT, sim: {sim}}}")
        for i in range(200):  # BOOLs, 8 to a byte
            address = f"DB3.DBX{i // 8}.{i % 8}"
            lines.append(
                f"      - {{name: b{i}, address: {address}, sim: {{toggle: {{period: 10s}}}}}}"
            )
    path = work / "map.yaml"
    path.write_text("\n".join(lines) + "\n")
    first = load_config([path]).devices[0]
    assert isinstance(first, S7Device)
    counter = Counter(broker.port, "bench/#", clock=True)
    simulator = gateway_process("simulate", str(path), log=work / "simulator.log")
    gateway = None
    try:
        gateway, first_value_s = warm_up(path, counter, (base, base + devices - 1), args.warmup)
        start_cpu, start = cpu_seconds(gateway.pid), time.monotonic()
        sim_cpu = cpu_seconds(simulator.pid)
        time.sleep(args.duration)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(gateway.pid) - start_cpu
        with counter.lock:
            values, messages = counter.values, counter.messages
        return {
            "devices": devices,
            "points": devices * 1000,
            "poll_interval_s": poll,
            "requests_per_poll_per_plc": sum(len(g.requests) for g in plan_device(first)),
            "first_value_after_s": round(first_value_s, 1),
            "expected_values_per_s": round(devices * 1000 / poll),
            "values_per_s": round(values / elapsed),
            "messages_per_s": round(messages / elapsed),
            "gateway_cpu_per_s": round(cpu / elapsed, 3),
            "values_per_cpu_s": round(values / cpu) if cpu else None,
            "rss_mb": round(rss_mb(gateway.pid), 1),
            "simulator_cpu_per_s": round((cpu_seconds(simulator.pid) - sim_cpu) / elapsed, 3),
            "lost_seq": counter.lost(),
            "duplicate_seq": counter.duplicates,
        }
    finally:
        stop_all(counter, gateway, [simulator], broker)


SCENARIOS = {
    "buffer-cost": buffer_cost,
    "command-latency": command_latency,
    "hot-path": hot_path,
    "modbus-100k": modbus_100k,
    "modbus-fast": modbus_fast,
    "modbus-small": modbus_small,
    "modbus-1000dev": modbus_1000dev,
    "opcua-10k": opcua_10k,
    "opcua-latency": opcua_latency,
    "report-by-exception": report_by_exception,
    "s7-10k": s7_10k,
}
