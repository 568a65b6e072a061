"""The Sparkplug edge node's bookkeeping: bdSeq on disk, topics."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.delivery.sparkplug.bdseq import BdSeq
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
