"""Load and validate a device map, reporting every problem at once as ``file:line:col: sentence``.

Validation runs in layers so one mistake does not hide another: the top level, then each device
with its protocol's model, then the raw cross-field checks (duplicate ids, overlapping addresses),
which run even for devices that failed validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.config.schema import (
    BufferSection,
    CommandsSection,
    DeviceConfig,
    GatewaySection,
    HttpSection,
    MqttSection,
    RootSection,
    SparkplugSection,
)
from gateway.config.yaml_source import Loc, SourceMap, load_yaml
from gateway.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from gateway.adapter import Adapter


@dataclass(frozen=True)
class Config:
    """A validated device map."""

    gateway: GatewaySection
    mqtt: MqttSection
    devices: list[DeviceConfig]
    files: list[str]
    buffer: BufferSection = field(default_factory=BufferSection)
    commands: CommandsSection = field(default_factory=CommandsSection)
    http: HttpSection | None = field(default_factory=HttpSection)
    # Every file read: the map, included device lists, secret files (``run --watch`` looks here).
    sources: tuple[str, ...] = ()
    sparkplug: SparkplugSection | None = None


def read_map(paths: Sequence[str | Path], adapters: Sequence[Adapter]) -> Config:
    """Load a device map (first file) plus extra device-list files, each device validated by
    its protocol's adapter; raise ``ConfigError``. (``gateway.registry.load_config`` passes the
    registered adapters.)"""
    protocols = {key: adapter for adapter in adapters for key in adapter.models}
    files = [Path(p) for p in paths]
    data, source_map, issues = load_yaml(files)
    if issues and not data:
        raise ConfigError(_redacted(issues, source_map.secrets))

    root: RootSection | None = None
    try:
        root = RootSection.model_validate(data, context={"base_dir": files[0].parent})
    except ValidationError as exc:
        issues += _issues_from(exc, RootSection, (), data, source_map)

    devices: list[DeviceConfig] = []
    indexes: list[int] = []  # each valid device's position in the map
    raw_devices = data.get("devices")
    if isinstance(raw_devices, list):
        seen_ids: dict[str, int] = {}
        for index, raw in enumerate(raw_devices):
            if not isinstance(raw, dict):
                continue
            device = _validate_device(
                raw, index, data, source_map, issues, files[0].parent, protocols
            )
            if device is not None:
                devices.append(device)
                indexes.append(index)
            device_id = raw.get("id")
            if isinstance(device_id, str):
                if device_id in seen_ids:
                    issues.append(
                        source_map.issue(
                            data,
                            ("devices", index, "id"),
                            f"duplicate device id {device_id!r} "
                            f"(first used by device #{seen_ids[device_id] + 1})",
                        )
                    )
                else:
                    seen_ids[device_id] = index
    for index, loc, message in _across_devices(devices, indexes, protocols):
        issues.append(source_map.issue(data, ("devices", index, *loc), message))
    if issues or root is None:
        secrets = source_map.secrets | set(_secret_values(data))
        raise ConfigError(_redacted(issues, secrets))
    # The buffer folder is relative to the map's folder, like every path in a map.
    buffer = root.buffer.relative_to(files[0].parent)
    files_read = [str(f) for f in files]
    return Config(
        root.gateway,
        root.mqtt,
        devices,
        files_read,
        buffer,
        root.commands,
        root.http,
        tuple(dict.fromkeys(source_map.files)),
        root.sparkplug,
    )


# Keys whose values are secrets wherever they appear in a map.
SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)


def _secret_values(data: Any) -> Iterator[str]:
    """The text values of secret keys anywhere in the map."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, str):
                yield value
            else:
                yield from _secret_values(value)
    elif isinstance(data, list):
        for item in data:
            yield from _secret_values(item)


def _redacted(issues: list[ConfigIssue], secrets: set[str]) -> list[ConfigIssue]:
    """The issues with every secret value masked: an error message may quote a value."""
    if not secrets:
        return issues
    # Longest first, so a secret that contains another is masked whole.
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    out = []
    for issue in issues:
        message = issue.message
        for secret in ordered:
            message = message.replace(repr(secret), "'***'")
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        out.append(dataclasses.replace(issue, message=message))
    return out


def _validate_device(
    raw: dict[str, Any],
    index: int,
    data: dict[str, Any],
    source_map: SourceMap,
    issues: list[ConfigIssue],
    base_dir: Path,
    protocols: Mapping[str, Adapter],
) -> DeviceConfig | None:
    loc: Loc = ("devices", index)
    protocol = raw.get("protocol")
    entry = protocols.get(protocol) if isinstance(protocol, str) else None
    if entry is None or not isinstance(protocol, str):
        known = ", ".join(protocols)
        if protocol is None:
            message = f"device needs a protocol: one of {known}"
        else:
            message = f"unknown protocol {protocol!r}{_did_you_mean(str(protocol), protocols)}"
            message += f"; known protocols: {known}"
        issues.append(source_map.issue(data, (*loc, "protocol"), message))
        return None
    for check in (_duplicate_point_names, *entry.raw_checks):
        for sub_loc, message in check(raw):
            issues.append(source_map.issue(data, (*loc, *sub_loc), message))
    model = entry.models[protocol]
    try:
        # Paths in a device (certificates, ...) are relative to the map's folder.
        return model.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        issues.extend(_issues_from(exc, model, loc, data, source_map))
        return None


def _across_devices(
    devices: list[DeviceConfig], indexes: list[int], protocols: Mapping[str, Adapter]
) -> list[tuple[int, Loc, str]]:
    """Each protocol family's checks across its devices (e.g. units sharing one link)."""
    families: dict[Any, list[tuple[int, DeviceConfig]]] = {}
    for index, device in zip(indexes, devices, strict=True):
        check = protocols[device.protocol].check_devices
        if check is not None:
            families.setdefault(check, []).append((index, device))
    problems = []
    for check, members in families.items():
        for position, loc, message in check([d for _, d in members]):
            problems.append((members[position][0], loc, message))
    return problems


def _duplicate_point_names(raw_device: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Point names are topic levels: two points of one device may not share one."""
    points = raw_device.get("points")
    seen: set[str] = set()
    problems: list[tuple[Loc, str]] = []
    for index, point in enumerate(points if isinstance(points, list) else []):
        name = point.get("name") if isinstance(point, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(((("points", index, "name")), f"duplicate point name {name!r}"))
            seen.add(name)
    return problems


def _issues_from(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: Loc,
    data: dict[str, Any],
    source_map: SourceMap,
) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors():
        loc: Loc = (*prefix, *error["loc"])
        message, at_key = _message(error, model)
        ctx_error = error.get("ctx", {}).get("error")
        field = getattr(ctx_error, "field", None)
        if isinstance(field, str):
            loc = (*loc, *(int(p) if p.isdigit() else p for p in field.split(".")))
        issues.append(source_map.issue(data, loc, message, at_key=at_key))
    return issues


def _message(error: ErrorDetails, model: type[BaseModel]) -> tuple[str, bool]:
    """A plain sentence for one pydantic error, and whether to point at the key (not the value)."""
    kind = error["type"]
    loc = error["loc"]
    name = str(loc[-1]) if loc else "value"
    if name == "[key]" and len(loc) >= 2:  # a mapping key of the wrong type
        name = f"key {loc[-2]!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's, a point's
        allowed = _fields_at(model, loc[:-1])
        hint = _did_you_mean(name, allowed)
        return f"unknown key {name!r}{hint}", True
    if kind == "missing":
        return f"missing required key {name!r}", True
    if kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'|(\d+)", error.get("ctx", {}).get("expected", ""))
        choices = [a or b for a, b in expected]
        hint = _did_you_mean(str(error["input"]), choices)
        return f"{name}: {error['input']!r} is not one of {', '.join(choices)}{hint}", False
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in ("value_error", "assertion_error"):
        return msg, False
    return f"{name}: {msg[0].lower()}{msg[1:]}", False


def _did_you_mean(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model accepts at ``loc``, for "did you mean" on unknown keys."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else Any
        elif (fields := _fields_of(current)) is not None:
            field = fields.get(part)
            if field is None:
                return []
            current = field.annotation
        else:
            return []
    return list(_fields_of(_unwrap(current)) or ())


def _fields_of(tp: Any) -> dict[str, FieldInfo] | None:
    """The fields of a model or of a pydantic dataclass (points); None for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    if is_pydantic_dataclass(tp):
        return tp.__pydantic_fields__
    return None


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``, so the walk in ``_fields_at`` follows optional sub-models."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return members[0] if len(members) == 1 else tp
    return tp
