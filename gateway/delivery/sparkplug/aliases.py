"""The metrics' aliases, kept on disk beside bdSeq: a DDATA waiting in the durable buffer
names its metrics by alias only, so an alias must mean the same metric after a restart, also
when the map was edited meanwhile (a point inserted, removed or retyped).

A metric (device, point) keeps its alias for good; a new one gets the next unused number; a
point whose datatype changed gets a new alias (a backlog value of the old type must not be
read as the new). Aliases of points no longer in the map stay reserved.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import structlog

from gateway.files import private_folder, write_private

log = structlog.get_logger("gateway.sparkplug")

Entry = tuple[int, int | None]  # alias, datatype (None: decided by the first value)


class Aliases:
    def __init__(self, path: Path | None, backlog: bool = False) -> None:
        """``path``: the file; None keeps the table in memory (tests). ``backlog``: the
        buffer holds records of an earlier run, whose aliases a lost table cannot say."""
        self.path = path
        self._changed = False
        self._table: dict[str, dict[str, Entry]] = {}
        lost = self._read()
        if lost is not None and backlog:
            # Numbers no earlier table can have used (they grow with the clock): a waiting
            # DDATA then resolves to nothing, and its values are left out, never misread.
            log.error(
                f"{lost}: new aliases are numbered apart, and the values waiting in the buffer "
                "from earlier runs are left out of their DDATA",
                file=str(self.path),
            )
            self._next = int(time.time()) << 16
        else:
            self._next = 1 + max(
                (alias for points in self._table.values() for alias, _ in points.values()),
                default=0,
            )

    def _read(self) -> str | None:
        """Fill the table from the file; what went wrong when there is none to read."""
        if self.path is None:
            return None
        try:
            data = orjson.loads(self.path.read_bytes())
            self._table = {
                device: {point: _entry(value) for point, value in points.items()}
                for device, points in data.items()
            }
            return None
        except FileNotFoundError:
            return None  # the first run in Sparkplug mode
        except OSError as exc:
            return f"cannot read the saved aliases ({exc.strerror})"
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            self._table = {}
            return "the saved aliases are damaged"

    def alias(self, device: str, point: str, datatype: int | None) -> Entry:
        """The metric's alias and datatype: its own, or a new alias when it is new or changed
        its datatype. ``datatype`` None (decided by the first value): the one saved, if any."""
        points = self._table.setdefault(device, {})
        entry = points.get(point)
        if entry is not None and (entry[1] is None or datatype is None or entry[1] == datatype):
            if entry[1] is None and datatype is not None:
                entry = points[point] = (entry[0], datatype)
                self._changed = True
            return entry
        alias, self._next = self._next, self._next + 1
        entry = points[point] = (alias, datatype)
        self._changed = True
        return entry

    def save(self) -> None:
        """Written (atomically) when it changed, before any message uses the new aliases."""
        if self.path is None or not self._changed:
            return
        try:
            private_folder(self.path.parent)
            write_private(self.path, orjson.dumps(self._table, option=orjson.OPT_SORT_KEYS))
        except OSError as exc:
            # They hold for this run; a restart may then number new metrics differently.
            log.error("cannot save the aliases", file=str(self.path), reason=exc.strerror)
            return
        self._changed = False


def _entry(value: object) -> Entry:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(value)
    alias, datatype = value
    if (
        not isinstance(alias, int)
        or alias < 1
        or not (datatype is None or isinstance(datatype, int))
    ):
        raise ValueError(value)
    return alias, datatype
