"""What can be checked of the Dockerfile and compose.yaml without a Docker engine."""

from __future__ import annotations

import json
import re
import tomllib

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
