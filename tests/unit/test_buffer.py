"""The delivery buffer on both stores (one suite, as Telegraf tests its memory and disk buffers)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.delivery.buffer import Buffer, MemoryStore, Record, SqliteStore, Store
from gateway.delivery.buffer.store import PAGE_SIZE, SCHEMA, crc, wal_limit
from gateway.errors import GatewayError

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    stores: list[Store] = []

    def make() -> Store:
        store: Store = SqliteStore(tmp_path / "buf") if request.param == "sqlite" else MemoryStore()
        stores.append(store)
        return store

    yield make


def _fill(buffer: Buffer, count: int, size: int = 100) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = buffer.take_seq()
        buffer.add(Record(seq, "t", b"x" * size, 1.0))
        seqs.append(seq)
    buffer.flush()
    return seqs


def _drain(buffer: Buffer) -> list[tuple[int, bool]]:
    out = []
    while (item := buffer.next()) is not None:
        record, replayed = item
        buffer.handed(record)
        out.append((record.seq, replayed))
    return out


def run(coro: Callable[[], object]) -> None:
    async def main() -> None:
        coro()

    asyncio.run(main())


def test_records_leave_only_when_acknowledged(make_store: StoreFactory) -> None:
    def scenario() -> None:
        buffer = Buffer(make_store(), max_size=10**6)
        buffer.connected()
        seqs = _fill(buffer, 10)
        sent = _drain(buffer)
        assert sent == [(s, False) for s in seqs]
        assert buffer.count == 10  # handed, not acknowledged: still buffered
        buffer.acknowledged(seqs[:4])
        buffer.flush()
        assert buffer.count == 6 and buffer.outcomes.delivered == 4
        assert buffer.store.totals()[0] == 6
        buffer.acknowledged(seqs[:4])  # a redelivery acknowledged twice counts once
        assert buffer.outcomes.delivered == 4

    run(scenario)


def test_an_outage_becomes_a_backlog_replayed_in_order_interleaved_with_live(
    make_store: StoreFactory,
) -> None:
    def scenario() -> None:
        buffer = Buffer(make_store(), max_size=10**6, replay_rate=0.5)
        buffer.connected()
        waited = _fill(buffer, 6)  # the broker is down: nothing is sent
        buffer.connected()  # it is back: what waited is the backlog
        live = _fill(buffer, 3)
        sent = _drain(buffer)
        assert [s for s, replayed in sent if replayed] == waited  # oldest first, marked
        assert [s for s, replayed in sent if not replayed] == live
        # Half of the publishes go to the backlog while live readings also wait.
        assert [replayed for _, replayed in sent[:6]] == [False, True, False, True, False, True]

    run(scenario)


def test_records_given_back_go_out_first_once_and_survive_a_reconnect(
    make_store: StoreFactory,
) -> None:
    """Handed records the transport gives back (lost with a session, unwritten, a session
    started anew) are sent before anything else, keep their replayed mark, and are neither
    stranded by a reconnect nor read again from the backlog."""

    def scenario() -> None:
        buffer = Buffer(make_store(), max_size=10**6, replay_rate=0.5)
        buffer.connected()
        waited = _fill(buffer, 4)
        buffer.connected()  # a backlog of 4
        live = _fill(buffer, 4)
        handed = [buffer.next() for _ in range(4)]
        for item in handed:
            assert item is not None
            buffer.handed(item[0])
        for record, replayed in reversed([i for i in handed if i is not None]):
            buffer.returned(record, replayed)  # the newest given back first
        buffer.connected()  # the connection dropped and came back meanwhile
        sent = _drain(buffer)
        assert sent[:4] == [(r.seq, replayed) for r, replayed in (i for i in handed if i)]
        seqs = [s for s, _ in sent]
        assert sorted(seqs) == waited + live  # every one, once
        buffer.acknowledged(seqs)
        buffer.flush()
        assert buffer.count == 0 and not buffer.pending()

    run(scenario)


def test_a_full_buffer_drops_the_oldest_waiting_and_counts_them(make_store: StoreFactory) -> None:
    def scenario() -> None:
        record_size = 100 + len("t") + 32
        buffer = Buffer(make_store(), max_size=10 * record_size)
        buffer.connected()
        first = _fill(buffer, 2)
        for record, _ in [buffer.next(), buffer.next()]:  # type: ignore[misc]
            buffer.handed(record)  # in flight: never dropped
        buffer.connected()
        seqs = _fill(buffer, 30)
        # Room for 10 waiting records (the 2 in flight come on top, and stay).
        assert buffer.outcomes.dropped["buffer_full"] == 20
        sent = [s for s, _ in _drain(buffer)]
        assert sent == seqs[20:]  # the oldest waiting went, the newest stayed
        assert buffer.count == 12 and set(first) <= set(buffer.out)

    run(scenario)


def test_block_oldest_first_keeps_everything_and_signals_full(make_store: StoreFactory) -> None:
    def scenario() -> None:
        buffer = Buffer(make_store(), max_size=1000, on_full="block_oldest_first")
        buffer.connected()
        seqs = _fill(buffer, 20)
        assert not buffer.room.is_set() and not buffer.outcomes.dropped
        _drain(buffer)
        buffer.acknowledged(seqs)
        buffer.flush()
        assert buffer.room.is_set() and buffer.count == 0

    run(scenario)


def test_seq_and_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    def first_run() -> None:
        buffer = Buffer(SqliteStore(tmp_path / "buf"), max_size=10**6)
        buffer.connected()
        seqs = _fill(buffer, 5)
        _drain(buffer)
        buffer.acknowledged(seqs[:2])
        buffer.flush()
        buffer.store.close()  # a crash: no goodbye beyond what was committed

    def second_run() -> None:
        buffer = Buffer(SqliteStore(tmp_path / "buf"), max_size=10**6)
        assert buffer.take_seq() == 6  # seq continues
        buffer.connected()
        assert _drain(buffer) == [(3, True), (4, True), (5, True)]

    run(first_run)
    run(second_run)


def test_a_corrupt_record_is_skipped_and_counted(tmp_path: Path) -> None:
    def write() -> None:
        buffer = Buffer(SqliteStore(tmp_path / "buf"), max_size=10**6)
        _fill(buffer, 3)
        buffer.store.close()

    run(write)
    db = sqlite3.connect(tmp_path / "buf" / "buffer.sqlite3")
    db.execute("UPDATE records SET payload = X'00' WHERE seq = 2")
    db.commit()
    db.close()

    def read() -> None:
        buffer = Buffer(SqliteStore(tmp_path / "buf"), max_size=10**6)
        buffer.connected()
        assert [s for s, _ in _drain(buffer)] == [1, 3]
        assert buffer.outcomes.dropped == {"corrupt": 1}
        assert buffer.count == 2

    run(read)


def test_one_gateway_per_buffer_folder(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "buf")
    with pytest.raises(GatewayError, match="in use by another gateway"):
        SqliteStore(tmp_path / "buf")
    first.close()
    SqliteStore(tmp_path / "buf").close()


def test_only_the_gateway_s_user_reads_the_buffer(tmp_path: Path) -> None:
    old = os.umask(0)  # the most open umask: the permissions are the store's own
    try:
        store = SqliteStore(tmp_path / "data" / "buf")
        buffer = Buffer(store, 10**6)

        def write() -> None:
            _fill(buffer, 10)
            buffer.flush()

        run(write)
        files = sorted((tmp_path / "data" / "buf").iterdir())
        assert [f.name for f in files] == [
            "buffer.sqlite3", "buffer.sqlite3-shm", "buffer.sqlite3-wal", "lock"
        ]  # fmt: skip
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files
        }
        for folder in (tmp_path / "data", tmp_path / "data" / "buf"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old)


def _page_size(folder: Path) -> int:
    db = sqlite3.connect(folder / "buffer.sqlite3")
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


def test_a_buffer_from_small_pages_keeps_them_until_empty_then_moves_to_large(
    tmp_path: Path,
) -> None:
    """Large pages can only be set on an empty database: an older buffer holding records is
    used as it is (nothing is rewritten under a running replay), converted once it is empty."""
    folder = tmp_path / "buf"
    folder.mkdir()
    old = sqlite3.connect(folder / "buffer.sqlite3")
    old.execute("PRAGMA page_size=4096")
    old.executescript(SCHEMA)
    old.execute("INSERT INTO records VALUES (7, 't', X'01', ?, 1.0)", (crc("t", b"\x01"),))
    old.execute("INSERT INTO meta VALUES ('last_seq', 7)")
    old.commit()
    old.close()

    def replay_and_empty() -> None:
        buffer = Buffer(SqliteStore(folder), max_size=10**6)
        assert _page_size(folder) == 4096
        buffer.connected()
        assert [s for s, _ in _drain(buffer)] == [7]
        buffer.acknowledged([7])
        buffer.close()

    def reopen() -> None:
        buffer = Buffer(SqliteStore(folder), max_size=10**6)
        assert _page_size(folder) == PAGE_SIZE
        assert buffer.take_seq() == 8  # seq continues through the conversion
        buffer.store.close()

    run(replay_and_empty)
    run(reopen)
    SqliteStore(tmp_path / "new").close()
    assert _page_size(tmp_path / "new") == PAGE_SIZE


def test_the_files_on_disk_stay_near_max_size(tmp_path: Path) -> None:
    """20 MB through a 1 MB buffer with the broker away: the database stays within max_size
    and SQLite's page slack, the WAL within its share (SQLite's default lets it reach 16 MiB)."""

    def scenario() -> None:
        max_size = 1_000_000
        buffer = Buffer(SqliteStore(tmp_path, max_size), max_size=max_size)
        buffer.connected()
        peak_db = peak_wal = 0
        for n in range(400):
            _fill(buffer, 50, size=900)
            if n % 10 == 0:
                peak_db = max(peak_db, (tmp_path / "buffer.sqlite3").stat().st_size)
                wal = tmp_path / "buffer.sqlite3-wal"
                peak_wal = max(peak_wal, wal.stat().st_size if wal.exists() else 0)
        assert buffer.outcomes.dropped["buffer_full"] > 15_000
        assert peak_db <= max_size * 1.25
        assert peak_wal <= wal_limit(max_size) + 256 * 1024  # and one commit on top
        buffer.close()

    run(scenario)


def test_a_full_disk_keeps_readings_in_memory_counts_what_it_drops_and_recovers(
    tmp_path: Path,
) -> None:
    """SQLite's page limit gives the same error as a full disk ("database or disk is full")."""

    def scenario() -> None:
        store = SqliteStore(tmp_path)
        buffer = Buffer(store, max_size=10**9, live_limit=500)
        buffer.connected()
        committed = _fill(buffer, 100)
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here
        for _ in range(3):
            for _ in range(400):
                buffer.add(Record(buffer.take_seq(), "t", b"x" * 2000, 1.0))
            buffer.flush()  # fails, keeps what it can, never raises
        assert buffer.outcomes.dropped["disk_full"] == 1200 - 500
        assert buffer.count == 100 + 500  # the status tells the truth
        assert store.totals()[0] == 100
        store.db.execute("PRAGMA max_page_count = 1000000")  # space is back
        buffer.flush()
        assert store.totals()[0] == 600
        sent = sorted(seq for seq, _ in _drain(buffer))
        newest = list(range(committed[-1] + 701, committed[-1] + 1201))  # the oldest dropped
        assert sent == committed + newest

    run(scenario)
