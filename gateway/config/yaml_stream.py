"""The quick way to read a device map that is fine: plain data straight from libyaml's events.

Why: the careful reader (``yaml_source``) composes a node tree and records the position of every
value, so that an error can name ``file:line:col``. For a big map that is a lot of
short-lived objects, and Python keeps most of that memory after they are gone (the long-lived
config objects are allocated in between and pin the pages). A map that is fine needs no
positions, so this reader builds the data directly from the event stream, value by value, and
nothing else. The moment anything is unusual (a YAML error, a duplicate key, an unset
environment variable, an odd include) it gives up and returns ``None``: the careful reader then
reads the map again and reports the problem. When validation finds a mistake later, the
positions are computed then (see ``SourceMap``).

The data is the same as the careful reader's: YAML 1.2 booleans, merge keys, ``${VAR}``
expansion in every string, aliases copied.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class GiveUp(Exception):
    """Something the careful reader should look at (and report)."""


# Aliases may copy at most this many values, or ten times the values written out: a few
# hundred bytes of nested aliases (an "alias bomb") would otherwise expand to gigabytes.
ALIAS_FLOOR = 100_000
ALIAS_FACTOR = 10
MAX_FILE = 64 * 1024 * 1024  # bytes of one YAML file


def alias_limit(written: int) -> int:
    return max(ALIAS_FLOOR, ALIAS_FACTOR * written)


class _Builder:
    def __init__(self, text: str, loader_class: type[Any], expand: Callable[[str], str]) -> None:
        self.loader = loader_class(text)
        self.expand = expand  # str -> str; raises GiveUp for an unset variable
        self.anchors: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}  # values in each anchored value, copies included
        self.built = 0  # values built, copies included
        self.copied = 0  # values copied by aliases

    def document(self) -> Any:
        loader = self.loader
        try:
            loader.get_event()  # stream start
            if loader.check_event(yaml.StreamEndEvent):
                return None
            loader.get_event()  # document start
            value = self.value(loader.get_event())
            loader.get_event()  # document end
            if not loader.check_event(yaml.StreamEndEvent):
                raise GiveUp  # several documents: the careful reader says so
            return value
        finally:
            loader.dispose()

    def value(self, event: Any) -> Any:
        start = self.built
        if isinstance(event, yaml.ScalarEvent):
            out = self.scalar(event)
        elif isinstance(event, yaml.MappingStartEvent):
            out = self.mapping()
        elif isinstance(event, yaml.SequenceStartEvent):
            get, value = self.loader.get_event, self.value
            out = []
            while not isinstance(item := get(), yaml.SequenceEndEvent):
                out.append(value(item))
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise GiveUp
            size = self.sizes[event.anchor]
            self.copied += size
            self.built += size
            if self.copied > alias_limit(self.built - self.copied):
                raise GiveUp  # the careful reader says where
            return copy.deepcopy(self.anchors[event.anchor])
        else:
            raise GiveUp
        self.built += 1
        if event.anchor is not None:
            self.anchors[event.anchor] = out
            self.sizes[event.anchor] = self.built - start
        return out

    def scalar(self, event: Any) -> Any:
        loader = self.loader
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == "tag:yaml.org,2002:str":
            scalar: str = event.value
            if "${" in scalar:
                return self.expand(scalar)
            # Keys and words like "holding" or "float32" repeat for every point: one copy each
            # (a 100,000-point map holds half a million of them).
            return sys.intern(scalar) if len(scalar) <= 32 else scalar
        constructor = loader.yaml_constructors.get(tag)
        if constructor is None:
            raise GiveUp
        return constructor(loader, yaml.ScalarNode(tag, event.value, style=event.style))

    def mapping(self) -> dict[Any, Any]:
        get, value = self.loader.get_event, self.value
        own: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        while not isinstance(event := get(), yaml.MappingEndEvent):
            if isinstance(event, yaml.ScalarEvent) and "${" in event.value:
                raise GiveUp  # keys are not expanded (the careful reader keeps them as written)
            if (
                isinstance(event, yaml.ScalarEvent)
                and event.value == "<<"
                and event.tag is None
                and event.implicit[0]
            ):
                item = value(get())
                for source in item if isinstance(item, list) else [item]:
                    if not isinstance(source, dict):
                        raise GiveUp
                    for k, v in source.items():
                        merged.setdefault(k, v)  # the first merged mapping with a key wins
                continue
            key = value(event)
            item = value(get())
            if key in own:
                raise GiveUp  # duplicate key: reported with its line by the careful reader
            own[key] = item
        if not merged:
            return own
        return {**{k: v for k, v in merged.items() if k not in own}, **own}


def read_quickly(path: Path, loader_class: type[Any], expand: Callable[[str], str]) -> Any:
    """The data of one YAML file, or raise ``GiveUp`` / ``OSError`` / ``yaml.YAMLError``."""
    if path.stat().st_size > MAX_FILE:
        raise GiveUp
    text = path.read_text(encoding="utf-8")
    return _Builder(text, loader_class, expand).document()


def load_quickly(
    paths: list[Path],
    loader_class: type[Any],
    expand: Callable[[str], str],
    include_files: Callable[[Path, Any, Any], list[Path] | None],
    read: list[Path],
) -> dict[str, Any] | None:
    """The whole device map (main file plus included device lists), or ``None`` if unusual.

    ``expand(text)`` expands ``${VAR}``; ``include_files(main, include, include_folders)``
    lists included files (``None`` when the include entry is wrong). ``read`` gets every file
    read.
    """
    try:
        read.append(paths[0])
        data = read_quickly(paths[0], loader_class, expand)
        if not isinstance(data, dict):
            return None
        extra = include_files(
            paths[0], data.pop("include", None), data.pop("include_folders", None)
        )
        if extra is None:
            return None
        extra.extend(paths[1:])
        if extra and data.get("devices") is None:
            data["devices"] = []
        for path in extra:
            read.append(path)
            included = read_quickly(path, loader_class, expand)
            if isinstance(included, dict) and list(included) == ["devices"]:
                included = included["devices"]
            if not isinstance(included, list) or not isinstance(data["devices"], list):
                return None
            data["devices"].extend(included)
        return data
    except (GiveUp, OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError):
        return None
