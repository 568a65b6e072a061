"""Read a device map into plain Python data while remembering where every value came from.

Why not plain ``yaml.safe_load``: a validation error must point at ``file:line:col`` (ESPHome
style), and a value may come from an included file. We compose the YAML into a node tree (each
node knows its position; libyaml's C parser when installed, as a big map must load in seconds,
which a pure-Python round-trip loader cannot), then flatten it into plain
dicts/lists plus a ``SourceMap`` from the path of each value (``("devices", 0, "points", 2,
"type")``) to its position. Environment variables ``${VAR}`` / ``${VAR:-default}`` and secret
files ``${file:PATH}`` are expanded in every string here, once; what came from a secret (a file,
or a variable named like one) is remembered, so no error message ever prints it. Booleans follow
YAML 1.2 (``true``/``false`` only).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml's parser when PyYAML was built with it: many times faster
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

from gateway.config.yaml_stream import MAX_FILE, GiveUp, alias_limit, load_quickly
from gateway.errors import ConfigIssue

Loc = tuple[str | int, ...]

_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"
_ENV = re.compile(r"\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?)\}")
# A variable whose name says it holds a secret: its value is never printed.
_SECRET_NAME = re.compile(r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    key: tuple[int, int]  # 1-based (line, column) of the key, or of the item for a list entry
    value: tuple[int, int]  # 1-based (line, column) of the value


class SourceMap:
    """Where each value of the loaded data came from.

    A map read quickly (``yaml_stream``) has no positions until an error needs one: then
    ``build`` reads the files again, carefully, and the positions are known from then on.
    """

    def __init__(
        self,
        positions: dict[Loc, Position] | None = None,
        build: Callable[[], dict[Loc, Position]] | None = None,
        secrets: set[str] | None = None,
        files: list[str] | None = None,
    ) -> None:
        self._positions = positions if positions is not None else {}
        self._build = build
        self.secrets: set[str] = secrets if secrets is not None else set()  # never printed
        self.files: list[str] = files if files is not None else []  # every file read

    @property
    def positions(self) -> dict[Loc, Position]:
        if self._build is not None:
            build, self._build = self._build, None
            self._positions = build()
        return self._positions

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
            elif not (isinstance(part, int) and not isinstance(node, (dict, list))):
                found_all = False  # (an item of a list given as one value is that value)
        pos = self.positions.get(tuple(path)) or self.positions[()]
        # A missing key is reported at its parent's key; an unknown key at itself.
        line, col = pos.key if at_key or not found_all else pos.value
        return ConfigIssue(pos.file, line, col, message)


class _YamlLoader(_BaseLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1's yes/no/on/off would turn a point named
    ``off`` or a value ``no`` into a bool behind the user's back."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _AliasBomb(Exception):
    """Aliases copy far more values than the file writes out."""

    def __init__(self, loc: Loc) -> None:
        self.loc = loc


class _Loader:
    def __init__(self, base: Path) -> None:
        self.issues: list[ConfigIssue] = []
        self.source_map = SourceMap()
        self.constructor = yaml.constructor.SafeConstructor()
        self.expander = Expander(base, self.source_map.secrets, self.source_map.files)
        self.seen: set[int] = set()  # nodes flattened (an alias shares its anchor's node)
        self.copied = 0  # nodes flattened again, or merged, through an alias
        self.expanded: dict[int, str] = {}  # a scalar node's text after ${...}, once per node

    def load_file(self, path: Path) -> yaml.Node | None:
        self.source_map.files.append(str(path))
        try:
            if path.stat().st_size > MAX_FILE:
                message = f"the file is larger than {MAX_FILE // 1024 // 1024} MiB"
                self.issues.append(ConfigIssue(str(path), 1, 1, message))
                return None
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.issues.append(ConfigIssue(str(path), 1, 1, f"cannot read file: {reason}"))
            return None
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=_YamlLoader)
            return node
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            self.issues.append(ConfigIssue(str(path), line, col, f"YAML syntax error: {problem}"))
        except yaml.YAMLError as exc:
            self.issues.append(ConfigIssue(str(path), 1, 1, f"YAML error: {exc}"))
        return None

    def flatten_bounded(self, node: yaml.Node, file: str, loc: Loc) -> Any:
        """``flatten``, or ``None`` with an issue when aliases expand it beyond bounds."""
        try:
            return self.flatten(node, file, loc)
        except _AliasBomb as bomb:
            # Where it happens: the top-level key, or the device, whose value holds the aliases.
            top = bomb.loc[:2] if bomb.loc[:1] == ("devices",) else bomb.loc[:1]
            at = self.source_map.positions.get(top)
            self.issues.append(
                ConfigIssue(
                    at.file if at else file,
                    *(at.key if at else (1, 1)),
                    f"aliases copy more than {alias_limit(len(self.seen)):,} values "
                    "(ten times what the file writes out): write the values out, or nest "
                    "fewer aliases",
                )
            )
            return None

    def flatten(self, node: yaml.Node, file: str, loc: Loc) -> Any:
        """Plain data from a node tree, recording positions and expanding ``${VAR}``."""
        if id(node) in self.seen:
            self.charge(1, loc)
        else:
            self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in self._pairs(node, file, loc):
                if not isinstance(key_node, yaml.ScalarNode):
                    k = key_node.start_mark
                    message = "a key is a plain value (a word or a number), not a list or mapping"
                    self.issues.append(ConfigIssue(file, k.line + 1, k.column + 1, message))
                    continue
                key = self.constructor.construct_object(key_node)
                if key in out:
                    k = key_node.start_mark
                    self.issues.append(
                        ConfigIssue(file, k.line + 1, k.column + 1, f"duplicate key {key!r}")
                    )
                    continue
                child = (*loc, key)
                k, v = key_node.start_mark, value_node.start_mark
                self.source_map.positions[child] = Position(
                    file, (k.line + 1, k.column + 1), (v.line + 1, v.column + 1)
                )
                out[key] = self.flatten(value_node, file, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                m = item.start_mark
                child = (*loc, i)
                self.source_map.positions[child] = Position(
                    file, (m.line + 1, m.column + 1), (m.line + 1, m.column + 1)
                )
                items.append(self.flatten(item, file, child))
            return items
        value = self.constructor.construct_object(node)
        if isinstance(value, str) and "${" in value:
            # An alias copies the expanded text; a secret file is read once.
            if id(node) not in self.expanded:
                self.expanded[id(node)] = self.expand_env(value, file, loc)
            return self.expanded[id(node)]
        return value

    def charge(self, copies: int, loc: Loc) -> None:
        """Count values an alias copies; raise ``_AliasBomb`` beyond the bound."""
        self.copied += copies
        if self.copied > alias_limit(len(self.seen)):
            raise _AliasBomb(loc)

    def expand_env(self, value: str, file: str, loc: Loc) -> str:
        def unset(message: str) -> str:
            pos = self.source_map.positions.get(loc)
            line, col = pos.value if pos else (1, 1)
            self.issues.append(ConfigIssue(file, line, col, message))
            return ""

        return self.expander.expand(value, unset) if "${" in value else value

    def _pairs(
        self, node: yaml.MappingNode, file: str, loc: Loc
    ) -> list[tuple[yaml.Node, yaml.Node]]:
        """The mapping's pairs, with YAML merge keys (``<<: *defaults``) applied."""
        own = [(k, v) for k, v in node.value if k.tag != _MERGE]
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    m = source.start_mark
                    self.issues.append(
                        ConfigIssue(file, m.line + 1, m.column + 1, "<< merges only mappings")
                    )
                    continue
                pairs = self._pairs(source, file, loc)
                self.charge(len(pairs), loc)
                merged.extend(pairs)
        # The mapping's own keys win, then the first merged mapping that has the key (YAML).
        taken = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        first: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in merged:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in taken:
                    continue
                taken.add(key_node.value)
            first.append((key_node, value_node))
        return first + own


class Expander:
    """``${VAR}``, ``${VAR:-default}`` and ``${file:PATH}`` (relative to ``base``, the map's
    folder; the file's text without its final newline, as Docker secrets and systemd
    credentials hold it). Secret values are added to ``secrets``."""

    def __init__(self, base: Path, secrets: set[str], files: list[str]) -> None:
        self.base = base
        self.secrets = secrets
        self.files = files  # secret files read are added

    def expand(self, text: str, unset: Callable[[str], str]) -> str:
        """``unset(message)`` for a variable with neither a value nor a default (an empty value
        counts as unset when there is a default) or a file that cannot be read."""

        def replace(match: re.Match[str]) -> str:
            path, name, default = match.group(1, 2, 3)
            if path is not None:
                return self._file(path.strip(), unset)
            value = os.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    return unset(
                        f"environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give a default)"
                    )
                value = default
            if _SECRET_NAME.search(name) and value:
                self.secrets.add(value)
            return value

        return _ENV.sub(replace, text)

    def _file(self, path: str, unset: Callable[[str], str]) -> str:
        file = self.base / os.path.expandvars(path)
        self.files.append(str(file))
        try:
            with file.open("rb") as opened:
                data = opened.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            return unset(f"cannot read the secret file {file}: {exc.strerror}")
        if len(data) > MAX_SECRET_FILE:
            return unset(f"the secret file {file} is larger than {MAX_SECRET_FILE // 1024} KiB")
        try:
            value = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            return unset(f"the secret file {file} is not UTF-8 text")
        if value:
            self.secrets.add(value)
        return value


def _give_up(_message: str) -> str:
    raise GiveUp


def load_yaml(paths: list[Path]) -> tuple[dict[str, Any], SourceMap, list[ConfigIssue]]:
    """Load the first file as the device map, and any further files as extra device lists.

    ``include:`` in the main file pulls device lists from other files (glob patterns, relative
    to the including file). An included file holds either a list of devices or a mapping with
    a single ``devices`` key.

    A map that reads without surprises is read quickly, its positions left for later; any
    surprise and it is read carefully, which reports the problem where it is.
    """
    secrets: set[str] = set()
    files: list[str] = []
    expander = Expander(paths[0].parent, secrets, files)
    read: list[Path] = []
    data = load_quickly(
        paths, _YamlLoader, lambda text: expander.expand(text, _give_up), _quick_includes, read
    )
    if data is not None:
        build = lambda: _load_carefully(paths)[1].positions  # noqa: E731
        files += map(str, read)
        return data, SourceMap(build=build, secrets=secrets, files=files), []
    return _load_carefully(paths)


def _quick_includes(main: Path, include: Any, folders: Any) -> list[Path] | None:
    """The files an ``include:`` entry names, or ``None`` if it is wrong in any way."""
    if include is None:
        return [] if folders is None else None
    patterns = [include] if isinstance(include, str) else include
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        return None
    allowed = _allowed_folders(main, folders)
    if allowed is None:
        return None
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(main.parent / pattern)))
        if not matches or not all(_inside(Path(m), allowed) for m in matches):
            return None
        files.extend(Path(m) for m in matches)
    return files


def _allowed_folders(main: Path, folders: Any) -> list[Path] | None:
    """Where included files may be: the map's folder tree and ``include_folders``."""
    if folders is None:
        folders = []
    if isinstance(folders, str):
        folders = [folders]
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        return None
    return [(main.parent / f).resolve() for f in ["", *folders]]


def _inside(path: Path, folders: list[Path]) -> bool:
    """``path`` (links followed) lies in one of ``folders``."""
    real = path.resolve()
    return any(real.is_relative_to(folder) for folder in folders)


def _load_carefully(
    paths: list[Path],
) -> tuple[dict[str, Any], SourceMap, list[ConfigIssue]]:
    main = paths[0]
    loader = _Loader(main.parent)
    main_file = str(main)
    loader.source_map.positions[()] = Position(main_file, (1, 1), (1, 1))
    root_node = loader.load_file(main)
    if root_node is None:
        if not loader.issues:
            loader.issues.append(ConfigIssue(main_file, 1, 1, "the device map is empty"))
        return {}, loader.source_map, loader.issues
    if not isinstance(root_node, yaml.MappingNode):
        loader.issues.append(
            ConfigIssue(
                main_file, 1, 1, "the device map must be a mapping with gateway, mqtt, devices"
            )
        )
        return {}, loader.source_map, loader.issues
    data: dict[str, Any] | None = loader.flatten_bounded(root_node, main_file, ())
    if data is None:
        return {}, loader.source_map, loader.issues

    include = data.pop("include", None)
    allowed = _allowed_folders(main, data.get("include_folders"))
    if allowed is None:
        loader.issues.append(
            loader.source_map.issue(
                data, ("include_folders",), "include_folders must be a folder or a list of them"
            )
        )
        allowed = _allowed_folders(main, None) or []
    data.pop("include_folders", None)
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
        for match in map(Path, matches):
            if _inside(match, allowed):
                extra_files.append((match, loc))
                continue
            pos = loader.source_map.positions[loc]
            loader.issues.append(
                ConfigIssue(
                    main_file,
                    *pos.value,
                    f"include {pattern!r}: {match} is outside the map's folder; list its "
                    "folder under include_folders to allow it",
                )
            )
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
    seq: yaml.Node | None = node
    if isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        if keys != ["devices"]:
            loader.issues.append(
                ConfigIssue(
                    file, 1, 1, "an included file holds a list of devices or only a devices key"
                )
            )
            return
        seq = node.value[0][1]
    if not isinstance(seq, yaml.SequenceNode) or not isinstance(devices, list):
        loader.issues.append(
            ConfigIssue(file, 1, 1, "an included file must hold a list of devices")
        )
        return
    for item in seq.value:
        m = item.start_mark
        loc: Loc = ("devices", len(devices))
        loader.source_map.positions[loc] = Position(
            file, (m.line + 1, m.column + 1), (m.line + 1, m.column + 1)
        )
        device = loader.flatten_bounded(item, file, loc)
        if device is None:
            return
        devices.append(device)
