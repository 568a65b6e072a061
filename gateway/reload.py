"""Hot reload: what changed between the running map and a new one, and when to look.

The new map is validated first; a bad one is logged, every error as ``FILE:LINE:COL: ...``, and
the running map stays. A good one is applied device by device (``Gateway.apply``): unchanged
devices keep running (their polls, their connection), changed ones restart, removed ones stop,
added ones start; a change of the broker connection reconnects, the buffer carries over.
Sections that shape what is already stored or listening (``gateway``, topics, ``buffer``,
``http``, ``commands``) wait for a restart, and the log says so.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from gateway.config.load import Config
from gateway.config.schema import DeviceConfig
from gateway.errors import ConfigError, GatewayError

log = structlog.get_logger("gateway.reload")

WATCH_EVERY = 1.0  # seconds between two looks at the map's files (run --watch)
# mqtt keys that name topics: what is buffered was encoded with them, so they wait for a restart.
TOPIC_KEYS = ("topic", "batch", "batch_topic", "format")
RESTART_SECTIONS = ("gateway", "buffer", "http", "commands", "sparkplug")


@dataclass(frozen=True)
class Change:
    """The difference between the running map and a new one, and the map to run next."""

    config: Config  # the new map, with the sections that wait for a restart as they run now
    added: list[DeviceConfig]
    removed: list[str]
    restarted: list[DeviceConfig]  # changed, or sharing a connection with a device that did
    sharing: list[str]  # restarted only because they share a connection with one that changed
    unchanged: list[str]
    mqtt: bool  # the broker connection changed: reconnect
    pending: list[str]  # changed sections that need a restart

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.restarted or self.mqtt)


def diff(running: Config, new: Config) -> Change:
    old = {d.id: d for d in running.devices}
    fresh = {d.id: d for d in new.devices}
    pending = [s for s in RESTART_SECTIONS if getattr(running, s) != getattr(new, s)]
    pending += [f"mqtt.{k}" for k in TOPIC_KEYS if getattr(running.mqtt, k) != getattr(new.mqtt, k)]
    kept = {s: getattr(running, s) for s in RESTART_SECTIONS}
    mqtt = new.mqtt.model_copy(update={k: getattr(running.mqtt, k) for k in TOPIC_KEYS})
    config = replace(new, mqtt=mqtt, **kept)

    changed = {i for i in old.keys() & fresh.keys() if old[i] != fresh[i]}
    added = [d for i, d in fresh.items() if i not in old]
    removed = [i for i in old if i not in fresh]
    # Devices that share a connection (units behind one Modbus gateway, one serial bus) restart
    # together: a connection is opened once for all its devices.
    links = {old[i].link_key for i in (*changed, *removed)}
    links |= {fresh[i].link_key for i in changed} | {d.link_key for d in added}
    restart = {i for i in old.keys() & fresh.keys() if i in changed or old[i].link_key in links}
    return Change(
        config,
        added,
        removed,
        [fresh[i] for i in fresh if i in restart],
        [i for i in fresh if i in restart and i not in changed],
        [i for i in fresh if i in old and i not in restart],
        mqtt != running.mqtt,
        pending,
    )


class Reloader:
    """Reloads on request (SIGHUP) and, when watching, when one of the map's files changes."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        load: Callable[[Sequence[str | Path]], Config],
        apply: Callable[[Config], Awaitable[Sequence[str] | None]],
        watch: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.load = load
        self.apply = apply
        self.watch = watch
        self._requested = asyncio.Event()
        self._files: list[str] = []
        self._folders: list[str] = []
        self.outcomes: Counter[str] = Counter()  # applied | refused (for /metrics)
        # The latest reload: (wall time, applied | refused, why refused), for the status page.
        self.last: tuple[float, str, str | None] | None = None

    def request(self) -> None:
        """Reload soon (a signal handler calls it)."""
        self._requested.set()

    def watching(self, config: Config) -> None:
        """The files the running map was read from, and the folders of the files it includes
        (a new file there may match an include pattern). The map's own folder is not watched:
        a log file or an editor's swap file appearing there is no reason to read the map."""
        self._files = list(config.sources)
        own = {os.path.dirname(os.path.abspath(f)) for f in config.files}
        every = {os.path.dirname(os.path.abspath(f)) for f in config.sources}
        self._folders = sorted(every - own)

    async def run(self) -> None:
        seen = self._fingerprint() if self.watch else {}
        while True:
            if self.watch:
                try:
                    await asyncio.wait_for(self._requested.wait(), WATCH_EVERY)
                except TimeoutError:
                    if self._fingerprint() == seen:
                        continue
                    log.info("the device map changed on disk: reloading")
            else:
                await self._requested.wait()
            self._requested.clear()
            before = self._fingerprint() if self.watch else {}
            await self._reload()
            if self.watch:
                # The files as they were before reading: one changed while the map was read (an
                # editor still writing it) looks changed, and is read again. Files the new map
                # names for the first time, as they are now.
                seen = {name: before.get(name, mark) for name, mark in self._fingerprint().items()}

    async def _reload(self) -> None:
        try:
            # Reading a big map takes a while: the devices keep polling meanwhile.
            config = await asyncio.to_thread(self.load, self.paths)
            pending = await self.apply(config)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error(str(issue))
            log.error(
                "the new device map is not valid: the running one stays",
                errors=len(exc.issues),
            )
            first = str(exc.issues[0]) if exc.issues else "invalid"
            reason = f"{len(exc.issues)} error(s), the first: {first}"
        except OSError as exc:
            log.error("the device map cannot be read: the running one stays", reason=str(exc))
            reason = f"cannot be read: {exc}"
        except GatewayError as exc:  # e.g. a TLS file that cannot be loaded: nothing was changed
            log.error(
                "the new device map cannot be applied: the running one stays", reason=str(exc)
            )
            reason = f"cannot be applied: {exc}"
        else:
            self.outcomes["applied"] += 1
            waiting = f"{', '.join(pending)} at the next restart" if pending else None
            self.last = (time.time(), "applied", waiting)
            self.watching(config)
            return
        self.outcomes["refused"] += 1
        self.last = (time.time(), "refused", reason)

    def _fingerprint(self) -> dict[str, tuple[int, int, int, int] | None]:
        """What the files and their folders look like now: a file replaced (a new inode), one
        written (mtime, ctime, size), a file added to or removed from a folder."""
        names = self._files or [str(p) for p in self.paths]
        marks: dict[str, tuple[int, int, int, int] | None] = {}
        for name in [*names, *self._folders]:
            try:
                info = os.stat(name)
            except OSError:
                marks[name] = None
            else:
                marks[name] = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
        return marks
