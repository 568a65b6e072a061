"""structlog set-up: human-readable on a terminal, JSON lines otherwise (for journald, Loki...).

Under systemd, with stderr connected to the journal (``$JOURNAL_STREAM`` names it), each line
starts with its syslog priority (``<3>`` for an error): journald files the line at that level,
so ``journalctl -p err -u factory-gateway`` shows the gateway's errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def configure(fmt: str = "auto", level: str = "info") -> None:
    """``fmt``: auto | console | json. Logs go to stderr; stdout is for command output."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    console = fmt == "console"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()  # JSON escapes control characters itself
    )
    journal = to_journal()
    if journal:
        renderer = _Prioritized(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([escape_controls] if console else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging: warnings and up, same stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StdlibFormatter(journal))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


# structlog's method names and stdlib levels -> syslog priorities (sd-daemon(3)).
_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3}


def to_journal() -> bool:
    """Whether stderr is the systemd journal's stream (``$JOURNAL_STREAM`` is its
    ``device:inode``; a redirected stderr under systemd is not)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


class _Prioritized:
    """A renderer whose lines start with their syslog priority."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        return f"<{_PRIORITIES.get(name, 2)}>{self.renderer(logger, name, event)}"


class _StdlibFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if not self.journal:
            return line
        level = record.levelno
        priority = 2 if level >= logging.CRITICAL else 3 if level >= logging.ERROR else 4
        return f"<{priority if level >= logging.WARNING else 6}>{line}"


# Terminal control characters (escape sequences can rewrite a terminal's screen or title) and
# Unicode direction overrides (they can make a log line read other than it is).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Text from outside (command ids, values, topics) printed escaped on a console."""
    for key, value in event.items():
        if isinstance(value, str) and _CONTROLS.search(value):
            event[key] = _CONTROLS.sub(_escaped, value)
    return event


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Tally:
    """Counts a repeated event and logs it at most once per ``every`` seconds: the first at
    once, then how many more happened, so a flood costs a count, not a log line each."""

    def __init__(self, log: Any, event: str, every: float = 10.0, **context: Any) -> None:
        self.log, self.event, self.every, self.context = log, event, every, context
        self.total = 0
        self._unsaid = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self) -> None:
        self.total += 1
        self._unsaid += 1
        if self._timer is None:
            self._say()

    def _say(self, again: bool = True) -> None:
        self._timer = None
        if self._unsaid:
            self.log.warning(self.event, count=self._unsaid, total=self.total, **self.context)
            self._unsaid = 0
            if again:
                self._timer = asyncio.get_running_loop().call_later(self.every, self._say)

    def close(self) -> None:
        """Say what is still unsaid (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        self._say(again=False)
