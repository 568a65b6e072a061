"""Topic rendering. Topics are rendered once per point and cached: never formatted per reading."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from gateway.config.schema import DeviceConfig, GatewaySection

COMMAND_SUFFIX = "/set"
# Template fields that vary between points; a topic level holding one is a wildcard level.
_VARYING = ("line", "device", "point")


class Topics:
    def __init__(
        self,
        template: str,
        gateway: GatewaySection,
        devices: Iterable[DeviceConfig],
        batch_template: str = "{enterprise}/{site}/{area}/{line}/{device}",
    ) -> None:
        self._template = template
        self._batch_template = batch_template
        self._gateway = gateway
        devices = list(devices)
        self._line = {d.id: d.line for d in devices}
        self._cache: dict[tuple[str, str], str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._points = {d.id: [p.name for p in d.points] for d in devices}
        self._by_topic: dict[str, tuple[str, str]] | None = None
        h = gateway.hierarchy
        self.status = f"{h.enterprise}/{h.site}/{h.area}/_gateway/{gateway.id}/status"

    def point(self, device: str, point: str) -> str:
        key = (device, point)
        topic = self._cache.get(key)
        if topic is None:
            topic = self._cache[key] = self._render(self._template, device, point)
        return topic

    def device(self, device: str) -> str:
        """Topic of a device's batched messages (``mqtt.batch: device``)."""
        key = (device, "")
        topic = self._cache.get(key)
        if topic is None:
            topic = self._cache[key] = self._render(self._batch_template, device, "")
        return topic

    def command_filter(self) -> str:
        """The one subscription that receives every point's commands: the point topic
        template with each level naming a line, device or point as ``+``, then ``/set``."""
        levels = []
        for level in self._template.split("/"):
            names = {name for _, name, _, _ in string.Formatter().parse(level) if name}
            levels.append("+" if names & set(_VARYING) else self._fixed(level))
        return "/".join(levels) + COMMAND_SUFFIX

    def command_target(self, topic: str) -> tuple[str, str, bool] | None:
        """``(device, point, exact)`` named by a command topic; None when it names neither.

        ``exact``: the topic is that point's own topic + ``/set``; a command on a topic with
        the right names in a wrong place (another line) names them but is not exact.
        """
        if not topic.endswith(COMMAND_SUFFIX):
            return None
        base = topic[: -len(COMMAND_SUFFIX)]
        if self._by_topic is None:
            self._by_topic = {
                self.point(device, point): (device, point)
                for device, points in self._points.items()
                for point in points
            }
        found = self._by_topic.get(base)
        if found is not None:
            return (*found, True)
        match = self._command_pattern().fullmatch(base)
        if match is None:
            return None
        return match.group("device"), match.group("point"), False

    def _command_pattern(self) -> re.Pattern[str]:
        pattern = self._pattern
        if pattern is None:
            parts, seen = [], set()
            for literal, name, _, _ in string.Formatter().parse(self._template):
                parts.append(re.escape(literal))
                if not name:
                    continue
                if name in ("device", "point"):
                    parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]*)")
                    seen.add(name)
                elif name == "line":
                    parts.append("[^/]*")
                else:
                    parts.append(re.escape(self._fixed("{" + name + "}")))
            pattern = self._pattern = re.compile("".join(parts))
        return pattern

    def _fixed(self, text: str) -> str:
        h = self._gateway.hierarchy
        return text.format(
            enterprise=h.enterprise, site=h.site, area=h.area, gateway=self._gateway.id
        )

    def device_status(self, device: str) -> str:
        """Retained connection state of a device: ``.../{line}/{device}/_status``."""
        h = self._gateway.hierarchy
        return f"{h.enterprise}/{h.site}/{h.area}/{self._line[device]}/{device}/_status"

    def _render(self, template: str, device: str, point: str) -> str:
        h = self._gateway.hierarchy
        return template.format(
            enterprise=h.enterprise,
            site=h.site,
            area=h.area,
            line=self._line[device],
            device=device,
            point=point,
            gateway=self._gateway.id,
        )
