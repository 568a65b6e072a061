"""Store-and-forward between the pipeline and the MQTT sink.

A reading is written to the store before it is published and deleted only after the broker
acknowledged it, so a broker outage or a crash loses nothing that was committed. ``Buffer`` keeps
the order and the accounting (delivered, dropped by reason, buffered); a ``Store`` keeps the
records: ``SqliteStore`` on disk (durable), ``MemoryStore`` in memory (lost on a crash).
"""

from gateway.delivery.buffer.buffer import Buffer, Outcomes
from gateway.delivery.buffer.record import Record
from gateway.delivery.buffer.store import MemoryStore, SqliteStore, Store, open_store

__all__ = ["Buffer", "MemoryStore", "Outcomes", "Record", "SqliteStore", "Store", "open_store"]
