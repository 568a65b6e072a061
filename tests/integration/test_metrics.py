"""/metrics as Prometheus sees it: promtool accepts the text, a real Prometheus scrapes it, and
the per-device series follow what the devices do."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, Collector, Mosquitto, Process, cli, free_port, until, wait_port
from tests.integration.line import simulated_plcs
from tests.integration.plant import device, write_map

POINTS = (
    "\n      - {name: c, table: holding, address: 0, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
    "\n      - {name: t, table: holding, address: 1, type: int16, scale: 0.1, unit: degC, "
    "sim: {constant: 21.5}}"
)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        return answer.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _device(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, dev: str,
            **labels: str) -> float | None:  # fmt: skip
    key = tuple(sorted({"device": dev, "protocol": "modbus-tcp", **labels}.items()))
    return samples.get((f"factory_gateway_device_{name}", key))


def test_metrics_pass_promtool_and_follow_the_devices(workdir: Path, broker: Mosquitto) -> None:
    plant = simulated_plcs(workdir, broker.port, POINTS)
    http, sims, devices = plant.http, plant.sims, plant.ports
    collector = Collector(broker.port, "acme/#")
    gateway = None
    try:
        plant.wait()
        gateway = Process("run", str(plant.path), log=workdir / "gw.log")
        wait_port(http)
        # The temperature reached the subscriber: the gateway has read and delivered.
        collector.wait_for(lambda r: r["value"] == 21.5 and r["unit"] == "degC")
        received = len(collector.readings())

        # Deliveries are counted when the buffer settles acknowledgements (every 0.2 s).
        def caught_up() -> str | None:
            text = _scrape(http)
            delivered = _samples(text)[("factory_gateway_messages_delivered_total", ())]
            return text if delivered >= received else None

        text = until(caught_up, "the delivered count catches up with what was received")

        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

        samples = _samples(text)
        for dev in devices:
            assert _device(samples, "connected", dev) == 1
            polls = _device(samples, "polls_total", dev)
            requests = _device(samples, "requests_total", dev)
            # Every poll sent its request, but one in progress, or one that could not connect.
            failed = sum(_device(samples, "errors_total", dev, kind=k) or 0
                         for k in ("timeout", "connection"))  # fmt: skip
            assert polls and requests and requests + failed >= polls - 1
            # Every request's duration was observed (one may be on its way).
            assert _device(samples, "read_duration_seconds_count", dev) in (requests, requests - 1)
            assert _device(samples, "errors_total", dev, kind="timeout") == 0
            assert _device(samples, "last_good_age_seconds", dev) is not None
        delivered = samples[("factory_gateway_messages_delivered_total", ())]
        assert received > 0
        assert samples[("factory_gateway_readings_total", ())] >= delivered
        ages = samples[("factory_gateway_reading_age_at_ack_seconds_count", ())]
        assert ages >= delivered
        inf = (("le", "+Inf"),)
        assert samples[("factory_gateway_reading_age_at_ack_seconds_bucket", inf)] == ages
        # Aged from the readings' own timestamps (not from the epoch, not negative): every one
        # within the minute this test has run.
        minute = (("le", "60.0"),)
        assert samples[("factory_gateway_reading_age_at_ack_seconds_bucket", minute)] == ages
        assert 0 < samples[("factory_gateway_reading_age_at_ack_seconds_sum", ())] < 60 * ages
        assert samples[("factory_gateway_broker_connected", ())] == 1
        assert samples[("factory_gateway_broker_reconnects_total", ())] == 0
        url = f"mqtt://127.0.0.1:{broker.port}"
        assert samples[("factory_gateway_broker_info", (("url", url),))] == 1
        assert (
            samples[("factory_gateway_messages_dropped_total", (("reason", "buffer_full"),))] == 0
        )
        assert samples[("factory_gateway_commands_total", (("outcome", "written"),))] == 0
        assert ("process_resident_memory_bytes", ()) in samples

        # A device that stops answering: its own series say so, the other's do not.
        a_polls = _device(samples, "polls_total", "plc-a") or 0
        sims["plc-b"].kill()

        def plc_b_down() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            now = _samples(_scrape(http))
            failed = sum(
                _device(now, "errors_total", "plc-b", kind=kind) or 0
                for kind in ("timeout", "connection")
            )
            return now if _device(now, "connected", "plc-b") == 0 and failed > 0 else None

        now = until(plc_b_down, "plc-b counted as disconnected with errors")
        assert _device(now, "connected", "plc-a") == 1

        def plc_a_polls() -> bool:
            return (_device(_samples(_scrape(http)), "polls_total", "plc-a") or 0) > a_polls

        until(plc_a_polls, "plc-a polling on")  # (plc-b may be found down within one poll)
    finally:
        collector.close()
        if gateway is not None:
            assert gateway.stop() == 0
        plant.stop()


def test_a_real_prometheus_scrapes_the_gateway(workdir: Path, broker: Mosquitto) -> None:
    port = free_port()
    plc = device("plc-p", port, POINTS, poll="200ms")
    http, web = free_port(), free_port()
    path = write_map(
        workdir / "gw.yaml", broker.port, [plc], sections=f"http: {{listen: 127.0.0.1:{http}}}"
    )
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: factory-gateway\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{http}']}}]\n"
    )
    sim = Process("simulate", str(write_map(workdir / "sim.yaml", broker.port, [plc])),
                  log=workdir / "sim.log")  # fmt: skip
    gateway = prometheus = None
    try:
        wait_port(port)
        gateway = Process("run", str(path), log=workdir / "gw.log")
        prometheus = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=(workdir / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_port(web)

        def query(expr: str) -> list[dict[str, object]] | None:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    result: list[dict[str, object]] = json.loads(answer.read())["data"]["result"]
            except OSError:
                return None
            return result

        up = until(lambda: query('up{job="factory-gateway"} == 1'), "Prometheus sees the target up")
        assert len(up) == 1
        series = until(
            lambda: query('factory_gateway_device_polls_total{device="plc-p"} > 0'),
            "Prometheus has plc-p's poll count",
        )
        metric = series[0]["metric"]
        assert isinstance(metric, dict)
        assert metric["protocol"] == "modbus-tcp" and metric["job"] == "factory-gateway"
        connected = until(
            lambda: query('factory_gateway_device_connected{device="plc-p"} == 1'),
            "Prometheus has plc-p connected",
        )
        assert connected
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=20)
        if gateway is not None:
            assert gateway.stop() == 0
        sim.stop()


def test_compose_prometheus_scrapes_the_gateway_where_it_listens(tmp_path: Path) -> None:
    """compose.yaml: the gateway listens on all interfaces in its container, with a token, on
    the port its Prometheus scrapes with that token, and promtool accepts that Prometheus'
    configuration."""
    text = (ROOT / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    gateway, prometheus = compose["services"]["gateway"], compose["services"]["prometheus"]
    listen = gateway["environment"]["HTTP_LISTEN"]
    assert listen.startswith("0.0.0.0:")
    assert gateway["environment"]["HTTP_TOKEN"].startswith("${HTTP_TOKEN:?")
    assert compose["secrets"]["http_token"] == {"environment": "HTTP_TOKEN"}
    assert prometheus["secrets"] == ["http_token"]
    mounted = prometheus["volumes"][0].split(":")[0]
    scrape = yaml.safe_load((ROOT / mounted).read_text())
    job = scrape["scrape_configs"][0]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"gateway:{listen.split(':')[1]}"
    assert job["authorization"] == {"credentials_file": "/run/secrets/http_token"}
    # promtool reads the credentials file: it gets one where compose would mount the secret.
    token = tmp_path / "http_token"
    token.write_text("a-token")
    checked = tmp_path / "prometheus.yml"
    checked.write_text((ROOT / mounted).read_text().replace("/run/secrets/http_token", str(token)))
    check = subprocess.run(
        ["promtool", "check", "config", str(checked)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The map compose mounts listens where HTTP_LISTEN says.
    (local,) = set(re.findall(r"\./(\S+?):/config/gateway.yaml", text))
    assert "listen: ${HTTP_LISTEN" in (ROOT / local).read_text()
    # ... and wants the token there: without it the gateway would not start.
    for token, says in (("", "is reachable from other hosts: give http.auth"), ("t" * 32, "ok")):
        validated = cli(
            "validate", str(ROOT / local), env={"HTTP_LISTEN": listen, "HTTP_TOKEN": token}
        )
        assert says in validated.stdout + validated.stderr, validated.stdout + validated.stderr
