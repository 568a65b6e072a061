"""Read a device map into plain Python data while remembering where every value came from.

Why not plain ``yaml.safe_load``: a validation error must point at ``file:line:col`` (ESPHome
style), and a value may come from an included file. We load with ruamel's round-trip loader (it
keeps positions), then flatten the tree into plain dicts/lists plus a ``SourceMap`` from the path
of each value (``("devices", 0, "points", 2, "type")``) to its position. Environment variables
``${VAR}`` / ``${VAR:-default}`` are expanded in every string here, once.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from gateway.errors import ConfigIssue

Loc = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    key: tuple[int, int]  # 1-based (line, column) of the key, or of the item for a list entry
    value: tuple[int, int]  # 1-based (line, column) of the value


@dataclass
class SourceMap:
    """Where each value of the loaded data came from."""

    positions: dict[Loc, Position] = field(default_factory=dict)

    def issue(self, data: Any, loc: Loc, message: str, *, at_key: bool = False) -> ConfigIssue:
        """Locate ``loc`` (a pydantic-style error location) as precisely as the data allows.

        Parts of ``loc`` that are not in the data (a missing key, a union tag) are skipped, so a
        missing key is reported at the mapping that lacks it.
        """
        path: list[str | int] = []
        node = data
        found_all = True
        for part in loc:
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_dict or in_list:
                node = node[part]
                path.append(part)
            else:
                found_all = False
        pos = self.positions.get(tuple(path)) or self.positions[()]
        # A missing key is reported at its parent's key; an unknown key at itself.
        line, col = pos.key if at_key or not found_all else pos.value
        return ConfigIssue(pos.file, line, col, message)


class _Loader:
    def __init__(self) -> None:
        self.yaml = YAML(typ="rt")
        self.yaml.allow_duplicate_keys = False
        self.issues: list[ConfigIssue] = []
        self.source_map = SourceMap()

    def load_file(self, path: Path) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self.issues.append(ConfigIssue(str(path), 1, 1, f"cannot read file: {exc.strerror}"))
            return None
        try:
            return self.yaml.load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            self.issues.append(ConfigIssue(str(path), line, col, f"YAML syntax error: {problem}"))
        except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad encoding)
            self.issues.append(ConfigIssue(str(path), 1, 1, f"YAML error: {exc}"))
        return None

    def flatten(self, node: Any, file: str, loc: Loc, key: tuple[int, int]) -> Any:
        """Plain data from a ruamel node, recording positions and expanding ``${VAR}``."""
        if isinstance(node, CommentedMap):
            out: dict[Any, Any] = {}
            for k, v in node.items():
                k_line, k_col = node.lc.key(k)
                v_line, v_col = node.lc.value(k)
                child = (*loc, k)
                self.source_map.positions[child] = Position(
                    file, (k_line + 1, k_col + 1), (v_line + 1, v_col + 1)
                )
                out[k] = self.flatten(v, file, child, (k_line + 1, k_col + 1))
            return out
        if isinstance(node, CommentedSeq):
            items = []
            for i, v in enumerate(node):
                line, col = node.lc.item(i)
                child = (*loc, i)
                self.source_map.positions[child] = Position(
                    file, (line + 1, col + 1), (line + 1, col + 1)
                )
                items.append(self.flatten(v, file, child, (line + 1, col + 1)))
            return items
        if isinstance(node, str):
            return self.expand_env(str(node), file, loc)
        return node

    def expand_env(self, text: str, file: str, loc: Loc) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is not None and (value != "" or default is None):
                return value
            if default is not None:
                return default
            pos = self.source_map.positions.get(loc)
            line, col = pos.value if pos else (1, 1)
            self.issues.append(
                ConfigIssue(
                    file,
                    line,
                    col,
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)",
                )
            )
            return ""

        return _ENV.sub(replace, text) if "${" in text else text


def load_yaml(paths: list[Path]) -> tuple[dict[str, Any], SourceMap, list[ConfigIssue]]:
    """Load the first file as the device map, and any further files as extra device lists.

    ``include:`` in the main file pulls device lists from other files (glob patterns, relative
    to the including file). An included file holds either a list of devices or a mapping with
    a single ``devices`` key.
    """
    loader = _Loader()
    main = paths[0]
    main_file = str(main)
    loader.source_map.positions[()] = Position(main_file, (1, 1), (1, 1))
    root_node = loader.load_file(main)
    if root_node is None:
        if not loader.issues:
            loader.issues.append(ConfigIssue(main_file, 1, 1, "the device map is empty"))
        return {}, loader.source_map, loader.issues
    if not isinstance(root_node, CommentedMap):
        loader.issues.append(
            ConfigIssue(
                main_file, 1, 1, "the device map must be a mapping with gateway, mqtt, devices"
            )
        )
        return {}, loader.source_map, loader.issues
    data: dict[str, Any] = loader.flatten(root_node, main_file, (), (1, 1))

    include = data.pop("include", None)
    patterns: list[tuple[str, Loc]] = []
    if isinstance(include, str):
        patterns.append((include, ("include",)))
    elif isinstance(include, list):
        patterns.extend((p, ("include", i)) for i, p in enumerate(include) if isinstance(p, str))
    elif include is not None:
        loader.issues.append(
            loader.source_map.issue(data, ("include",), "include must be a glob or a list of globs")
        )
    extra_files: list[tuple[Path, Loc | None]] = []
    for pattern, loc in patterns:
        matches = sorted(glob.glob(str(main.parent / pattern)))
        if not matches:
            pos = loader.source_map.positions[loc]
            loader.issues.append(
                ConfigIssue(main_file, *pos.value, f"include pattern {pattern!r} matches no file")
            )
        extra_files.extend((Path(m), loc) for m in matches)
    extra_files.extend((p, None) for p in paths[1:])

    devices = data.get("devices")
    if devices is None and extra_files:
        devices = data["devices"] = []
    for path, _loc in extra_files:
        _include_devices(loader, path, devices)
    return data, loader.source_map, loader.issues


def _include_devices(loader: _Loader, path: Path, devices: Any) -> None:
    file = str(path)
    node = loader.load_file(path)
    if node is None:
        return
    seq = node.get("devices") if isinstance(node, CommentedMap) else node
    if isinstance(node, CommentedMap) and set(node) != {"devices"}:
        loader.issues.append(
            ConfigIssue(
                file, 1, 1, "an included file holds a list of devices or only a devices key"
            )
        )
        return
    if not isinstance(seq, CommentedSeq) or not isinstance(devices, list):
        loader.issues.append(
            ConfigIssue(file, 1, 1, "an included file must hold a list of devices")
        )
        return
    for i, item in enumerate(seq):
        line, col = seq.lc.item(i)
        loc: Loc = ("devices", len(devices))
        loader.source_map.positions[loc] = Position(file, (line + 1, col + 1), (line + 1, col + 1))
        devices.append(loader.flatten(item, file, loc, (line + 1, col + 1)))
