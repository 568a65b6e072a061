"""The status page in a real browser (Debian's chromium), against a running gateway with
simulated PLCs and mosquitto: what it shows is what the broker received."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser import chromium, screenshot
from tests.helpers import ROOT, Collector, Mosquitto, Process, cli, free_port, until, wait_port
from tests.integration.line import simulated_plcs
from tests.integration.plant import device, write_map

POINTS = (
    "\n      - {name: wave, table: holding, address: 0, type: float32, unit: degC, "
    "sim: {sine: {min: 10, max: 30, period: 4s}}}"
    "\n      - {name: count, table: holding, address: 4, type: uint16, "
    "sim: {counter: {interval: 300ms}}}"
    "\n      - {name: setpoint, table: holding, address: 10, type: int16, unit: rpm, "
    "sim: {constant: 7}}"
    "\n      - {name: label, table: holding, address: 20, type: string, length: 4, "
    "sim: {constant: AB12}}"
    "\n      - {name: running, table: coil, address: 0, type: bool, sim: {constant: true}}"
)
NAMES = ("press-7", "oven-7")

# Every point row of the page: device, point, value (JSON), unit, quality, source timestamp.
ROWS_JS = """
return [...document.querySelectorAll("table.points tbody tr[data-point]")].map((r) => [
  r.dataset.device, r.dataset.point, r.querySelector(".value").dataset.value ?? null,
  r.cells[2].textContent, r.querySelector(".quality .badge")?.textContent ?? null,
  r.querySelector(".ts").dataset.ts ?? null]);
"""


def _page_rows(browser: WebDriver) -> list[list[Any]]:
    rows: list[list[Any]] = browser.execute_script(ROWS_JS)
    return rows


def _received(collector: Collector) -> set[tuple[str, str, str, str, str, str]]:
    """What the broker delivered, as the page's rows show it."""
    return {
        (
            r["device"],
            r["point"],
            json.dumps(r.get("value")),
            r.get("unit") or "",
            r["quality"],
            r["ts"],
        )
        for r in collector.readings()
    }


def _newest(collector: Collector) -> dict[tuple[str, str], str]:
    """Each point's newest source timestamp the broker delivered so far."""
    newest: dict[tuple[str, str], str] = {}
    for r in collector.readings():
        key = (r["device"], r["point"])
        newest[key] = max(newest.get(key, ""), r["ts"])
    return newest


def _all_match(browser: WebDriver, collector: Collector) -> list[list[Any]] | None:
    """The page's rows when every one shows the broker's latest value: one the broker received
    (value, unit, quality and source timestamp alike), and none older than what the broker
    had delivered before the page was read. Else None (the page may be a moment behind)."""
    before = _newest(collector)
    rows = _page_rows(browser)
    if len(rows) != len(NAMES) * 5 or any(r[2] is None for r in rows):
        return None
    received = _received(collector)
    for dev, point, value, unit, quality, ts in rows:
        quality = quality.split()[-1]  # "✔ good"
        if (dev, point, json.dumps(json.loads(value)), unit, quality, ts) not in received:
            return None
        if ts < before.get((dev, point), ""):  # ISO 8601 in UTC: compared as text
            return None
    return rows


def _cell(browser: WebDriver, dev: str, point: str, css: str) -> str:
    found: str = browser.execute_script(
        f'return document.querySelector(`tr[data-device="{dev}"][data-point="{point}"] {css}`)'
        "?.textContent ?? ''"
    )
    return found


def _device_row(browser: WebDriver, dev: str) -> dict[str, str]:
    row: dict[str, str] = browser.execute_script(
        f'const r = document.querySelector(`tr.device[data-device="{dev}"]`);'
        "return r ? {ok: r.dataset.ok, state: r.cells[0].textContent, "
        "reason: r.querySelector('.reason').textContent} : null;"
    )
    return row


def _trend(browser: WebDriver, dev: str, point: str) -> list[float]:
    values: str | None = browser.execute_script(
        f'return document.querySelector(`tr[data-device="{dev}"][data-point="{point}"] '
        "path`)?.dataset.values ?? null"
    )
    return json.loads(values) if values else []


def _uptime(browser: WebDriver) -> float | None:
    text: str | None = browser.execute_script(
        "return document.getElementById('uptime')?.dataset.seconds ?? null"
    )
    return float(text) if text is not None else None


async def _write_register(port: int, address: int, value: int) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
    assert await client.connect()
    assert not (await client.write_register(address, value, device_id=1)).isError()
    client.close()


def test_the_page_shows_what_the_broker_received(workdir: Path, broker: Mosquitto) -> None:
    plant = simulated_plcs(workdir, broker.port, POINTS, names=NAMES)
    collector = Collector(broker.port, "acme/#")
    gateway: Process | None = None
    try:
        plant.wait()
        gateway = Process("run", str(plant.path), log=workdir / "gw.log")
        wait_port(plant.http)
        with chromium() as browser:
            try:
                browser.get(f"http://127.0.0.1:{plant.http}/")
                # Every device and every point, each with a value the broker received: the
                # same value, unit, quality and source timestamp.
                rows = until(
                    lambda: _all_match(browser, collector),
                    "every point of the page with a value the broker received",
                    20,
                )
                assert {(r[0], r[1]) for r in rows} == {
                    (d, p) for d in NAMES for p in ("wave", "count", "setpoint", "label", "running")
                }
                assert _cell(browser, "press-7", "label", ".value") == "AB12"
                assert _cell(browser, "press-7", "setpoint", ".value") == "7"

                # A value written on the simulator is on the page within 2 s.
                asyncio.run(_write_register(plant.ports["press-7"], 10, 1234))
                until(
                    lambda: _cell(browser, "press-7", "setpoint", ".value") == "1234",
                    "the written setpoint on the page",
                    2.0,
                )
                collector.wait_for(
                    lambda r: r["device"] == "press-7" and r["point"] == "setpoint"
                    and r["value"] == 1234
                )  # fmt: skip

                # The sine's trend has drawn more than one distinct value.
                wave = until(
                    lambda: (
                        len(set(_trend(browser, "press-7", "wave"))) > 1
                        and _trend(browser, "press-7", "wave")
                    ),
                    "a trend of the sine with more than one value",
                    15,
                )
                assert all(10 <= v <= 30 for v in wave), wave
                print("screenshot:", screenshot(browser, "status-page-trends"))

                # A PLC killed: its row turns bad, with the reason; the other stays OK.
                plant.sims["oven-7"].kill()
                oven = until(
                    lambda: (row := _device_row(browser, "oven-7"))["ok"] == "false" and row,
                    "the killed PLC's row bad",
                    15,
                )
                assert "BAD" in oven["state"], oven
                assert oven["reason"].startswith("disconnected: "), oven
                assert _device_row(browser, "press-7")["ok"] == "true"
                assert "bad" in _cell(browser, "oven-7", "wave", ".quality")

                # The gateway restarts: the page reconnects by itself and follows the new one.
                before = _uptime(browser)
                assert before is not None and before >= 1, before
                assert gateway.stop() == 0
                gateway = Process("run", str(plant.path), log=workdir / "gw2.log")
                until(
                    lambda: (up := _uptime(browser)) is not None and up < before,
                    "the page following the restarted gateway",
                    30,
                )
                since = len(collector.readings())
                until(
                    lambda: collector.readings()[since:] and _all_match_one(browser, collector),
                    "values of the restarted gateway on the page",
                    20,
                )
                assert _device_row(browser, "oven-7")["ok"] == "false"
            finally:
                print("screenshot:", screenshot(browser, "status-page"))
                browser.set_window_size(820, 1180)  # a tablet, upright
                print("screenshot:", screenshot(browser, "status-page-tablet"))
    finally:
        if gateway is not None:
            gateway.stop()
        plant.stop()
        collector.close()


def _all_match_one(browser: WebDriver, collector: Collector) -> bool:
    """press-7's counter on the page is one the broker received."""
    received = _received(collector)
    for dev, point, value, unit, quality, ts in _page_rows(browser):
        if (dev, point) == ("press-7", "count") and value is not None:
            key = (dev, point, json.dumps(json.loads(value)), unit, quality.split()[-1], ts)
            return key in received
    return False


def _get(url: str, header: str | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_reachable_from_other_hosts_the_listener_wants_credentials(
    workdir: Path, broker: Mosquitto
) -> None:
    port, http = free_port(), free_port()
    plc = device("plc-auth", port, POINTS)
    # Without credentials, a listener on every interface is refused at load, located.
    open_map = write_map(
        workdir / "open.yaml", broker.port, [plc], sections=f"http: {{listen: 0.0.0.0:{http}}}"
    )
    refused = cli("run", str(open_map))
    assert refused.returncode != 0
    assert f"open.yaml:7:16: 0.0.0.0:{http} is reachable from other hosts: give http.auth" in (
        refused.stdout + refused.stderr
    ), refused.stdout + refused.stderr
    # With a token: 401 without it (a browser is asked for it), everything with it.
    guarded = write_map(
        workdir / "guarded.yaml",
        broker.port,
        [plc],
        sections=f"http: {{listen: 0.0.0.0:{http}, auth: {{token: s3cret-token}}}}",
    )
    gateway = Process("run", str(guarded), log=workdir / "gw.log")
    try:
        wait_port(http)
        base = f"http://127.0.0.1:{http}"
        for path in ("/", "/status.json", "/events", "/metrics", "/readyz", "/assets/status.js"):
            status, headers = _get(base + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic realm="), headers
            assert _get(base + path, "Bearer wrong")[0] == 401, path
        assert _get(base + "/healthz")[0] == 200  # a liveness probe needs no secret
        assert _get(base + "/metrics", "Bearer s3cret-token")[0] == 200
        basic = base64.b64encode(b"anyone:s3cret-token").decode()
        assert _get(base + "/status.json", f"Basic {basic}")[0] == 200
        wrong = base64.b64encode(b"anyone:s3cret-tokeN").decode()
        assert _get(base + "/", f"Basic {wrong}")[0] == 401
    finally:
        assert gateway.stop() == 0


def test_https_and_the_image_s_health_check(workdir: Path, broker: Mosquitto) -> None:
    """http.cert and http.key: the listener speaks HTTPS, a mismatched pair is a located map
    error, and the Docker image's HEALTHCHECK command passes over HTTPS as over HTTP."""
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(workdir / f"{name}.key"), "-out", str(workdir / f"{name}.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
    port, http = free_port(), free_port()
    plc = device("plc-tls", port, POINTS)
    dockerfile = (ROOT / "Dockerfile").read_text()
    command = json.loads(re.search(r"^\s+CMD (\[.+\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert command[:2] == ["python", "-c"]

    def map_with(name: str, listener: str) -> Path:
        return write_map(workdir / f"{name}.yaml", broker.port, [plc], sections=listener)

    def health_check() -> None:
        check = subprocess.run(
            [sys.executable, "-c", command[2].replace("9108", str(http))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr

    mismatched = map_with(
        "mismatched", f"http: {{listen: 127.0.0.1:{http}, cert: a.crt, key: b.key}}"
    )
    refused = cli("validate", str(mismatched))
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "mismatched.yaml:7:" in said, said
    assert "b.key are not a certificate and its key: KEY_VALUES_MISMATCH" in said, said
    tls = map_with("tls", f"http: {{listen: 127.0.0.1:{http}, cert: a.crt, key: a.key}}")
    gateway = Process("run", str(tls), log=workdir / "gw.log")
    try:
        wait_port(http)
        context = ssl.create_default_context(cafile=str(workdir / "a.crt"))
        with urllib.request.urlopen(
            f"https://127.0.0.1:{http}/status.json", timeout=5, context=context
        ) as answer:
            assert json.loads(answer.read())["devices"][0]["id"] == "plc-tls"
        health_check()
    finally:
        assert gateway.stop() == 0
    # ... and over plain HTTP.
    gateway = Process(
        "run",
        str(map_with("plain", f"http: {{listen: 127.0.0.1:{http}}}")),
        log=workdir / "gw2.log",
    )
    try:
        wait_port(http)
        health_check()
        # DNS rebinding: a loopback listener without credentials answers loopback names only.
        assert _get(f"http://127.0.0.1:{http}/status.json")[0] == 200
        assert _get(f"http://localhost:{http}/status.json")[0] == 200
        rebound = urllib.request.Request(
            f"http://127.0.0.1:{http}/status.json", headers={"Host": f"evil.example:{http}"}
        )
        try:
            urllib.request.urlopen(rebound, timeout=5)
            raise AssertionError("a request to another host name was answered")
        except urllib.error.HTTPError as error:
            assert error.code == 421
    finally:
        assert gateway.stop() == 0
