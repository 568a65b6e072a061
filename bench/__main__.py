"""``python -m bench``: CPU cost of the per-value hot path, in process.

Measures decode (one 124-register block of 62 float32 points, as one poll response) -> readings
-> JSON payloads, the work the gateway does per value between the socket and paho. End-to-end
scenarios with simulators and a broker come with the benchmark issue.
"""

from __future__ import annotations

import struct
import time

from adapters.modbus.config import ModbusTcpDevice
from adapters.modbus.source import create_sources
from gateway.encode import encode_reading, iso_time
from gateway.model import Reading


def main() -> None:
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
        }
    )
    (source,) = create_sources([device])
    ((request,),) = [g.requests for g in source.groups]
    registers = list(
        struct.unpack(">124H", struct.pack(">62f", *[20.0 + i / 8 for i in range(62)]))
    )
    rounds = 2000
    started = time.process_time()
    for n in range(rounds):
        gw_ts = iso_time(time.time())
        batch: list[Reading] = []
        source._decode(request, registers, time.time(), batch)
        for seq, reading in enumerate(batch, n * 62):
            encode_reading(reading, seq, gw_ts)
    cpu = time.process_time() - started
    values = rounds * 62
    print(f"{'scenario':<34} {'values':>10} {'CPU s':>8} {'us/value':>9} {'values/CPU-s':>13}")
    print(
        f"{'decode+readings+encode (float32)':<34} {values:>10} {cpu:>8.3f} "
        f"{cpu / values * 1e6:>9.2f} {values / cpu:>13,.0f}"
    )


if __name__ == "__main__":
    main()
