"""The delivery buffer: order, acknowledgement and accounting on top of a ``Store``.

Every record is in exactly one place:

- ``staging``: accepted from the pipeline, not yet committed (committed within 5 ms, in one
  transaction for all that arrived meanwhile; a reading is on disk before it can be published);
- ``live``: committed, waiting to be published (in memory, in seq order);
- the **backlog**: committed, waiting, but only on disk (seqs ``cursor..backlog_to``): what piled
  up during a broker outage, what overflowed ``live``, what a crash left behind;
- ``out``: handed to the MQTT client and not yet acknowledged;
- ``resend``: handed, then given back (the broker lost it, or the session was started anew):
  sent again before anything else;
- gone: acknowledged (delivered), or dropped by a full buffer or a failed checksum (counted).

After an outage the backlog is sent oldest first, interleaved with live readings at
``replay_rate``, and marked replayed. A record leaves the store only when acknowledged or dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import structlog

from gateway.delivery.buffer.record import Record
from gateway.delivery.buffer.store import Store
from gateway.errors import StoreError

log = structlog.get_logger("gateway.buffer")

READ_CHUNK = 500  # backlog records read back per query
# Staged records are committed this soon (one transaction for all batches of the moment), or at
# once when this many are staged.
COMMIT_DELAY = 0.005
COMMIT_BATCH = 2000
LIVE_LIMIT = 20_000  # records kept in memory; beyond, they wait on disk only
RETRY_WRITE = 1.0  # seconds between attempts while the store cannot write
SAY_AGAIN = 60.0  # a store that still cannot write is logged again after this long


@dataclass
class Outcomes:
    """What became of the readings: every one is delivered, dropped (by reason) or buffered.
    (A Sparkplug birth or death stored for its order may also be discarded: ``discarded``.)"""

    delivered: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class Buffer:
    def __init__(
        self,
        store: Store,
        max_size: int,
        on_full: str = "drop_oldest",
        replay_rate: float = 0.5,
        live_limit: int = LIVE_LIMIT,
    ) -> None:
        self.store = store
        self.max_size = max_size
        self.on_full = on_full
        self.replay_rate = replay_rate
        self.live_limit = live_limit
        self.count, self.bytes, low, high = store.totals()
        self.next_seq = high + 1  # seq continues across restarts
        # Whatever a previous run left is backlog: it is sent again, oldest first.
        self.cursor, self.backlog_to = (low, high) if self.count else (self.next_seq, high)
        if self.count:
            log.info(
                "replaying what a previous run left", buffered=self.count, first=low, last=high
            )
        self.staging: list[Record] = []
        self.live: deque[Record] = deque()
        self.replay: deque[Record] = deque()
        self.resend: deque[tuple[Record, bool]] = deque()  # (record, replayed), oldest first
        self._resend_seqs: set[int] = set()
        self.out: dict[int, int] = {}  # seq -> size, handed to the client, not yet acknowledged
        self.out_bytes = 0
        self.deletes: list[int] = []
        self.outcomes = Outcomes()
        self.ready = asyncio.Event()  # something to publish
        self.room = asyncio.Event()  # below max_size (block_oldest_first)
        self.room.set()
        self._credit = 0.0
        self._flush_scheduled = False
        self._connected_before = False
        self._failing_since: float | None = None  # the store cannot write (a full disk)
        self._said_at = 0.0

    # -- from the pipeline ----------------------------------------------------------------

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def add(self, record: Record) -> None:
        """Accept a record (never blocks); it is committed at the end of this loop turn."""
        self.staging.append(record)
        self.count += 1
        self.bytes += record.size
        if self._over():
            self._make_room()
        if len(self.staging) >= COMMIT_BATCH and self._failing_since is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(COMMIT_DELAY, self.flush)

    async def wait_for_room(self) -> None:
        """With ``block_oldest_first``, wait while the buffer is full."""
        if not self.room.is_set():
            await self.room.wait()

    # -- commits ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit staged records and acknowledged deletions in one transaction. If the store
        cannot write, they wait in memory (the oldest dropped beyond ``live_limit``, counted
        ``disk_full``) and the write is tried again every ``RETRY_WRITE``."""
        self._flush_scheduled = False
        if not self.staging and not self.deletes:
            return
        staged, deletes = self.staging, self.deletes
        try:
            self.store.write(staged, deletes, self.next_seq - 1)
        except StoreError as exc:
            self._cannot_write(exc)
            return
        self.staging, self.deletes = [], []
        if self._failing_since is not None:
            log.warning(
                "the buffer writes again",
                after_s=round(time.monotonic() - self._failing_since, 1),
                written=len(staged),
                dropped=self.outcomes.dropped["disk_full"],
            )
            self._failing_since = None
        if staged:
            self.live.extend(staged)
            while len(self.live) > self.live_limit:
                self._to_backlog(self.live.popleft())
            self.ready.set()
        if not self._over():
            self.room.set()

    def _cannot_write(self, exc: StoreError) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._said_at >= SAY_AGAIN:
            self._said_at = now
            log.error(
                "the buffer cannot write: readings wait in memory",
                reason=str(exc),
                waiting=len(self.staging),
                hint="free space where buffer.path is, or lower buffer.max_size",
            )
        if self.deletes:  # deleting what was delivered may be what frees the space
            try:
                self.store.write([], self.deletes, self.next_seq - 1)
                self.deletes = []
            except StoreError:
                pass  # the same condition: said above
        excess = len(self.staging) - self.live_limit
        if excess > 0:
            dropped, self.staging = self.staging[:excess], self.staging[excess:]
            self.count -= len(dropped)
            self.bytes -= sum(r.size for r in dropped)
            self.outcomes.dropped["disk_full"] += len(dropped)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(RETRY_WRITE, self.flush)

    async def sync(self) -> None:
        """Flush, then fsync the store (every ``sync_interval``)."""
        self.flush()
        try:
            await self.store.sync()
        except StoreError as exc:
            self._cannot_write(exc)

    # -- to the broker ---------------------------------------------------------------------

    def connected(self) -> None:
        """The broker is (back) up: what waited during the outage becomes the backlog."""
        if self._connected_before:
            while self.live:
                self._to_backlog(self.live.popleft())
        self._connected_before = True
        if self.pending():
            self.ready.set()

    def pending(self) -> bool:
        return bool(self.resend or self.live or self.replay or self.cursor <= self.backlog_to)

    def waiting_below(self, seq: int) -> bool:
        """Whether a record older than ``seq`` is still to be handed out."""
        if self.resend and self.resend[0][0].seq < seq:
            return True
        if self.replay or self.cursor <= self.backlog_to:
            return True  # the backlog is older than anything live
        return (bool(self.live) and self.live[0].seq < seq) or (
            bool(self.staging) and self.staging[0].seq < seq
        )

    def next(self) -> tuple[Record, bool] | None:
        """The next record to publish and whether it is replayed; None when nothing waits.

        Backlog and live readings share the publishes by ``replay_rate`` (weighted round robin),
        so a long replay never starves fresh values. What was given back goes first.
        """
        if self.resend:
            record, replayed = self.resend.popleft()
            self._resend_seqs.discard(record.seq)
            return record, replayed
        backlog = self._backlog_head()
        if backlog is None and not self.live:
            self.ready.clear()
            return None
        self._credit += self.replay_rate
        if backlog is not None and (self._credit >= 1.0 or not self.live):
            self._credit = max(self._credit - 1.0, 0.0)
            return self.replay.popleft(), True
        return self.live.popleft(), False

    def handed(self, record: Record) -> None:
        self.out[record.seq] = record.size
        self.out_bytes += record.size

    def acknowledged(self, seqs: list[int]) -> None:
        """The broker has these (PUBACK/PUBCOMP, or written at QoS 0): delete at next commit."""
        self._settle(seqs, None)

    def dropped(self, seqs: list[int], reason: str) -> None:
        """Handed records the broker will never take (refused, too large): deleted at the next
        commit and counted as dropped for ``reason``, not delivered."""
        self._settle(seqs, reason)

    def discarded(self, seqs: list[int]) -> None:
        """Handed records that need not go out any more (a Sparkplug birth or death of an
        earlier session, which the current one's births replace): deleted at the next
        commit, counted neither as delivered nor as dropped (they hold no reading)."""
        self._settle(seqs, "")

    def _settle(self, seqs: list[int], dropped_for: str | None) -> None:
        outcomes = self.outcomes
        for seq in seqs:
            size = self.out.pop(seq, None)
            if size is None:
                continue  # a QoS 1 redelivery acknowledged twice
            self.out_bytes -= size
            self.deletes.append(seq)
            self.count -= 1
            self.bytes -= size
            if dropped_for is None:
                outcomes.delivered += 1
            elif dropped_for:
                outcomes.dropped[dropped_for] += 1

    def returned(self, record: Record, replayed: bool = False) -> None:
        """A handed record comes back unsent (or lost on the way): it goes out again before
        anything else, in the order given back (give back the newest first)."""
        if self.out.pop(record.seq, None) is not None:
            self.out_bytes -= record.size
        self.resend.appendleft((record, replayed))
        self._resend_seqs.add(record.seq)
        self.ready.set()

    # -- internals -------------------------------------------------------------------------

    def _to_backlog(self, record: Record) -> None:
        """A committed record leaves memory; it stays on disk as part of the backlog."""
        if self.cursor > self.backlog_to:
            self.cursor = record.seq
        self.backlog_to = max(self.backlog_to, record.seq)

    def _backlog_head(self) -> Record | None:
        while not self.replay and self.cursor <= self.backlog_to:
            records, corrupt, last = self.store.read(self.cursor, self.backlog_to, READ_CHUNK)
            self.cursor = last + 1
            skip = self.out.keys() | self._resend_seqs
            self.replay.extend(r for r in records if r.seq not in skip)
            if corrupt:
                self._drop_corrupt(corrupt)
        return self.replay[0] if self.replay else None

    def _drop_corrupt(self, seqs: list[int]) -> None:
        log.error("dropping corrupt buffered records", count=len(seqs), first=seqs[0])
        self.deletes.extend(seqs)
        self.outcomes.dropped["corrupt"] += len(seqs)
        self.flush()
        self.count, self.bytes, _, _ = self.store.totals()
        self.count += len(self.staging)
        self.bytes += sum(r.size for r in self.staging)

    def _make_room(self) -> None:
        if self.on_full == "block_oldest_first":
            if self.room.is_set():
                log.warning("buffer full: polls wait until the oldest are delivered")
            self.room.clear()
            return
        dropped = 0
        while self._over():
            victim = self._oldest_waiting()
            if victim is None:
                break  # everything left is in flight: it leaves when acknowledged
            seq, size, committed = victim
            if committed:
                self.deletes.append(seq)
            self.count -= 1
            self.bytes -= size
            dropped += 1
        if dropped:
            if not self.outcomes.dropped["buffer_full"]:
                log.warning("buffer full: dropping the oldest readings", max_size=self.max_size)
            self.outcomes.dropped["buffer_full"] += dropped

    def _over(self) -> bool:
        """Over ``max_size`` with what waits. Messages in flight (at most the forwarder's
        window) come on top: they leave as soon as they are acknowledged."""
        return self.bytes - self.out_bytes > self.max_size

    def _oldest_waiting(self) -> tuple[int, int, bool] | None:
        """Remove and return (seq, size, committed) of the oldest record not in flight."""
        if self.resend:
            record, _ = self.resend.popleft()
            self._resend_seqs.discard(record.seq)
            return record.seq, record.size, True
        if self.replay:
            record = self.replay.popleft()
            return record.seq, record.size, True
        while self.cursor <= self.backlog_to:
            sizes = self.store.sizes(self.cursor, self.backlog_to, READ_CHUNK)
            waiting = [
                (seq, size)
                for seq, size in sizes
                if seq not in self.out and seq not in self._resend_seqs
            ]
            if not sizes:
                self.cursor = self.backlog_to + 1
                break
            if not waiting:
                self.cursor = sizes[-1][0] + 1
                continue
            seq, size = waiting[0]
            self.cursor = seq + 1
            return seq, size, True
        if self.live:
            record = self.live.popleft()
            return record.seq, record.size, True
        if self.staging:
            record = self.staging.pop(0)
            return record.seq, record.size, False
        return None

    def stats(self) -> dict[str, object]:
        # Delivered rows are deleted at the next sync: with nothing buffered, nothing is old.
        oldest = self.store.oldest_created() if self.count else None
        if oldest is None and self.count and self.staging:  # the store could not write
            oldest = self.staging[0].created
        return {
            "delivered": self.outcomes.delivered,
            "dropped": dict(self.outcomes.dropped),
            "buffered": self.count,
            "buffered_bytes": self.bytes,
            "oldest_buffered_s": round(time.time() - oldest, 1) if oldest else 0.0,
            "last_seq": self.next_seq - 1,
        }

    def close(self) -> None:
        self.flush()
        self.store.close()
