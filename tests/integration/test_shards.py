"""One plant map, three gateways: each runs its shard (``run --only shard=NAME``) as a gateway
of its own, and a subscriber gets every device's readings exactly once."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tests.helpers import Collector, Mosquitto, Process, free_port, until, wait_port
from tests.integration.plant import device, write_map

POINTS = (
    "\n      - {name: count, table: holding, address: 0, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
    "\n      - {name: speed, table: holding, address: 1, type: int16, sim: {constant: 42}}"
)
SHARDS = {"plc-x": "a", "plc-y": "b", "plc-z": "c"}


def test_three_shards_of_one_map_deliver_every_reading_once(
    workdir: Path, broker: Mosquitto
) -> None:
    ports = {name: free_port() for name in SHARDS}
    devices = [
        device(name, port, POINTS).replace(
            "    line: line-1\n", f"    line: line-1\n    shard: {SHARDS[name]}\n"
        )
        for name, port in ports.items()
    ]
    plant = write_map(workdir / "plant.yaml", broker.port, devices)
    simulator = Process("simulate", str(plant), log=workdir / "sim.log")
    collector = Collector(broker.port, "acme/#")
    gateways: list[Process] = []
    try:
        for port in ports.values():
            wait_port(port)
        gateways = [
            Process("run", str(plant), "--only", f"shard={shard}", log=workdir / f"gw-{shard}.log")
            for shard in SHARDS.values()
        ]

        def enough() -> bool:
            per_device = Counter(r["device"] for r in collector.readings())
            return all(per_device[name] >= 30 for name in SHARDS)

        until(enough, "30 readings of every device", 30)
        for gateway in gateways:
            assert gateway.stop() == 0
        until(
            lambda: (
                len(_states(collector.snapshot())) == 3
                and all(s[-1] == "offline" for s in _states(collector.snapshot()).values())
            ),
            "each shard's gateway offline",
            15,
        )
        readings = collector.readings()
        states = _states(collector.snapshot())
    finally:
        for gateway in gateways:
            gateway.stop()
        simulator.stop()
        collector.close()

    # Every device, every point, from its shard's gateway.
    assert {(r["device"], r["point"]) for r in readings} == {
        (name, point) for name in SHARDS for point in ("count", "speed")
    }
    # Exactly once: no reading twice, and each shard's seq without a gap or a repeat.
    taken = Counter((r["device"], r["point"], r["ts"]) for r in readings)
    assert max(taken.values()) == 1, [k for k, n in taken.items() if n > 1][:5]
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in readings:
        seqs[SHARDS[r["device"]]].append(r["seq"])
    for shard, numbers in seqs.items():
        # (two gateways publishing one device would repeat seqs: each counts from its start)
        assert sorted(numbers) == list(range(min(numbers), max(numbers) + 1)), shard
    # Three gateways of their own: a status topic each, each online then offline.
    assert set(states) == {"gw-test-a", "gw-test-b", "gw-test-c"}
    for gateway_id, seen in states.items():
        assert seen[0] == "online" and seen[-1] == "offline", (gateway_id, seen)
    # ... and a buffer each.
    assert {p.name for p in (workdir / "data" / "buffer").iterdir()} >= {"a", "b", "c"}


def _states(messages: list[tuple[str, Any, bool]]) -> dict[str, list[str]]:
    """Each shard gateway's states, in the order its status topic carried them."""
    states: dict[str, list[str]] = defaultdict(list)
    for topic, payload, _retained in messages:
        if topic.startswith("acme/plant-1/assembly/_gateway/gw-test-"):
            states[topic.split("/")[4]].append(payload["state"])
    return states
