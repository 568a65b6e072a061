"""Topic rendering. Topics are rendered once per point and cached: never formatted per reading."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config.schema import DeviceConfig, GatewaySection


class Topics:
    def __init__(
        self, template: str, gateway: GatewaySection, devices: Iterable[DeviceConfig]
    ) -> None:
        self._template = template
        self._gateway = gateway
        self._line = {d.id: d.line for d in devices}
        self._cache: dict[tuple[str, str], str] = {}
        h = gateway.hierarchy
        self.status = f"{h.enterprise}/{h.site}/{h.area}/_gateway/{gateway.id}/status"

    def point(self, device: str, point: str) -> str:
        key = (device, point)
        topic = self._cache.get(key)
        if topic is None:
            h = self._gateway.hierarchy
            topic = self._template.format(
                enterprise=h.enterprise,
                site=h.site,
                area=h.area,
                line=self._line[device],
                device=device,
                point=point,
                gateway=self._gateway.id,
            )
            self._cache[key] = topic
        return topic
