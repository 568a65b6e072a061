"""What a reload restarts, keeps and postpones (gateway/reload.py), and the watcher's eyes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path

from gateway.config.load import Config
from gateway.registry import load_config
from gateway.reload import Reloader, diff

HEAD = """gateway: {{id: gw, hierarchy: {{enterprise: e, site: s, area: a}}}}
mqtt: {{url: "mqtt://127.0.0.1:{port}"{mqtt}}}
{more}
devices:
"""


def _device(name: str, port: int, unit: int = 1, address: int = 0) -> str:
    return f"""  - id: {name}
    line: l
    protocol: modbus-tcp
    host: 127.0.0.1
    port: {port}
    unit_id: {unit}
    points: [{{name: p, table: holding, address: {address}, type: uint16}}]
"""


def _map(tmp_path: Path, devices: str, port: int = 1883, mqtt: str = "", more: str = "") -> Config:
    path = tmp_path / "map.yaml"
    path.write_text(HEAD.format(port=port, mqtt=mqtt, more=more) + devices)
    return load_config([path])


def test_only_changed_devices_and_those_sharing_their_connection_restart(tmp_path: Path) -> None:
    # b and c are two units behind one Modbus gateway (one connection): they restart together.
    old = _map(tmp_path, _device("a", 502) + _device("b", 503, 1) + _device("c", 503, 2))
    new = _map(tmp_path, _device("a", 502) + _device("b", 503, 1, address=5) + _device("c", 503, 2))
    change = diff(old, new)
    assert [d.id for d in change.restarted] == ["b", "c"] and change.sharing == ["c"]
    assert change.unchanged == ["a"] and not change.added and not change.removed
    assert not change.mqtt and not change.pending and not change.empty


def test_added_removed_and_the_broker(tmp_path: Path) -> None:
    old = _map(tmp_path, _device("a", 502) + _device("gone", 504))
    new = _map(tmp_path, _device("a", 502) + _device("new", 505), port=1884)
    change = diff(old, new)
    assert [d.id for d in change.added] == ["new"] and change.removed == ["gone"]
    assert change.unchanged == ["a"] and change.restarted == []
    assert change.mqtt and change.config.mqtt.port == 1884


def test_sections_that_need_a_restart_keep_their_running_values(tmp_path: Path) -> None:
    old = _map(tmp_path, _device("a", 502))
    new = _map(
        tmp_path,
        _device("a", 502),
        mqtt=', topic: "{site}/{device}/{point}"',
        more="buffer: {max_size: 10MiB}",
    )
    change = diff(old, new)
    assert change.pending == ["buffer", "mqtt.topic"]
    assert change.config.buffer == old.buffer and change.config.mqtt.topic == old.mqtt.topic
    assert change.empty  # nothing else changed: nothing to apply now


def test_the_watcher_sees_included_and_secret_files(tmp_path: Path) -> None:
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "one.yaml").write_text("devices:\n" + _device("a", 502))
    (tmp_path / "pass").write_text("s3cret\n")
    path = tmp_path / "map.yaml"
    path.write_text(
        HEAD.format(port=1883, mqtt=', username: u, password: "${file:pass}"', more="")
        .replace("devices:\n", "include: lines/*.yaml\n")
    )  # fmt: skip
    config = load_config([path])
    assert {Path(f).name for f in config.sources} == {"map.yaml", "one.yaml", "pass"}

    async def changes() -> list[bool]:
        reloader = Reloader([path], load_config, _never, watch=True)
        reloader.watching(config)
        seen = [reloader._fingerprint()]
        (tmp_path / "pass").write_text("other-secret\n")
        seen.append(reloader._fingerprint())
        (tmp_path / "lines" / "two.yaml").write_text("devices:\n" + _device("b", 503))
        seen.append(reloader._fingerprint())
        (tmp_path / "gateway.log").write_text("a log beside the map is no reason to read it\n")
        seen.append(reloader._fingerprint())
        return [a != b for a, b in itertools.pairwise(seen)]

    assert asyncio.run(changes()) == [True, True, False]


async def _never(_config: Config) -> None:
    raise AssertionError("not applied in this test")


def test_a_file_changed_while_the_map_is_read_is_read_again(tmp_path: Path) -> None:
    """An editor still writing the map when the watcher reads it: the first read sees the
    half-written file, and the change that lands meanwhile is read too."""
    path = tmp_path / "map.yaml"
    path.write_text(HEAD.format(port=1883, mqtt="", more="") + _device("a", 502))
    versions: list[list[str]] = []

    def load(paths: Sequence[str | Path]) -> Config:
        config = load_config(paths)
        if not versions:  # the editor writes again while this first read goes on
            path.write_text(path.read_text() + _device("b", 503))
        versions.append([d.id for d in config.devices])
        return config

    async def watch() -> None:
        applied = asyncio.Event()

        async def apply(config: Config) -> None:
            if len(versions) == 2:
                applied.set()

        reloader = Reloader([path], load, apply, watch=True)
        task = asyncio.create_task(reloader.run())
        reloader.request()
        await asyncio.wait_for(applied.wait(), 10)
        task.cancel()
        assert reloader.outcomes == {"applied": 2}

    asyncio.run(watch())
    assert versions == [["a"], ["a", "b"]]
