"""The Modbus read planner, case by case: each tests/cases/modbus_planner/*.yaml holds points
in, requests out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.modbus.config import ModbusTcpDevice
from adapters.modbus.plan import plan_device

CASES = sorted((Path(__file__).resolve().parent.parent / "cases" / "modbus_planner").glob("*.yaml"))


def _device(case: dict[str, Any]) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {
            "id": "dev",
            "line": "l1",
            "protocol": "modbus-tcp",
            "host": "127.0.0.1",
            **case["device"],
            "points": case["points"],
        }
    )


def _describe(interval: float, request: Any) -> str:
    unused = len(request.unused)
    note = f" ({unused} unused)" if unused else ""
    names = " ".join(s.point.name for s in request.slots)
    return f"{interval:g}s {request.table} {request.start}+{request.count}{note}: {names}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_planner_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    holes = frozenset((t, a) for t, a in case.get("holes", []))
    isolated = frozenset((t, a) for t, a in case.get("isolated", []))
    groups = plan_device(_device(case), holes, isolated)
    got = [_describe(g.interval, r) for g in groups for r in g.requests]
    assert got == case["expect"]
    # Every point is read exactly once, and no request reads a known hole.
    names = [s.point.name for g in groups for r in g.requests for s in r.slots]
    assert sorted(names) == sorted(p["name"] for p in case["points"])
    for group in groups:
        for request in group.requests:
            assert not any((request.table, a) in holes for a in request.unused)


def test_cases_exist() -> None:
    assert len(CASES) >= 8


def test_plan_command_prints_requests_and_totals() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "plan", "configs/demo.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "press-01  (modbus-tcp 127.0.0.1:5020 unit 1)" in lines
    assert (
        "  every 500ms: FC3 holding 0..15 (16, 4 unused): "
        "temperature, oil_pressure, stroke_count, recipe"
    ) in lines
    assert (
        "welder-01  (s7 127.0.0.1:10102 rack 0 slot 1, PDU 480 asked (the PLC may give less))"
        in lines
    )
    assert (
        "  every 0.5s: DB10 bytes 0..25 (26 bytes, 1 unused): current, welds, running, recipe, "
        "weld_time"
    ) in lines
    # Modbus registers and S7 bytes are counted apart.
    assert lines[-1] == (
        "TOTAL  4 devices: 32.0 requests/s, 192.0 registers/s (86.0 unused), "
        "56.0 bytes/s (2.0 unused); one request per point would be 82.0 requests/s (61% fewer)"
    )


def test_rtu_inter_frame_silence() -> None:
    from adapters.modbus.config import ModbusRtuDevice
    from adapters.modbus.link import inter_frame_silence

    def rtu(baud: int) -> ModbusRtuDevice:
        return ModbusRtuDevice.model_validate(
            {
                "id": "d",
                "line": "l",
                "protocol": "modbus-rtu",
                "port": "/dev/ttyS0",
                "baudrate": baud,
                "points": [{"name": "p", "table": "coil", "address": 0}],
            }
        )

    assert inter_frame_silence(rtu(9600)) == pytest.approx(0.004010, abs=1e-6)  # 3.5 x 11 bits
    assert inter_frame_silence(rtu(115200)) == 0.00175  # fixed above 19200 baud
