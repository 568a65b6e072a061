"""The birth/death sequence number (bdSeq), kept on disk so that it survives a restart and a
``kill -9``: a host matches an NDEATH (the will of one MQTT connection) with the NBIRTH of the
same connection by it, across the gateway's lives.

Sparkplug 3.0: it starts at 0 and goes up by one with every MQTT CONNECT
[tck-id-topics-nbirth-bdseq-increment]; the will's NDEATH and the NBIRTH that follows carry the
same value [tck-id-payloads-nbirth-bdseq-repeat]. Like ``seq`` it wraps after 255 (the reading
Eclipse Tahu and the hosts we know take; the specification does not bound it).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from gateway.files import private_folder, write_private

log = structlog.get_logger("gateway.sparkplug")

WRAP = 256


class BdSeq:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: int | None = None  # the value of the connection being made or made
        self._unsaved = False  # the last value could not be saved (said once)
        self._last = self._read()

    def _read(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the saved bdSeq: starting again from 0", reason=exc.strerror)
            return None
        if not text.isdigit():
            log.warning(
                "the saved bdSeq is not a number: starting again from 0", file=str(self.path)
            )
            return None
        return int(text) % WRAP

    def next(self) -> int:
        """The value for a new MQTT CONNECT, saved before the CONNECT is sent. When it cannot
        be saved (a full disk) the gateway connects all the same: held data would wait for
        ever; only a crash before it is saved again could make a host pair wrongly."""
        value = 0 if self._last is None else (self._last + 1) % WRAP
        try:
            private_folder(self.path.parent)
            write_private(self.path, f"{value}\n".encode())
        except OSError as exc:
            if not self._unsaved:
                log.error("cannot save the bdSeq: connecting with it unsaved",
                          file=str(self.path), reason=exc.strerror, bd_seq=value)  # fmt: skip
            self._unsaved = True
        else:
            self._unsaved = False
        self._last = self.current = value
        return value
