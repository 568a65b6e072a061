"""Selectors of ``--only``: which devices a shard runs, and the shard's own identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.shards import coverage, parse_selector, select
from gateway.errors import GatewayError
from gateway.registry import load_config
from tests.helpers import cli

MAP = """\
gateway: {id: edge, hierarchy: {enterprise: acme, site: plant-1, area: assembly}}
mqtt: {client_id: edge-client, format: sparkplug}
sparkplug: {group_id: plant-1, edge_node_id: node}
devices:
  - {id: press-01, line: line-1, protocol: modbus-tcp, host: 127.0.0.1, shard: a, points: [{name: p, table: coil, address: 0}]}
  - {id: press-02, line: line-1, protocol: modbus-tcp, host: 127.0.0.1, port: 5021, shard: b, points: [{name: p, table: coil, address: 0}]}
  - {id: welder-01, line: line-2, protocol: s7, host: 127.0.0.1, points: [{name: q, address: Q0.0}]}
"""  # noqa: E501


@pytest.fixture
def plant(tmp_path: Path) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(MAP)
    return path


def test_a_selector_picks_devices_by_every_term(plant: Path) -> None:
    config = load_config([plant])
    picked = {
        text: [d.id for d in config.devices if parse_selector(text).selects(d)]
        for text in ("shard=a", "line=line-1", "device=press-*", "protocol=s7,line=line-2",
                     "line=line-1, device=*02", "shard=*")
    }  # fmt: skip
    assert picked == {
        "shard=a": ["press-01"],
        "line=line-1": ["press-01", "press-02"],
        "device=press-*": ["press-01", "press-02"],
        "protocol=s7,line=line-2": ["welder-01"],
        "line=line-1, device=*02": ["press-02"],
        "shard=*": ["press-01", "press-02"],  # a device without shard: is in no shard
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("line", "write key=pattern, e.g. line=line-1"),
        ("line=", "write key=pattern"),
        ("colour=red", "'colour' is not a device key; use device, line, protocol, shard"),
        ("area=assembly", "the area is the whole map's, not a device's: select by line"),
    ],
)
def test_selectors_that_cannot_be_read(text: str, says: str) -> None:
    with pytest.raises(GatewayError, match=says):
        parse_selector(text)


def test_a_shard_is_a_gateway_of_its_own(plant: Path) -> None:
    config = load_config([plant])
    shard = select(config, parse_selector("shard=a"))
    assert [d.id for d in shard.devices] == ["press-01"]
    assert shard.gateway.id == "edge-a"  # so its status topic and default client id
    assert shard.mqtt.client_id == "edge-client-a"
    assert shard.buffer.path == config.buffer.path / "a"
    assert shard.sparkplug is not None and shard.sparkplug.edge_node_id == "node-a"
    line = select(config, parse_selector("line=line-1"))
    assert line.gateway.id == "edge-line_line-1"
    with pytest.raises(GatewayError, match="selects no device"):
        select(config, parse_selector("line=line-9"))


def test_coverage_names_devices_in_no_shard_or_in_several(plant: Path) -> None:
    config = load_config([plant])
    selectors = [parse_selector(s) for s in ("shard=a", "shard=b", "line=line-1")]
    assert coverage(config, selectors) == [
        "device 'press-01' is in 2 shards: shard=a, line=line-1",
        "device 'press-02' is in 2 shards: shard=b, line=line-1",
        "device 'welder-01' is in no shard",
    ]
    assert coverage(config, [parse_selector(s) for s in ("shard=*", "line=line-2")]) == []
    # A shard added to the deployment but not to the map, a typo, a shard given twice.
    selectors = [parse_selector(s) for s in ("shard=a", "shard=B", "shard=c", "shard=a")]
    assert coverage(config, selectors) == [
        "shard 'shard=B' selects no device of the map: its gateway would not start",
        "shard 'shard=c' selects no device of the map: its gateway would not start",
        "shard 'shard=a' is given twice",
        "device 'press-02' is in no shard",
        "device 'welder-01' is in no shard",
    ]


def test_validate_and_plan_take_the_selectors(plant: Path) -> None:
    split = cli("validate", str(plant), "--shards", "shard=a", "shard=b")
    assert split.returncode == 1
    assert f"{plant}: device 'welder-01' is in no shard" in split.stderr
    covered = cli("validate", str(plant), "--shards", "shard=*", "protocol=s7")
    assert (covered.returncode, covered.stdout) == (0, "ok\n")
    typo = cli("validate", str(plant), "--shards", "shard=a", "lines=line-2")
    assert typo.returncode == 1
    assert "error: --shards 'lines=line-2': 'lines' is not a device key" in typo.stderr
    nowhere = cli("validate", str(plant), "--only", "line=nowhere")
    assert nowhere.returncode == 1
    assert "error: --only 'line=nowhere' selects no device of the map" in nowhere.stderr
    plan = cli("plan", str(plant), "--only", "shard=b")
    assert plan.returncode == 0
    assert "press-02" in plan.stdout and "press-01" not in plan.stdout
    assert "welder-01" not in plan.stdout
