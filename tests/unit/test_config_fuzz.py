"""No device map, however broken, makes the loader raise anything but ConfigError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.registry import load_config
from tests.helpers import ROOT

BASE = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["holding", "coil", "float32", "string", "1s", "${X}", "modbus-tcp", "-1ms"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(BASE)[1:]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(PATHS), values, st.sampled_from(["set", "delete", "rename"])),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_maps_give_config_errors_only(tmp_path: Path, mutations: list[Any]) -> None:
    data = copy.deepcopy(BASE)
    for path, value, action in mutations:
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            key = path[-1]
            if action == "set":
                parent[key] = value
            elif action == "delete":
                del parent[key]
            elif isinstance(parent, dict):
                parent[f"{key}x"] = parent.pop(key)
        except (KeyError, IndexError, TypeError):
            continue
    target = tmp_path / "map.yaml"
    target.write_text(json.dumps(data))  # JSON is YAML
    try:
        load_config([target])
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.line >= 1 and issue.column >= 1 and issue.message
