"""The quick map reader returns exactly the careful reader's data, or gives the map back to it.

A map that is fine is read from libyaml's events without positions (memory and start-up time
of big maps); anything unusual must go to the careful reader, which reports it with its line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.yaml_source import (
    Expander,
    _give_up,
    _load_carefully,
    _quick_includes,
    _YamlLoader,
)
from gateway.config.yaml_stream import load_quickly
from gateway.errors import ConfigError
from gateway.registry import load_config
from tests.helpers import ROOT

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MAPS = sorted(ROOT.glob("configs/*.yaml")) + sorted(CONFIGS.glob("*/*.yaml"))
# Broken maps whose problem is in the YAML itself (not in what it says): the careful reader's.
YAML_PROBLEMS = {
    "alias_bomb", "duplicate_key", "empty", "env_missing", "include_bad", "include_outside",
    "merge_bomb",
    "yaml_syntax",
}  # fmt: skip


def _quick(path: Path) -> object:
    expander = Expander(path.parent, set(), [])
    return load_quickly(
        [path], _YamlLoader, lambda text: expander.expand(text, _give_up), _quick_includes, []
    )


@pytest.mark.parametrize("path", MAPS, ids=[f"{p.parent.name}/{p.stem}" for p in MAPS])
def test_quick_reader_reads_what_the_careful_reader_reads(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACTORY_GATEWAY_TEST_UNSET_VARIABLE", raising=False)
    quick = _quick(path)
    careful, _, issues = _load_carefully([path])
    if path.stem in YAML_PROBLEMS:
        assert quick is None
        assert issues
    else:
        assert quick is not None
        assert issues == []
        # repr, not ==: True == 1 and 1 == 1.0, but a map must keep the type it was written in
        assert repr(quick) == repr(careful)


MAP_HEAD = "gateway: {id: gw, hierarchy: {enterprise: e, site: s, area: a}}\n"


def test_anchors_merges_booleans_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FG_QUICK_HOST", "10.1.2.3")
    monkeypatch.delenv("FG_QUICK_UNSET", raising=False)
    path = tmp_path / "map.yaml"
    path.write_text(
        MAP_HEAD
        + """defaults: &defaults {line: "${FG_QUICK_LINE:-line-9}", protocol: modbus-tcp}
devices:
  - &press
    <<: *defaults
    id: left
    host: ${FG_QUICK_HOST}
    points: [{name: off, table: coil, address: 0}, {name: "yes", table: coil, address: 1}]
    flags: [on, true, False, 0x1F, 1.5e+3, ~, 2026-01-01]
  - <<: [*press, {port: 1502}]
    id: right
"""
    )
    quick = _quick(path)
    careful, _, issues = _load_carefully([path])
    assert issues == []
    assert repr(quick) == repr(careful)
    assert isinstance(quick, dict)
    left, right = quick["devices"]
    assert left["line"] == "line-9" and left["host"] == "10.1.2.3"
    assert left["flags"][:5] == ["on", True, False, 31, 1500.0]
    assert (right["id"], right["port"], right["host"]) == ("right", 1502, "10.1.2.3")
    left["points"].append("changed")
    assert len(right["points"]) == 2  # an alias is a copy, as with the careful reader


@pytest.mark.parametrize(
    "body",
    [
        "devices: []\ndevices: []\n",  # duplicate key
        "devices: ${FG_QUICK_UNSET}\n",  # unset variable without a default
        "devices: *nowhere\n",  # unknown alias
        "devices: [\n",  # syntax error
        "devices: []\n---\ndevices: []\n",  # two documents
        "include: missing/*.yaml\ndevices: []\n",  # include matching nothing
        "${FG_QUICK_KEY:-devices}: []\n",  # a key is never expanded
    ],
)
def test_anything_unusual_goes_to_the_careful_reader(
    body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FG_QUICK_UNSET", raising=False)
    path = tmp_path / "map.yaml"
    path.write_text(MAP_HEAD + body)
    assert _quick(path) is None


def test_merged_mappings_that_share_a_key_give_the_first_one_s_value(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(MAP_HEAD + "a: &a {x: 1}\nb: &b {x: 2, y: 3}\nc: {<<: [*a, *b]}\ndevices: []\n")
    quick = _quick(path)
    careful, _, issues = _load_carefully([path])
    assert issues == []
    assert isinstance(quick, dict) and quick == careful
    assert quick["c"] == {"x": 1, "y": 3}  # YAML's merge: the first mapping with a key wins


def test_an_error_in_a_quickly_read_map_still_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        MAP_HEAD
        + """devices:
  - id: d1
    line: l1
    protocol: modbus-tcp
    host: 127.0.0.1
    points:
      - {name: a, table: holding, address: 0, type: int16}
      - {name: b, table: holding, address: 1, type: float33}
"""
    )
    assert _quick(path) is not None  # the YAML is fine: only validation finds the mistake
    with pytest.raises(ConfigError) as info:
        load_config([path])
    [issue] = info.value.issues
    assert (issue.line, issue.column) == (9, 53)
    assert "float33" in issue.message


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
_data = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(devices=_data, flow=st.booleans())
def test_quick_and_careful_readers_agree_on_any_data(devices: object, flow: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "map.yaml"
        text = yaml.safe_dump({"devices": devices}, default_flow_style=flow, allow_unicode=True)
        path.write_text(text, encoding="utf-8")
        quick = _quick(path)
        careful, _, issues = _load_carefully([path])
        if quick is None:  # only for what the careful reader objects to (e.g. "${" in a key)
            assert issues or "${" in text
        else:
            assert repr(quick) == repr(careful)
