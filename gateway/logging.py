"""structlog set-up: human-readable on a terminal, JSON lines otherwise (for journald, Loki...)."""

from __future__ import annotations

import asyncio
import logging
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
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


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
