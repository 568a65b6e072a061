"""Where buffered records live: SQLite on disk (durable) or a dict in memory.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit writes to the WAL without an
fsync (tens of microseconds), which already survives a crash of the process (``kill -9``): the
data is in the operating system's cache. ``sync()`` fsyncs the WAL every
``buffer.sync_interval`` in a worker thread (the only blocking call the buffer makes), so a power
cut loses at most that interval and a poll never waits on a disk. Each record carries a CRC-32
of its topic and payload, checked when it is read back; a corrupt record is skipped and counted.

Both stores answer the same small interface and pass one shared test suite.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import os
import sqlite3
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway.delivery.buffer.record import Record
from gateway.errors import GatewayError, StoreError
from gateway.files import FILE, create_private, private_folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    crc INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Store(Protocol):
    durable: bool

    def write(self, records: list[Record], deletes: Iterable[int], last_seq: int) -> None:
        """Add ``records`` and remove the ``deletes`` seqs in one transaction."""
        ...

    def read(self, first: int, last: int, limit: int) -> tuple[list[Record], list[int], int]:
        """Up to ``limit`` records with ``first <= seq <= last``, in order: (records, seqs of
        corrupt records skipped, the last seq looked at)."""
        ...

    def sizes(self, first: int, last: int, limit: int) -> list[tuple[int, int]]:
        """(seq, size) of up to ``limit`` records with ``first <= seq <= last``, in order."""
        ...

    def totals(self) -> tuple[int, int, int, int]:
        """(records, bytes, lowest seq, highest seq ever written); seqs 0 when empty."""
        ...

    def oldest_created(self) -> float | None: ...

    async def sync(self) -> None: ...

    def close(self) -> None: ...


def crc(topic: str, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(topic.encode()))


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs -> (first, last) runs, so deleting 1,000 acknowledged seqs is one statement."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class SqliteStore:
    durable = True

    def __init__(self, folder: Path, max_size: int | None = None) -> None:
        """``max_size``: the buffer's bound in bytes; the WAL is kept to a share of it."""
        try:
            private_folder(folder)
            # One gateway per buffer: two would send the same records. The lock dies with us.
            self._lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise GatewayError(f"cannot use the buffer folder {folder}: {exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise GatewayError(
                f"the buffer {folder} is in use by another gateway; "
                "give each gateway its own buffer.path"
            ) from None
        self.path = folder / "buffer.sqlite3"
        try:
            # Readings are the plant's data: only our user reads them. SQLite gives its -wal
            # and -shm files the database file's permissions.
            create_private(self.path)
            for name in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.path}{name}", FILE)
        except OSError as exc:
            raise GatewayError(f"cannot use the buffer folder {folder}: {exc}") from None
        self.db = sqlite3.connect(self.path, isolation_level=None)
        _use_large_pages(self.db)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if max_size is not None:
            # SQLite checkpoints the WAL every 1,000 pages (16 MiB) and never shrinks it: with
            # a small buffer the WAL alone would be many times max_size.
            wal = wal_limit(max_size)
            self.db.execute(f"PRAGMA wal_autocheckpoint={max(wal // PAGE_SIZE, 4)}")
            self.db.execute(f"PRAGMA journal_size_limit={wal}")
        self.db.executescript(SCHEMA)
        self._dirty = False

    def write(self, records: list[Record], deletes: Iterable[int], last_seq: int) -> None:
        runs = _ranges(deletes)
        if not records and not runs:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if records:
                db.executemany(
                    "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                    [
                        (r.seq, r.topic, r.payload, crc(r.topic, r.payload), r.created)
                        for r in records
                    ],
                )
                db.execute(
                    "INSERT INTO meta VALUES ('last_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                    (last_seq,),
                )
            if runs:
                db.executemany("DELETE FROM records WHERE seq BETWEEN ? AND ?", runs)
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # a full disk, an I/O error: nothing written
            self._rollback()
            raise StoreError(str(exc)) from None
        except BaseException:
            self._rollback()
            raise
        self._dirty = True

    def _rollback(self) -> None:
        """SQLite rolls back by itself on some errors (a full disk): then there is nothing."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def read(self, first: int, last: int, limit: int) -> tuple[list[Record], list[int], int]:
        rows = self.db.execute(
            "SELECT seq, topic, payload, crc, created FROM records "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (first, last, limit),
        ).fetchall()
        records: list[Record] = []
        corrupt: list[int] = []
        for seq, topic, payload, check, created in rows:
            if crc(topic, payload) != check:
                corrupt.append(seq)
                continue
            records.append(Record(seq, topic, bytes(payload), created))
        return records, corrupt, rows[-1][0] if rows else last

    def sizes(self, first: int, last: int, limit: int) -> list[tuple[int, int]]:
        return self.db.execute(
            "SELECT seq, length(payload) + length(topic) + 32 FROM records "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (first, last, limit),
        ).fetchall()

    def totals(self) -> tuple[int, int, int, int]:
        count, size, low, high = self.db.execute(
            "SELECT count(*), coalesce(sum(length(payload) + length(topic) + 32), 0), "
            "coalesce(min(seq), 0), coalesce(max(seq), 0) FROM records"
        ).fetchone()
        row = self.db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return count, size, low, max(high, row[0] if row else 0)

    def oldest_created(self) -> float | None:
        row = self.db.execute("SELECT created FROM records ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    async def sync(self) -> None:
        """fsync the WAL (and the database) off the event loop, when something was written."""
        if not self._dirty:
            return
        self._dirty = False
        try:
            await asyncio.to_thread(_fsync, [Path(f"{self.path}-wal"), self.path])
        except OSError as exc:  # an I/O error on the disk: the next sync tries again
            self._dirty = True
            raise StoreError(f"fsync failed: {exc}") from None

    def close(self) -> None:
        self.db.close()
        os.close(self._lock)


PAGE_SIZE = 16384


def _use_large_pages(db: sqlite3.Connection) -> None:
    """``PAGE_SIZE`` pages instead of SQLite's 4 KiB: a device batch goes into the WAL in few
    pages, each a system call (figures: docs/performance.md). The size can only be set on a
    new database, or an empty one converted (an older buffer that still holds records keeps
    its pages)."""
    if db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE:
        return
    has_table = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'records'").fetchone()[
        0
    ]
    if has_table and db.execute("SELECT count(*) FROM records").fetchone()[0]:
        return
    db.execute("PRAGMA journal_mode=DELETE")  # the page size of a WAL database is fixed
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("VACUUM")


def _fsync(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class MemoryStore:
    """Not durable: what the gateway holds is lost on a crash (``buffer.mode: memory``)."""

    durable = False

    def __init__(self) -> None:
        # Plain tuples of str/bytes/float: the garbage collector stops tracking them, so a
        # large backlog in memory does not make every collection walk it.
        self.records: dict[int, tuple[str, bytes, float]] = {}
        self.order: list[int] = []  # seqs in the order written (ascending); may hold deleted ones
        self.start = 0  # index in `order` before which everything is deleted
        self.last_seq = 0

    def write(self, records: list[Record], deletes: Iterable[int], last_seq: int) -> None:
        for record in records:
            self.records[record.seq] = (record.topic, record.payload, record.created)
            self.order.append(record.seq)
        for seq in deletes:
            self.records.pop(seq, None)
        self.last_seq = max(self.last_seq, last_seq)
        # Most deletions are at the front: drop that prefix of `order` now and then.
        order, records_ = self.order, self.records
        while self.start < len(order) and order[self.start] not in records_:
            self.start += 1
        if self.start > 4096 and self.start > len(order) // 2:
            del order[: self.start]
            self.start = 0

    def read(self, first: int, last: int, limit: int) -> tuple[list[Record], list[int], int]:
        records = self.records
        found = [Record(seq, *records[seq]) for seq in self._seqs(first, last, limit)]
        return found, [], found[-1].seq if found else last

    def sizes(self, first: int, last: int, limit: int) -> list[tuple[int, int]]:
        records = self.records
        return [
            (seq, len(records[seq][0]) + len(records[seq][1]) + 32)
            for seq in self._seqs(first, last, limit)
        ]

    def _seqs(self, first: int, last: int, limit: int) -> list[int]:
        order, records = self.order, self.records
        index = bisect.bisect_left(order, first, self.start)
        found: list[int] = []
        while index < len(order) and len(found) < limit:
            seq = order[index]
            if seq > last:
                break
            if seq in records:
                found.append(seq)
            index += 1
        return found

    def totals(self) -> tuple[int, int, int, int]:
        if not self.records:
            return 0, 0, 0, self.last_seq
        seqs = self.records.keys()
        size = sum(len(topic) + len(payload) + 32 for topic, payload, _ in self.records.values())
        return len(self.records), size, min(seqs), max(self.last_seq, max(seqs))

    def oldest_created(self) -> float | None:
        return next(iter(self.records.values()))[2] if self.records else None

    async def sync(self) -> None:
        return None

    def close(self) -> None:
        self.records.clear()
        self.order.clear()


def open_store(mode: str, path: Path, max_size: int | None = None) -> Store:
    if mode == "memory" or str(path) == ":memory:":
        return MemoryStore()
    return SqliteStore(path, max_size)


def wal_limit(max_size: int) -> int:
    """Bytes the WAL may take: a quarter of ``max_size``, between 256 KiB and 16 MiB."""
    return min(max(max_size // 4, 256 * 1024), 16 * 1024 * 1024)
