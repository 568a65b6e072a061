"""``python -m bench SCENARIO``: run one benchmark scenario, print its figures, save JSON.

Scenarios: ``hot-path`` (CPU per value of Modbus bytes -> MQTT payload, in process),
``opcua-latency`` (source timestamp -> publish latency of a subscription of ``--items``;
``opcua-10k`` with 10,000), ``command-latency`` (command -> result round trip, Modbus and OPC UA,
``--commands`` each), and on the lean Modbus simulator (``simulators/lean_modbus.py``):
``modbus-100k``, ``modbus-fast``, ``modbus-small``, ``modbus-1000dev`` (1,000 devices, each on
its own connection), ``report-by-exception``; ``s7-10k`` on python-snap7's server (10 PLCs x
1,000 addresses). Gateway CPU and RSS are read from /proc; values are
counted by an independent subscriber through a real mosquitto. docs/performance.md has the
figures.
"""

from __future__ import annotations

import argparse

from bench import harness
from bench.harness import write_result
from bench.scenarios import SCENARIOS
from gateway.cli import loop_factory


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenario", choices=sorted(SCENARIOS), nargs="?", default="hot-path")
    parser.add_argument("--devices", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--poll", type=float, default=None, help="seconds; default: the scenario's")
    parser.add_argument("--buffer", choices=("disk", "memory"), default="disk")
    parser.add_argument("--batch", choices=("point", "device"), default=None)
    parser.add_argument(
        "--format",
        choices=("json", "sparkplug"),
        default="json",
        help="Modbus scenarios: JSON messages, or Sparkplug B (one DDATA per device and poll)",
    )
    parser.add_argument(
        "--http",
        choices=("off", "on", "scrape", "page", "events"),
        default="on",
        help="Modbus scenarios: the HTTP listener off, on (the default of a map), on and "
        "/metrics scraped every second, on with the status page open in a headless "
        "chromium (one device's points shown), or on with that page's event stream read by "
        "a plain client (the gateway's share without the browser's on the same cores)",
    )
    parser.add_argument("--items", type=int, default=1000, help="OPC UA monitored items")
    parser.add_argument("--rate", type=float, default=1000.0, help="OPC UA changes per second")
    parser.add_argument("--commands", type=int, default=500, help="commands per device")
    parser.add_argument(
        "--broker-nodelay",
        choices=("on", "off"),
        default="on",
        help="mosquitto's set_tcp_nodelay (command-latency; off is mosquitto's default)",
    )
    parser.add_argument("--publishing-interval", type=float, default=0.1, help="OPC UA, seconds")
    parser.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="gateway's loop"
    )
    args = parser.parse_args()
    harness.GATEWAY_LOOP = args.loop
    try:
        result = SCENARIOS[args.scenario](args)
    except BaseException:
        for folder in harness.FOLDERS:
            print(f"kept for a look: {folder}")
        raise
    harness.remove_scratch()
    if args.scenario != "hot-path":  # the loop the gateway chose, as it chooses it
        result["gateway_loop"] = "asyncio" if loop_factory(args.loop) is None else "uvloop"
    width = max(len(k) for k in result)
    print(f"scenario: {args.scenario}")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")
    print(f"written: {write_result(args.scenario, result)}")


if __name__ == "__main__":
    main()
