"""The Sparkplug edge node's bookkeeping: bdSeq on disk, topics, the primary host, seq."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.bdseq import BdSeq
from gateway.delivery.sparkplug.session import EdgeNode, SparkplugEncoder
from gateway.delivery.sparkplug.topics import SparkplugTopics, state_topic


def test_bd_seq_starts_at_zero_goes_up_with_each_connect_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "bdseq"
    first = BdSeq(path)
    # [tck-id-topics-nbirth-bdseq-increment]: from 0, one more per MQTT CONNECT.
    assert [first.next(), first.next()] == [0, 1]
    assert first.current == 1
    # Saved before the CONNECT goes out: a kill -9 right after loses nothing.
    assert path.read_text() == "1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert BdSeq(path).next() == 2


def test_bd_seq_wraps_after_255_and_a_damaged_file_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "bdseq"
    path.write_text("255\n")
    assert BdSeq(path).next() == 0
    path.write_text("garbage")
    assert BdSeq(path).next() == 0


def test_a_bd_seq_that_cannot_be_saved_still_counts(tmp_path: Path) -> None:
    """A full or broken disk must not keep the edge node off the broker for ever."""
    (tmp_path / "file").write_text("")
    bd_seq = BdSeq(tmp_path / "file" / "bdseq")  # its folder is a file: every save fails
    assert [bd_seq.next() for _ in range(3)] == [0, 1, 2]
    assert bd_seq.current == 2


def test_topics() -> None:
    topics = SparkplugTopics("plant-1", "edge-01")
    assert topics.node("NBIRTH") == "spBv1.0/plant-1/NBIRTH/edge-01"
    assert topics.device("DDATA", "press-01") == "spBv1.0/plant-1/DDATA/edge-01/press-01"
    assert topics.device_commands() == "spBv1.0/plant-1/DCMD/edge-01/+"
    assert topics.device_of_command("spBv1.0/plant-1/DCMD/edge-01/press-01") == "press-01"
    for other in (
        "spBv1.0/plant-1/DCMD/edge-02/press-01",
        "spBv1.0/plant-1/DCMD/edge-01/",
        "spBv1.0/plant-1/DCMD/edge-01/a/b",
        "spBv1.0/plant-1/NCMD/edge-01",
    ):
        assert topics.device_of_command(other) is None
    assert state_topic("scada-1") == "spBv1.0/STATE/scada-1"


def _edge(tmp_path: Path, host: str | None = "scada") -> EdgeNode:
    topics = SparkplugTopics("g", "n")
    encoder = SparkplugEncoder(topics, _NoRecords(), [], {})
    return EdgeNode(topics, encoder, BdSeq(tmp_path / "bdseq"), host)


class _NoRecords:
    def take_seq(self) -> int:
        raise AssertionError("no data in these tests")

    def add(self, record: object) -> None:
        raise AssertionError("no data in these tests")


def test_the_primary_hosts_state_counts_only_when_valid_and_not_older(tmp_path: Path) -> None:
    edge = _edge(tmp_path)
    topic = state_topic("scada")
    assert edge.host_online is False
    assert edge.host_state(topic, b'{"online": true, "timestamp": 10}') is True
    # An older STATE is not taken [tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp].
    assert edge.host_state(topic, b'{"online": false, "timestamp": 9}') is None
    assert edge.host_online is True
    assert edge.host_state(topic, b'{"online": false, "timestamp": 10}') is False
    for junk in (b"", b"[]", b'{"online": "yes", "timestamp": 11}', b'{"online": true}',
                 b'{"online": true, "timestamp": true}'):  # fmt: skip
        assert edge.host_state(topic, junk) is None
    assert edge.host_state(state_topic("other"), b'{"online": true, "timestamp": 99}') is None
    assert edge.host_online is False
    # A new connection must see the host online again before its births.
    edge.host_state(topic, b'{"online": true, "timestamp": 12}')
    edge.session_started()
    assert edge.host_online is False
    assert _edge(tmp_path, None).host_online is True  # no primary host: nothing to wait for


def test_seq_follows_the_order_sent_and_a_message_not_sent_gives_it_back(tmp_path: Path) -> None:
    edge = _edge(tmp_path, None)
    seqs = []
    for topic in ("spBv1.0/g/NBIRTH/n", "spBv1.0/g/DDATA/n/d", "spBv1.0/g/DDATA/n/d"):
        seqs.append(pb.Payload.FromString(edge.finish(topic, b"")).seq)
    edge.unsent()
    seqs.append(pb.Payload.FromString(edge.finish("spBv1.0/g/DDATA/n/d", b"")).seq)
    assert seqs == [0, 1, 2, 2]
    edge.seq = 255
    assert pb.Payload.FromString(edge.finish("spBv1.0/g/DDATA/n/d", b"")).seq == 0
    # NDEATH has no seq [tck-id-payloads-sequence-num-always-included].
    assert not pb.Payload.FromString(edge.finish("spBv1.0/g/NDEATH/n", b"")).HasField("seq")
