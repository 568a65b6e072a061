"""A lighter PUBACK decoder for paho: the one change we make to paho's insides, kept here.

Why: at QoS 1 every message comes back as a 4-byte PUBACK, and paho 2.x builds a new
``ReasonCode`` and a new ``Properties`` object for each (even on MQTT 3.1.1, where a PUBACK
has neither). With per-point messages that was ~15 % of the gateway's CPU (py-spy, modbus-fast).
A plain success PUBACK (just a packet id) now shares one pair of those objects; anything else
(an MQTT 5 reason code or properties) goes to paho's own decoder. The gateway's ``on_publish``
reads only the packet id and the reason code, never changes them.

Applied once, when the first MQTT link is made; skipped (and nothing changes) if this paho
has no ``_packet.decode_puback`` of the expected shape.
"""

from __future__ import annotations

from typing import Any

_applied = False


def lighten_pubacks() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    try:
        from paho.mqtt import _packet
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.reasoncodes import ReasonCode
    except ImportError:  # pragma: no cover - another paho layout: keep paho's decoder
        return
    original = getattr(_packet, "decode_puback", None)
    packet_class = getattr(_packet, "PubackPacket", None)
    if original is None or packet_class is None:  # pragma: no cover
        return
    success = ReasonCode(PacketTypes.PUBACK)
    no_properties = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]

    def decode_puback(header: int, packet: bytes | bytearray, protocol: Any) -> Any:
        if len(packet) == 2:
            return packet_class(
                mid=(packet[0] << 8) | packet[1], reason=success, properties=no_properties
            )
        return original(header, packet, protocol)

    decode_puback.original = original  # type: ignore[attr-defined]
    _packet.decode_puback = decode_puback
