"""Topic rendering. Topics are rendered once per point and cached: never formatted per reading."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config.schema import DeviceConfig, GatewaySection


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
        self._line = {d.id: d.line for d in devices}
        self._cache: dict[tuple[str, str], str] = {}
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
