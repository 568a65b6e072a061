"""MQTT 3.1.1 and 5 packets as bytes: pure functions, no I/O (the link does the I/O).

Why our own codec: at QoS 1 every reading is a PUBLISH out and a PUBACK back, and a general
client builds several Python objects for each (paho 2.x: a message, a message-info object with
a ``threading.Condition``, a reason code and a properties object per acknowledgement -- about
half of the gateway's CPU with per-point messages). Here a PUBLISH is one ``bytes`` joined from
its parts and a PUBACK is two bytes read off the stream.

What is here is what a publishing gateway with one command subscription needs: CONNECT/CONNACK,
PUBLISH in and out at QoS 0-2 with its acknowledgements, SUBSCRIBE/UNSUBSCRIBE and their acks,
PINGREQ/PINGRESP, DISCONNECT, and MQTT 5 properties (all of them decoded, the ones we send
encoded). Anything malformed raises ``ProtocolError``; the link then drops the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple, cast

from gateway.errors import BrokerError

# Packet types (the high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

PING = b"\xc0\x00"
GOODBYE = b"\xe0\x00"  # DISCONNECT, normal (MQTT 5: reason 0 may be left out)

MAX_REMAINING = 268_435_455  # the largest remaining length four bytes can say

# MQTT 5 property identifiers we read or write by name.
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SESSION_EXPIRY = 0x11
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27

# Every MQTT 5 property by its wire type, so an unknown-to-us one is still skipped correctly.
_BYTE, _INT2, _INT4, _VARINT, _TEXT, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _INT4, 0x03: _TEXT, 0x08: _TEXT, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _INT4, 0x12: _TEXT, 0x13: _INT2, 0x15: _TEXT, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _INT4, 0x19: _BYTE, 0x1A: _TEXT, 0x1C: _TEXT, 0x1F: _TEXT, 0x21: _INT2,
    0x22: _INT2, 0x23: _INT2, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _INT4,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip

# MQTT 5 reason codes (and the MQTT 3.1.1 CONNACK return codes 1-5), for logs.
REASONS = {
    0x00: "success", 0x04: "disconnect with will message", 0x10: "no matching subscribers",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8B: "server shutting down", 0x8C: "bad authentication method",
    0x8D: "keep alive timeout", 0x8E: "session taken over", 0x8F: "topic filter invalid",
    0x90: "topic name invalid", 0x91: "packet identifier in use",
    0x92: "packet identifier not found", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high",
    0x97: "quota exceeded", 0x98: "administrative action", 0x99: "payload format invalid",
    0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
    0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}  # fmt: skip
V3_CONNACK = {
    1: "unacceptable protocol version", 2: "client identifier rejected",
    3: "server unavailable", 4: "bad user name or password", 5: "not authorized",
}  # fmt: skip

_mid = struct.Struct(">H")


class ProtocolError(BrokerError):
    """The broker sent something that is not MQTT (or not the MQTT we speak)."""


def reason_text(code: int, v5: bool = True) -> str:
    if not v5:
        return V3_CONNACK.get(code, f"return code {code}")
    return REASONS.get(code, f"reason code 0x{code:02x}")


# -- encoding ---------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length, property lengths)."""
    if n < 0x80:
        return bytes((n,))
    if n > MAX_REMAINING:
        raise ValueError(f"{n} does not fit in an MQTT variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 0x80)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def text(value: str | bytes) -> bytes:
    """A UTF-8 string (or binary data) with its two-byte length."""
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string holds at most 65,535 bytes")
    return _mid.pack(len(data)) + data


def properties(items: Iterable[tuple[int, object]]) -> bytes:
    """MQTT 5 properties, length first. Values: int, str, bytes, or (str, str) for a pair."""
    body = bytearray()
    for identifier, value in items:
        kind = _PROPERTY_TYPES[identifier]
        body.append(identifier)
        if kind == _BYTE:
            body.append(int(value))  # type: ignore[call-overload]
        elif kind == _INT2:
            body += int(value).to_bytes(2, "big")  # type: ignore[call-overload]
        elif kind == _INT4:
            body += int(value).to_bytes(4, "big")  # type: ignore[call-overload]
        elif kind == _VARINT:
            body += varint(int(value))  # type: ignore[call-overload]
        elif kind == _PAIR:
            pair = cast(tuple[str, str], value)
            body += text(pair[0]) + text(pair[1])
        else:
            body += text(value)  # type: ignore[arg-type]
    return varint(len(body)) + body


NO_PROPERTIES = b"\x00"


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect(
    client_id: str,
    keepalive: int,
    v5: bool,
    clean: bool = False,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
    connect_properties: bytes = NO_PROPERTIES,
    will_properties: bytes = NO_PROPERTIES,
) -> bytes:
    """CONNECT. ``will``: (topic, payload, qos, retain)."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = bytearray(text("MQTT"))
    body += bytes((5 if v5 else 4, flags)) + _mid.pack(keepalive)
    if v5:
        body += connect_properties
    body += text(client_id)
    if will is not None:
        if v5:
            body += will_properties
        body += text(will[0]) + text(will[1])
    if username is not None:
        body += text(username)
    if password is not None:
        body += text(password)
    return _packet(CONNECT << 4, bytes(body))


def publish(
    topic: bytes, payload: bytes, qos: int, retain: bool, mid: int, props: bytes = b""
) -> bytes:
    """PUBLISH. ``topic``: UTF-8, checked by the caller; ``props``: b"" on MQTT 3.1.1, else
    the encoded properties (``NO_PROPERTIES`` for none). The hot path: one join."""
    size = len(topic)
    length = 2 + size + len(props) + len(payload) + (2 if qos else 0)
    if length < 0x80:
        head = bytes((0x30 | qos << 1 | retain, length, size >> 8, size & 0xFF))
    elif length < 0x4000:  # a per-point reading: two bytes of length
        first = 0x30 | qos << 1 | retain
        head = bytes((first, length & 0x7F | 0x80, length >> 7, size >> 8, size & 0xFF))
    else:
        head = bytes((0x30 | qos << 1 | retain,)) + varint(length) + _mid.pack(size)
    if qos:
        return b"".join((head, topic, _mid.pack(mid), props, payload))
    return b"".join((head, topic, props, payload))


def as_duplicate(packet: bytes) -> bytes:
    """The same PUBLISH with the DUP flag, for a resend after a reconnect."""
    return bytes((packet[0] | 0x08,)) + packet[1:]


def ack(kind: int, mid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP with success (the same four bytes on 3.1.1 and 5)."""
    return bytes(((kind << 4) | (0x02 if kind == PUBREL else 0), 2, mid >> 8, mid & 0xFF))


def subscribe(mid: int, topic_filter: str, qos: int, v5: bool, retain_as_published: bool) -> bytes:
    options = qos | (0x08 if v5 and retain_as_published else 0)
    body = _mid.pack(mid) + (NO_PROPERTIES if v5 else b"") + text(topic_filter) + bytes((options,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(mid: int, topic_filter: str, v5: bool) -> bytes:
    body = _mid.pack(mid) + (NO_PROPERTIES if v5 else b"") + text(topic_filter)
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


def check_topic(topic: str) -> bytes:
    """A topic name we may publish to, as UTF-8; ValueError for an empty one, a wildcard, a
    NUL or more than 65,535 bytes (a broker disconnects a client that sends one)."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"{topic!r} is not a topic one can publish to")
    data = topic.encode()
    if len(data) > 0xFFFF:
        raise ValueError("a topic holds at most 65,535 bytes")
    return data


# -- decoding ---------------------------------------------------------------------------------


def split(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete packets at the start of ``data`` as (first byte, body), and what is left."""
    packets: list[tuple[int, bytes]] = []
    size = len(data)
    i = 0
    while size - i >= 2:
        first = data[i]
        if first == 0x40 and data[i + 1] == 2:  # a plain PUBACK: most of what arrives
            if size - i < 4:
                break
            packets.append((0x40, data[i + 2 : i + 4]))
            i += 4
            continue
        length = shift = 0
        j = i + 1
        while True:
            if j >= size:
                return packets, data[i:]
            digit = data[j]
            j += 1
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("malformed remaining length")
        if j + length > size:
            break
        packets.append((first, data[j : j + length]))
        i = j + length
    return packets, data[i:]


class _Cursor:
    """Reads the fields of one packet body, raising ``ProtocolError`` when it runs short."""

    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        start = self.position
        end = start + size
        if end > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        self.position = end
        return self.data[start:end]

    def byte(self) -> int:
        return self.take(1)[0]

    def int2(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def varint(self) -> int:
        value = shift = 0
        while True:
            digit = self.byte()
            value |= (digit & 0x7F) << shift
            if not digit & 0x80:
                return value
            shift += 7
            if shift > 21:
                raise ProtocolError("malformed variable byte integer")

    def binary(self) -> bytes:
        return self.take(self.int2())

    def text(self) -> str:
        try:
            return self.binary().decode()
        except UnicodeDecodeError:
            raise ProtocolError("a string that is not UTF-8") from None

    def rest(self) -> bytes:
        rest = self.data[self.position :]
        self.position = len(self.data)
        return rest

    def left(self) -> int:
        return len(self.data) - self.position

    def properties(self) -> dict[int, object]:
        """MQTT 5 properties; a user property collects into a list of (name, value) pairs."""
        end = self.varint() + self.position
        if end > len(self.data):
            raise ProtocolError("properties longer than the packet")
        found: dict[int, object] = {}
        while self.position < end:
            identifier = self.varint()
            kind = _PROPERTY_TYPES.get(identifier)
            value: object
            if kind is None:
                raise ProtocolError(f"unknown property 0x{identifier:02x}")
            if kind == _BYTE:
                value = self.byte()
            elif kind == _INT2:
                value = self.int2()
            elif kind == _INT4:
                value = int.from_bytes(self.take(4), "big")
            elif kind == _VARINT:
                value = self.varint()
            elif kind == _BINARY:
                value = self.binary()
            elif kind == _TEXT:
                value = self.text()
            else:
                pair = (self.text(), self.text())
                pairs = found.setdefault(identifier, [])
                assert isinstance(pairs, list)
                pairs.append(pair)
                continue
            found[identifier] = value
        if self.position != end:
            raise ProtocolError("properties overrun their length")
        return found


class Connack(NamedTuple):
    session_present: bool
    code: int  # 0 = accepted
    properties: dict[int, object]


class Message(NamedTuple):
    """A PUBLISH that arrived."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int  # 0 at QoS 0
    properties: dict[int, object]


class Ack(NamedTuple):
    """PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK or UNSUBACK: the packet id, the reason codes."""

    mid: int
    codes: tuple[int, ...]
    properties: dict[int, object]


def read_connack(body: bytes, v5: bool) -> Connack:
    cursor = _Cursor(body)
    flags, code = cursor.byte(), cursor.byte()
    found = cursor.properties() if v5 and cursor.left() else {}
    return Connack(bool(flags & 1), code, found)


def read_publish(first: int, body: bytes, v5: bool) -> Message:
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    cursor = _Cursor(body)
    topic = cursor.text()
    mid = cursor.int2() if qos else 0
    found = cursor.properties() if v5 else {}
    return Message(topic, cursor.rest(), qos, bool(first & 1), mid, found)


def read_ack(body: bytes, v5: bool, listed: bool = False) -> Ack:
    """``listed``: SUBACK/UNSUBACK, whose reason codes are a list after the properties."""
    cursor = _Cursor(body)
    mid = cursor.int2()
    if listed:
        found = cursor.properties() if v5 else {}
        return Ack(mid, tuple(cursor.rest()), found)
    code = cursor.byte() if v5 and cursor.left() else 0
    found = cursor.properties() if v5 and cursor.left() else {}
    return Ack(mid, (code,), found)


def read_disconnect(body: bytes) -> tuple[int, dict[int, object]]:
    """MQTT 5 DISCONNECT from the broker: (reason code, properties)."""
    cursor = _Cursor(body)
    code = cursor.byte() if cursor.left() else 0
    found = cursor.properties() if cursor.left() else {}
    return code, found
