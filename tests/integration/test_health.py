"""/healthz and /readyz of a running gateway, as an orchestrator or a load balancer sees them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import Mosquitto, Process, wait_port
from tests.integration.line import simulated_plcs

POINTS = (
    "\n      - {name: c, table: holding, address: 0, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
)


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_ready(port: int, ready: bool, timeout: float = 20) -> dict[str, Any]:
    """Poll /readyz until it says ``ready``; /healthz must say alive all along."""
    deadline = time.monotonic() + timeout
    while True:
        assert _get(port, "/healthz") == (200, {"alive": True})
        status, report = _get(port, "/readyz")
        if (status == 200) == ready:
            assert report["ready"] is ready
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


def test_readyz_names_the_device_that_stopped_and_healthz_stays_up(
    workdir: Path, broker: Mosquitto
) -> None:
    plant = simulated_plcs(workdir, broker.port, POINTS)
    http, sims = plant.http, plant.sims
    gateway = None
    try:
        plant.wait()
        gateway = Process("run", str(plant.path), log=workdir / "gw.log")
        wait_port(http)
        report = _wait_ready(http, True)
        assert report["broker"] == {"connected": True}
        assert set(report["devices"]) == {"plc-a", "plc-b"}

        sims["plc-b"].kill()
        report = _wait_ready(http, False)
        b, a = report["devices"]["plc-b"], report["devices"]["plc-a"]
        assert b["ready"] is False and b["reason"], b
        assert a["ready"] is True and a["reason"] is None, a

        sims["plc-b"] = Process(
            "simulate", str(workdir / "plc-b.yaml"), log=workdir / "plc-b-2.log"
        )
        wait_port(plant.ports["plc-b"])
        _wait_ready(http, True, timeout=30)
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        plant.stop()
    # Stopped: nothing answers any more.
    try:
        _get(http, "/healthz")
        raise AssertionError("the listener outlived the gateway")
    except (ConnectionError, urllib.error.URLError):
        pass
