"""The MQTT codec: packets as the standard spells them, and back.

The real broker is in the integration tests (every one of them talks to mosquitto through this
codec); here are the boundaries a broker rarely shows: lengths at each varint step, packets
split anywhere in the stream, MQTT 5 properties of every wire type, malformed input.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt import packets
from gateway.mqtt.packets import ProtocolError


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integers_are_the_standard_s_examples(value: int, wire: bytes) -> None:
    assert packets.varint(value) == wire  # MQTT 5.0, table 1-1
    assert packets._Cursor(wire).varint() == value


def test_a_variable_byte_integer_holds_at_most_four_bytes() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        packets.varint(268_435_456)
    with pytest.raises(ProtocolError):
        packets._Cursor(b"\xff\xff\xff\xff\x01").varint()


def test_connect_is_byte_for_byte_what_the_standard_says() -> None:
    packet = packets.connect(
        "gw",
        30,
        v5=False,
        username="u",
        password="p",
        will=("s", b"off", 1, True),
    )
    assert packet == (
        b"\x10\x1c"  # CONNECT, 28 bytes follow
        b"\x00\x04MQTT\x04"  # protocol name, level 4 (3.1.1)
        b"\xec"  # username, password, will retain, will QoS 1, will flag; clean session off
        b"\x00\x1e"  # keep alive 30 s
        b"\x00\x02gw" + b"\x00\x01s" + b"\x00\x03off" + b"\x00\x01u" + b"\x00\x01p"
    )
    v5 = packets.connect(
        "gw",
        30,
        v5=True,
        clean=True,
        connect_properties=packets.properties([(packets.SESSION_EXPIRY, 3600)]),
    )
    # level 5, clean start, properties (session expiry 3600), then the client id
    assert v5 == b"\x10\x14\x00\x04MQTT\x05\x02\x00\x1e\x05\x11\x00\x00\x0e\x10\x00\x02gw"


@settings(max_examples=300, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=300).filter(lambda t: not set(t) & set("+#\0")),
    payload=st.binary(max_size=20_000),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
)
def test_a_publish_reads_back_whatever_its_size(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int, v5: bool
) -> None:
    props = packets.properties([(packets.CONTENT_TYPE, "application/json")]) if v5 else b""
    packet = packets.publish(packets.check_topic(topic), payload, qos, retain, mid, props)
    (first, body), *more = packets.split(packet)[0]
    assert not more and packets.split(packet)[1] == b""
    message = packets.read_publish(first, body, v5)
    assert (message.topic, message.payload, message.qos, message.retain) == (
        topic,
        payload,
        qos,
        retain,
    )
    assert message.mid == (mid if qos else 0)
    if v5:
        assert message.properties == {packets.CONTENT_TYPE: "application/json"}
    duplicate = packets.as_duplicate(packet)
    assert duplicate[0] == packet[0] | 0x08 and duplicate[1:] == packet[1:]


@pytest.mark.parametrize("size", [0, 100, 121, 122, 123, 16_370, 16_376, 16_377, 16_400])
def test_publish_lengths_around_each_header_size(size: int) -> None:
    """The hot path writes one- and two-byte lengths itself: check at each boundary."""
    packet = packets.publish(b"a/b", b"x" * size, 1, False, 7)
    length = 2 + 3 + 2 + size
    assert packet[1 : 1 + len(packets.varint(length))] == packets.varint(length)
    message = packets.read_publish(*packets.split(packet)[0][0], v5=False)
    assert (message.topic, len(message.payload), message.mid) == ("a/b", size, 7)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 65535), st.binary(max_size=300)), min_size=1, max_size=8),
    st.data(),
)
def test_a_stream_cut_anywhere_gives_the_same_packets(
    messages: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(
        packets.publish(b"t", payload, 1, False, mid) + packets.ack(packets.PUBACK, mid)
        for mid, payload in messages
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=10)))
    found: list[tuple[int, bytes]] = []
    rest = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got, rest = packets.split(rest + stream[start:end])
        found += got
    assert rest == b""
    assert found == packets.split(stream)[0]
    assert len(found) == 2 * len(messages)
    pairs = zip(found[::2], found[1::2], strict=True)
    for (mid, payload), (publish, ack) in zip(messages, pairs, strict=True):
        assert packets.read_publish(*publish, v5=False).payload == payload
        assert ack == (0x40, mid.to_bytes(2, "big"))


def test_a_malformed_remaining_length_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        packets.split(b"\x30\xff\xff\xff\xff\x01")


def test_every_property_type_reads_back() -> None:
    items: list[tuple[int, object]] = [
        (packets.PAYLOAD_FORMAT, 1),  # byte
        (packets.SERVER_KEEP_ALIVE, 120),  # two bytes
        (packets.MESSAGE_EXPIRY, 86_400),  # four bytes
        (0x0B, 300_000),  # subscription identifier: variable byte integer
        (packets.CONTENT_TYPE, "application/json; charset=ütf-8"),  # text
        (packets.CORRELATION_DATA, b"\x00\xffid"),  # binary
        (packets.USER_PROPERTY, ("client_id", "scada-1")),  # pairs, repeated
        (packets.USER_PROPERTY, ("note", "")),
    ]
    encoded = packets.properties(items)
    found = packets._Cursor(encoded).properties()
    assert found == {
        packets.PAYLOAD_FORMAT: 1,
        packets.SERVER_KEEP_ALIVE: 120,
        packets.MESSAGE_EXPIRY: 86_400,
        0x0B: 300_000,
        packets.CONTENT_TYPE: "application/json; charset=ütf-8",
        packets.CORRELATION_DATA: b"\x00\xffid",
        packets.USER_PROPERTY: [("client_id", "scada-1"), ("note", "")],
    }


@pytest.mark.parametrize(
    "body",
    [
        b"\x02\x7f\x00",  # an unknown property
        b"\x05\x03\x00\x09ab",  # a text longer than the properties
        b"\x09\x03\x00\x02ab\x01\x01\x01",  # properties longer than the packet
        b"\x03\x03\x00\x01\xff",  # text that is not UTF-8
    ],
)
def test_broken_properties_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        packets._Cursor(body).properties()


def test_acknowledgements_and_their_reason_codes() -> None:
    assert packets.ack(packets.PUBACK, 258) == b"\x40\x02\x01\x02"
    assert packets.ack(packets.PUBREL, 1) == b"\x62\x02\x00\x01"  # PUBREL has flags 0010
    assert packets.read_ack(b"\x01\x02", v5=True) == packets.Ack(258, (0,), {})
    refused = packets.read_ack(b"\x00\x07\x87\x05\x1f\x00\x02no", v5=True)
    assert (refused.mid, refused.codes) == (7, (0x87,))
    assert refused.properties == {packets.REASON_STRING: "no"}
    assert packets.reason_text(0x87) == "not authorized"
    suback = packets.read_ack(b"\x00\x09\x00\x00\x80", v5=True, listed=True)
    assert (suback.mid, suback.codes) == (9, (0, 0x80))
    assert packets.read_ack(b"\x00\x09\x01", v5=False, listed=True).codes == (1,)


def test_connack_of_both_versions() -> None:
    assert packets.read_connack(b"\x01\x00", v5=False) == packets.Connack(True, 0, {})
    assert packets.reason_text(5, v5=False) == "not authorized"
    # mosquitto's MQTT 5 CONNACK with max_inflight_messages 4 and max_packet_size 400
    connack = packets.read_connack(
        b"\x00\x00\x0e\x22\x00\x0a\x13\x00\x0a\x27\x00\x00\x01\x90\x21\x00\x04", v5=True
    )
    assert connack.properties == {
        0x22: 10,  # topic alias maximum
        packets.SERVER_KEEP_ALIVE: 10,
        packets.MAXIMUM_PACKET_SIZE: 400,
        packets.RECEIVE_MAXIMUM: 4,
    }


def test_subscribe_asks_retain_as_published_only_on_mqtt5() -> None:
    v5 = packets.subscribe(3, "a/+/set", 0, v5=True, retain_as_published=True)
    assert v5 == b"\x82\x0d\x00\x03\x00\x00\x07a/+/set\x08"
    v3 = packets.subscribe(3, "a/+/set", 1, v5=False, retain_as_published=True)
    assert v3 == b"\x82\x0c\x00\x03\x00\x07a/+/set\x01"
    assert packets.unsubscribe(4, "a/#", v5=False) == b"\xa2\x07\x00\x04\x00\x03a/#"


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\0b", "x" * 70_000])
def test_topics_one_cannot_publish_to_are_refused(topic: str) -> None:
    with pytest.raises(ValueError):
        packets.check_topic(topic)


def test_a_truncated_packet_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        packets.read_publish(0x32, b"\x00\x05ab", v5=False)  # topic says 5 bytes, has 2
