"""The lighter PUBACK decoder gives paho what paho's own decoder gives."""

from __future__ import annotations

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from gateway.mqtt.paho_pubacks import lighten_pubacks


def _same(packet: bytes, protocol: MQTTProtocolVersion) -> None:
    light = _packet.decode_puback(0x40, packet, protocol)
    own = _packet.decode_puback.original(0x40, packet, protocol)  # type: ignore[attr-defined]
    assert light.mid == own.mid
    assert light.reason == own.reason and light.reason.getName() == own.reason.getName()
    assert light.properties.json() == own.properties.json()


def test_plain_and_mqtt5_pubacks_decode_as_paho_decodes_them() -> None:
    lighten_pubacks()
    lighten_pubacks()  # once only: a second call does not wrap the wrapper
    assert not hasattr(_packet.decode_puback.original, "original")  # type: ignore[attr-defined]
    for protocol in (MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5):
        for mid in (1, 255, 256, 65535):
            _same(mid.to_bytes(2, "big"), protocol)
    # MQTT 5 with a reason code (16: no matching subscribers), then with empty properties
    _same(b"\x00\x07\x10", MQTTProtocolVersion.MQTTv5)
    _same(b"\x00\x07\x10\x00", MQTTProtocolVersion.MQTTv5)
    assert _packet.decode_puback(0x40, b"\x00\x07\x10", MQTTProtocolVersion.MQTTv5).reason == 16
