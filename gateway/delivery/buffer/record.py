"""One message waiting for the broker: already encoded, with its topic and sequence number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    seq: int
    topic: str
    payload: bytes
    created: float  # epoch seconds: when the gateway took the reading(s) in
    # The oldest source timestamp of its readings (0: not known, read back from disk: use
    # ``created``); the age at the broker's acknowledgement is measured from it. Not stored.
    sampled: float = 0.0

    @property
    def size(self) -> int:
        """Bytes this record counts against ``buffer.max_size``."""
        return len(self.payload) + len(self.topic) + 32
