"""What can be checked of the Dockerfile and compose.yaml without a Docker engine."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import yaml

from gateway.registry import load_config
from tests.helpers import ROOT


def test_dockerfile_entrypoint_is_the_installed_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["factory-gateway"]
    assert scripts["factory-gateway"] == "gateway.cli:main"
    assert cmd == ["run", "/config/gateway.yaml"]
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the image must not run as root"
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which does not exist"
    # The default map baked into the image is a valid one.
    copied = re.search(r"cp (\S+) /config/gateway.yaml", dockerfile).group(1)  # type: ignore[union-attr]
    load_config([ROOT / copied])


def test_compose_mounts_a_valid_map() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    for local in set(re.findall(r"\./(\S+?):/config/gateway.yaml", compose)):
        load_config([ROOT / local])


def test_compose_prometheus_scrapes_the_gateway_where_it_listens() -> None:
    """The gateway listens on all interfaces in its container, on the port Prometheus
    scrapes; promtool accepts the scrape configuration."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    gateway, prometheus = compose["services"]["gateway"], compose["services"]["prometheus"]
    listen = gateway["environment"]["HTTP_LISTEN"]
    assert listen.startswith("0.0.0.0:")
    mounted = prometheus["volumes"][0].split(":")[0]
    scrape = yaml.safe_load((ROOT / mounted).read_text())
    (target,) = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"gateway:{listen.split(':')[1]}"
    check = subprocess.run(
        ["promtool", "check", "config", str(ROOT / mounted)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The map compose mounts listens where HTTP_LISTEN says.
    for local in set(
        re.findall(r"\./(\S+?):/config/gateway.yaml", (ROOT / "compose.yaml").read_text())
    ):
        assert "${HTTP_LISTEN" in (ROOT / local).read_text()
