"""Device-map loading: each broken map in tests/configs/broken reports exactly its .expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.modbus.config import ModbusTcpDevice
from gateway.config.types import parse_duration
from gateway.errors import ConfigError
from gateway.mqtt.client import Server
from gateway.mqtt.settings import data_session
from gateway.registry import load_config
from tests.helpers import ROOT

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BROKEN = sorted((CONFIGS / "broken").glob("*.yaml"))


@pytest.mark.parametrize("case", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_map_reports_every_expected_error(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(case.parent)
    monkeypatch.delenv("FACTORY_GATEWAY_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config([case.name])
    expected = case.with_suffix(".expected").read_text().splitlines()
    assert [str(issue) for issue in info.value.issues] == expected


def test_validate_command_prints_all_errors_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", "acceptance.yaml"],
        cwd=CONFIGS / "broken",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[:-1] == (CONFIGS / "broken" / "acceptance.expected").read_text().splitlines()
    assert lines[-1] == "4 errors"
    assert "Traceback" not in result.stderr


def test_validate_command_accepts_the_example_maps() -> None:
    maps = sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    assert maps
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", *maps], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_validate_command_accepts_every_adapter_s_example() -> None:
    """Each protocol folder carries an example map (docs by example); CI keeps it valid."""
    examples = sorted(str(p) for p in (ROOT / "adapters").glob("*/example.yaml"))
    assert len(examples) >= 2
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", *examples], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_include_env_defaults_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FG_TEST_BROKER", raising=False)
    monkeypatch.setenv("FG_TEST_USER", "operator")
    config = load_config([CONFIGS / "valid" / "with_include.yaml"])
    assert config.mqtt.url == ["mqtts://broker.example:8884"]
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.example", 8884, True)
    assert config.mqtt.username == "operator"
    assert [d.id for d in config.devices] == ["d1", "d2"]
    d2 = config.devices[1]
    assert isinstance(d2, ModbusTcpDevice)
    assert (d2.host, d2.port, d2.poll_interval, d2.timeout) == ("10.0.0.2", 1502, 120.0, 1.0)
    assert d2.points[0].deadband == 0.5
    d1 = config.devices[0]
    assert isinstance(d1, ModbusTcpDevice)
    assert (d1.port, d1.unit_id, d1.byte_order, d1.word_order) == (502, 1, "big", "big")
    assert d1.points[0].type == "bool"  # default type of a coil


def test_environment_variable_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FG_TEST_BROKER", "mqtt://10.1.2.3")
    config = load_config([CONFIGS / "valid" / "with_include.yaml"])
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("10.1.2.3", 1883, False)


def _brokers_map(folder: Path, urls: str) -> Path:
    path = folder / "brokers.yaml"
    path.write_text(
        "gateway: {id: gw, hierarchy: {enterprise: e, site: s, area: a}}\n"
        f"mqtt:\n  url: {urls}\n"
        "devices:\n  - {id: d, line: l, protocol: modbus-tcp, host: 127.0.0.1,\n"
        "     points: [{name: p, table: holding, address: 0, type: uint16}]}\n"
    )
    return path


def test_several_brokers_are_tried_in_the_order_written(tmp_path: Path) -> None:
    config = load_config([_brokers_map(tmp_path, "[mqtts://a.plant:8884, mqtts://b.plant]")])
    assert config.mqtt.servers == [("a.plant", 8884), ("b.plant", 8883)]
    # The same in one string, as one environment variable gives it.
    one = load_config([_brokers_map(tmp_path, "'mqtts://a.plant:8884,mqtts://b.plant'")])
    assert one.mqtt.url == config.mqtt.url
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("a.plant", 8884, True)
    session = data_session(config.mqtt, "gw", None)
    assert session.servers == (Server("a.plant", 8884), Server("b.plant", 8883))
    assert [str(s) for s in session.servers] == ["a.plant:8884", "b.plant:8883"]


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ("[mqtt://a, mqtt://b, mqtt://a]", "3:29: 'mqtt://a' is listed twice"),
        (
            "[mqtt://a, mqtts://b]",
            "3:8: mqtt.url mixes mqtt:// and mqtts://: give every broker the same scheme, so "
            "that moving to the next one never drops TLS",
        ),
        ("[]", "3:8: mqtt.url names no broker: give a URL, or a list of them"),
        ("[mqtt://a, mqtt://A:1883/]", "3:19: 'mqtt://A:1883/' is the same broker as 'mqtt://a'"),
        (
            "[mqtt://a, 1883]",
            "3:8: mqtt.url is a broker URL (mqtt://host:port), or a list of them for failover, "
            "not ['mqtt://a', 1883]",
        ),
        ("'mqtt://a, mqtt://a'", "3:8: 'mqtt://a' is listed twice"),
        ("mqtt://", "3:8: 'mqtt://': the broker URL needs a host, e.g. mqtt://127.0.0.1:1883"),
    ],
)
def test_a_broker_list_is_refused_where_it_is_wrong(
    tmp_path: Path, urls: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([_brokers_map(tmp_path, urls)])
    assert [str(issue) for issue in info.value.issues] == [f"{tmp_path}/brokers.yaml:{expected}"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "5 parsecs", "1d", True, ""])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_yaml_anchors_merge_keys_and_12_booleans(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        """gateway: {id: gw, hierarchy: {enterprise: e, site: s, area: a}}
devices:
  - &press
    id: left
    line: line-1
    protocol: modbus-tcp
    host: 10.0.0.9
    poll_interval: 2s
    points:
      - {name: off, table: coil, address: 0}
      - {name: no, table: coil, address: 1}
  - <<: *press
    id: right
    unit_id: 2
    poll_interval: 5s
"""
    )
    config = load_config([path])
    left, right = config.devices
    assert [p.name for p in left.points] == ["off", "no"]  # not False: YAML 1.2 booleans
    assert (right.id, right.line, right.poll_interval) == ("right", "line-1", 5.0)
    assert [p.name for p in right.points] == ["off", "no"]


DEVICE_LIST = """- id: d2
  line: l1
  protocol: modbus-tcp
  host: 127.0.0.1
  points:
    - {name: p, table: coil, address: 0}
"""


def _map_including(folder: Path, include: str, more: str = "") -> Path:
    path = folder / "map.yaml"
    path.write_text(
        "gateway: {id: gw, hierarchy: {enterprise: e, site: s, area: a}}\n"
        f"include: {include}\n{more}devices: []\n"
    )
    return path


def test_includes_stay_in_the_map_s_folder_unless_allowed(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    shared = tmp_path / "shared"
    plant.mkdir()
    shared.mkdir()
    (shared / "line2.yaml").write_text(DEVICE_LIST)
    (plant / "linked.yaml").symlink_to(shared / "line2.yaml")  # a link out counts as out
    for include in ("../shared/line2.yaml", "linked.yaml"):
        with pytest.raises(ConfigError) as refused:
            load_config([_map_including(plant, include)])
        first = str(refused.value.issues[0])  # then: no devices, as nothing was included
        assert "is outside the map's folder; list its folder under include_folders" in first
    allowed = _map_including(plant, "../shared/line2.yaml", "include_folders: ../shared\n")
    assert [d.id for d in load_config([allowed]).devices] == ["d2"]
    linked = _map_including(plant, "linked.yaml", f"include_folders: [{shared}]\n")
    assert [d.id for d in load_config([linked]).devices] == ["d2"]


def test_a_file_over_64_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(64 * 1024 * 1024 + 1)  # sparse: nothing written, nothing to read
    with pytest.raises(ConfigError) as refused:
        load_config([path])
    assert [i.message for i in refused.value.issues] == ["the file is larger than 64 MiB"]
