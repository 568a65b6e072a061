"""One plant map, many gateways: ``--only SELECTOR`` runs the devices a selector picks, as a
gateway of its own (its id, and so its MQTT client id and status topic, and its buffer).

A selector is ``key=pattern`` terms joined by commas, all of which a device must match:
``line=line-1``, ``device=press-*``, ``shard=a``, ``protocol=s7,line=line-2``. Patterns are
shell globs (``*``, ``?``, ``[ab]``), matched case-sensitively.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from gateway.config.load import Config
from gateway.config.schema import DeviceConfig
from gateway.errors import GatewayError

KEYS = ("device", "line", "protocol", "shard")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    terms: tuple[tuple[str, str], ...]  # (key, pattern)

    def selects(self, device: DeviceConfig) -> bool:
        """Every term matches (a device without ``shard:`` is in no ``shard=`` selection)."""
        return all(
            (value := _value(device, key)) is not None and fnmatchcase(value, pattern)
            for key, pattern in self.terms
        )

    @property
    def label(self) -> str:
        """The shard's name in its gateway id and buffer folder: ``shard=a`` gives ``a``,
        any other selector its text made safe (``line=line-1`` gives ``line_line-1``)."""
        if len(self.terms) == 1 and self.terms[0][0] == "shard":
            pattern = self.terms[0][1]
            if not _UNSAFE.search(pattern) and not set(pattern) & set("*?[]"):
                return pattern
        return _UNSAFE.sub("_", self.text.replace("=", "_")).strip("_.") or "shard"


def parse_selector(text: str, option: str = "--only") -> Selector:
    """``GatewayError`` (one plain sentence, naming ``option``) for a selector that cannot be
    read."""
    terms = []
    for term in (t.strip() for t in text.split(",")):
        key, equals, pattern = term.partition("=")
        key, pattern = key.strip(), pattern.strip()
        if not equals or not pattern:
            raise GatewayError(f"{option} {text!r}: write key=pattern, e.g. line=line-1")
        if key not in KEYS:
            hint = (
                " (the area is the whole map's, not a device's: select by line)"
                if key == "area"
                else ""
            )
            raise GatewayError(
                f"{option} {text!r}: {key!r} is not a device key; use {', '.join(KEYS)}{hint}"
            )
        terms.append((key, pattern))
    return Selector(text, tuple(terms))


def select(config: Config, selector: Selector) -> Config:
    """The map's devices that ``selector`` picks, as a gateway of its own: ``gateway.id`` and
    an explicit ``mqtt.client_id`` get ``-<label>``, the disk buffer a folder ``<label>``.
    (Not a dot: RabbitMQ's MQTT plugin turns a dot in a topic into a level separator.)"""
    devices = [d for d in config.devices if selector.selects(d)]
    if not devices:
        raise GatewayError(f"--only {selector.text!r} selects no device of the map")
    label = selector.label
    gateway = config.gateway.model_copy(update={"id": f"{config.gateway.id}-{label}"})
    mqtt = config.mqtt
    if mqtt.client_id:
        mqtt = mqtt.model_copy(update={"client_id": f"{mqtt.client_id}-{label}"})
    buffer = config.buffer
    if buffer.mode != "memory":
        buffer = buffer.model_copy(update={"path": buffer.path / label})
    sparkplug = config.sparkplug
    if sparkplug is not None and sparkplug.edge_node_id is not None:
        sparkplug = sparkplug.model_copy(
            update={"edge_node_id": f"{sparkplug.edge_node_id}-{label}"}
        )
    return dataclasses.replace(
        config, gateway=gateway, mqtt=mqtt, buffer=buffer, sparkplug=sparkplug, devices=devices
    )


def coverage(config: Config, selectors: Sequence[Selector]) -> list[str]:
    """Sentences for the devices no selector picks, for those several pick (they would be
    read and published twice), and for selectors that pick nothing (their gateway would not
    start) or are given twice."""
    problems = []
    texts = [s.text for s in selectors]
    for at, selector in enumerate(selectors):
        if selector.text in texts[:at]:
            problems.append(f"shard {selector.text!r} is given twice")
        elif not any(selector.selects(device) for device in config.devices):
            problems.append(
                f"shard {selector.text!r} selects no device of the map: its gateway would not start"
            )
    selectors = list(dict.fromkeys(selectors))
    for device in config.devices:
        picked = [s.text for s in selectors if s.selects(device)]
        if not picked:
            problems.append(f"device {device.id!r} is in no shard")
        elif len(picked) > 1:
            problems.append(f"device {device.id!r} is in {len(picked)} shards: {', '.join(picked)}")
    return problems


def _value(device: DeviceConfig, key: str) -> str | None:
    if key == "device":
        return device.id
    value: str | None = getattr(device, key)
    return value
