"""paho's reason codes -> what the gateway does and says: the one translation point for them.

By number, never by paho's text: MQTT 3.1.1 return codes and MQTT 5 reason codes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import Refused

if TYPE_CHECKING:
    from gateway.mqtt.client import Settings, Will

PACKET_ID_NOT_FOUND = 0x92
KEEP_ALIVE_TIMEOUT = 0x8D
UNSUPPORTED_VERSION = (0x01, 0x84)  # 3.1.1's "unacceptable protocol version", and MQTT 5's
BAD_LOGIN = (0x04, 0x86)
NOT_AUTHORIZED = (0x05, 0x87)
RETAIN_NOT_SUPPORTED = 0x9A
QOS_NOT_SUPPORTED = 0x9B


def refused_connect(code: ReasonCode, v5: bool) -> Refused:
    """A CONNACK that refuses, in words an operator can act on."""
    value = code.value
    if value in UNSUPPORTED_VERSION:
        other = "3.1.1 (mqtt.version: 3)" if v5 else "5 (mqtt.version: 5)"
        return Refused(
            f"the broker does not speak MQTT {'5' if v5 else '3.1.1'}",
            f"try MQTT {other}, or a broker that speaks both",
        )
    if value in NOT_AUTHORIZED:
        return Refused("not authorized")
    if value in BAD_LOGIN:
        return Refused("bad user name or password")
    return Refused(code.getName().lower())


def plainer_will(code: ReasonCode, will: Will | None) -> Will | None:
    """The will an MQTT 5 broker that refused this one takes, or None (not that refusal)."""
    if will is None:
        return None
    if code.value == RETAIN_NOT_SUPPORTED and will.retain:
        return replace(will, retain=False)
    if code.value == QOS_NOT_SUPPORTED and will.qos:
        return replace(will, qos=0)
    return None


def unanswered(settings: Settings, will: Will | None) -> Refused:
    """The broker closed the connection before a CONNACK: what does that, and what to do."""
    if settings.tls is not None and not settings.client_certificate:
        return Refused(
            "the broker closed the TLS connection without answering",
            "a broker that requires a client certificate does this: set mqtt.cert and mqtt.key",
        )
    if settings.version == 3 and will is not None and (will.retain or will.qos):
        return Refused(
            "the broker closed the connection without answering",
            "an MQTT 3.1.1 broker that keeps no retained messages (or takes no QoS 1) does this "
            "when the last will asks for them: set mqtt.retain: false (or mqtt.qos: 0)",
        )
    return Refused(
        "the broker closed the connection without answering",
        "the broker's log says why (a client id, protocol version or will it refuses)",
    )


def silent(v5: bool, timeout: float) -> Refused:
    """No CONNACK within ``timeout``."""
    return Refused(
        f"the broker did not answer CONNECT within {timeout:g} s",
        "a broker that does not speak MQTT 5 may stay silent like this: try mqtt.version: 3"
        if v5
        else None,
    )


def disconnected(code: ReasonCode, from_broker: bool) -> tuple[str, bool]:
    """Why a connection ended, for the log, and whether the broker ended it (closed it, or sent
    DISCONNECT), as it does over a message it will not take; not a keep-alive timeout."""
    if code.value == KEEP_ALIVE_TIMEOUT:
        return "no answer to a keep-alive ping", False
    if from_broker:
        return f"the broker disconnected: {code.getName().lower()}", True
    return ("the connection was lost", True) if code.is_failure else ("closed", False)
