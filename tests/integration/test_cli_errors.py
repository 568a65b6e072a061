"""Operational mistakes get one clear sentence and exit 1, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import cli


def test_simulating_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "map.yaml"
        path.write_text(
            "gateway: {id: g, hierarchy: {enterprise: e, site: s, area: a}}\n"
            "devices:\n"
            f"  - {{id: d1, line: l1, protocol: modbus-tcp, host: 127.0.0.1, port: {port},\n"
            "     points: [{name: p, table: coil, address: 0}]}\n"
        )
        result = cli("simulate", str(path))
    assert result.returncode == 1
    assert f"error: cannot serve device 'd1' on 127.0.0.1:{port}: address in use" in result.stderr
    assert "Traceback" not in result.stderr
