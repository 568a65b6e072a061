"""Aliases kept across restarts: a DDATA waiting in the buffer must resolve through the next
process' births to the same metrics, also after the map was edited."""

from __future__ import annotations

from pathlib import Path

from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.aliases import Aliases


def test_an_alias_keeps_its_metric_across_restarts_and_map_edits(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sparkplug-aliases.json"
    first = Aliases(path)
    assert [first.alias("press", p, pb.Float)[0] for p in ("a", "b", "c")] == [1, 2, 3]
    assert first.alias("oven", "a", None) == (4, None)  # its type comes with its first value
    first.save()
    assert path.stat().st_mode & 0o777 == 0o600

    # The next run's map: a point inserted before "b", "c" removed, "b" now an Int32.
    second = Aliases(path)
    assert second.alias("press", "a", pb.Float) == (1, pb.Float)
    assert second.alias("press", "new", pb.Float) == (5, pb.Float)  # never a number used before
    assert second.alias("press", "b", pb.Int32) == (6, pb.Int32)  # retyped: a new alias
    assert second.alias("oven", "a", pb.Double) == (4, pb.Double)  # its first value decided
    second.save()
    third = Aliases(path)
    assert third.alias("press", "b", pb.Int32) == (6, pb.Int32)
    assert third.alias("press", "c", pb.Float) == (3, pb.Float)  # reserved while it was gone
    assert third.alias("oven", "a", None) == (4, pb.Double)  # the type its first value decided


def test_a_damaged_table_is_numbered_apart_from_any_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "sparkplug-aliases.json"
    for damaged in (b"{not json", b'{"press": {"a": [0, 1]}}', b'{"press": ["a"]}', b"[]"):
        path.write_bytes(damaged)
        # Nothing waits in the buffer: numbered from 1 again.
        assert Aliases(path).alias("press", "a", pb.Float)[0] == 1, damaged
        # Earlier runs' DDATA wait: no alias they use may come back, whatever it was.
        alias = Aliases(path, backlog=True).alias("press", "a", pb.Float)[0]
        assert alias > 2**40, damaged


def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "sparkplug-aliases.json"
    aliases = Aliases(path)
    aliases.alias("press", "a", pb.Float)
    aliases.save()
    before = path.stat().st_mtime_ns
    path.chmod(0o400)  # a write would now replace the file and change its mode
    again = Aliases(path)
    again.alias("press", "a", pb.Float)
    again.save()
    assert (path.stat().st_mtime_ns, path.stat().st_mode & 0o777) == (before, 0o400)
