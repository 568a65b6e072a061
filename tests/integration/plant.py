# ruff: noqa: E501  (device-map YAML reads best one point per line)
"""Device maps for the integration tests, written the way docs/device-map.md describes them."""

from __future__ import annotations

from pathlib import Path

PLC1_POINTS = """
      - {name: temp, table: holding, address: 0, type: float32, unit: degC, sim: {constant: 21.5}}
      - {name: temp_cdab, table: holding, address: 2, type: float32, word_order: little, sim: {constant: -3.25}}
      - {name: temp_badc, table: holding, address: 4, type: float32, byte_order: little, sim: {constant: 1234.5}}
      - {name: temp_dcba, table: holding, address: 6, type: float32, byte_order: little, word_order: little, sim: {constant: 0.1}}
      - {name: i16, table: holding, address: 8, type: int16, sim: {constant: -1234}}
      - {name: u16, table: holding, address: 9, type: uint16, sim: {constant: 65000}}
      - {name: i32, table: holding, address: 10, type: int32, sim: {constant: -70000}}
      - {name: u32, table: holding, address: 12, type: uint32, sim: {constant: 4000000000}}
      - {name: i64, table: holding, address: 14, type: int64, sim: {constant: -9000000000000}}
      - {name: u64, table: holding, address: 18, type: uint64, sim: {constant: 12345678901234567890}}
      - {name: f64, table: holding, address: 22, type: float64, unit: rad, sim: {constant: 3.141592653589793}}
      - {name: label, table: holding, address: 26, type: string, length: 4, sim: {constant: PRESS-A}}
      - {name: flag, table: holding, address: 30, type: bool, sim: {constant: true}}
      - {name: pressure, table: input, address: 10, type: int16, scale: 0.1, unit: bar, sim: {constant: 12.3}}
      - {name: level, table: input, address: 11, type: uint16, scale: 0.5, offset: -10, unit: "%", sim: {constant: 40}}
      - {name: running, table: coil, address: 0, type: bool, sim: {constant: true}}
      - {name: stopped, table: coil, address: 1, type: bool, sim: {constant: false}}
      - {name: door, table: discrete_input, address: 5, sim: {constant: true}}
"""

EXPECTED_PLC1 = {
    "temp": (21.5, "degC"),
    "temp_cdab": (-3.25, None),
    "temp_badc": (1234.5, None),
    "temp_dcba": (0.1, None),
    "i16": (-1234, None),
    "u16": (65000, None),
    "i32": (-70000, None),
    "u32": (4000000000, None),
    "i64": (-9000000000000, None),
    "u64": (12345678901234567890, None),
    "f64": (3.141592653589793, "rad"),
    "label": ("PRESS-A", None),
    "flag": (True, None),
    "pressure": (12.3, "bar"),
    "level": (40.0, "%"),
    "running": (True, None),
    "stopped": (False, None),
    "door": (True, None),
}

PLC2_POINTS = """
      - {name: count, table: holding, address: 0, type: uint32, sim: {counter: {interval: 200ms}}}
      - {name: speed, table: input, address: 0, type: int16, scale: 0.01, unit: m/s, sim: {constant: 1.25}}
"""


def device(name: str, port: int, points: str, poll: str = "200ms", timeout: str = "500ms") -> str:
    return f"""
  - id: {name}
    line: line-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: {port}
    unit_id: 1
    poll_interval: {poll}
    timeout: {timeout}
    points:{points}"""


def write_map(
    path: Path, broker_port: int, devices: list[str], mqtt: str = "", sections: str = ""
) -> Path:
    """``mqtt``: more keys of the mqtt section (``version: 5``); ``sections``: more top-level
    sections (``buffer: {mode: memory}``)."""
    more_mqtt = "".join(f"  {line}\n" for line in mqtt.splitlines())
    if "http:" not in sections:  # many gateways run at once: no listener unless asked for
        sections += "\nhttp: false"
    path.write_text(
        f"""gateway:
  id: gw-test
  hierarchy: {{enterprise: acme, site: plant-1, area: assembly}}
mqtt:
  url: mqtt://127.0.0.1:{broker_port}
  qos: 1
{more_mqtt}{sections}
devices:{"".join(devices)}
"""
    )
    return path
