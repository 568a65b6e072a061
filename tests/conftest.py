from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Mosquitto
from tests.integration.line import Line


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Debian's mosquitto on a free loopback port, shared by the session's tests."""
    # No limit on what the broker queues for a slow subscriber (default 1,000 messages):
    # a burst of 5,000 readings must not be dropped by the broker before the test sees it.
    # set_tcp_nodelay: as recommended for commands (mosquitto's Nagle adds ~40 ms per answer).
    server = Mosquitto(
        tmp_path_factory.mktemp("mosquitto"), extra="max_queued_messages 0\nset_tcp_nodelay true\n"
    )
    yield server
    server.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def make_line(workdir: Path) -> Iterator[Callable[..., Line]]:
    """``make_line(broker=..., points=..., login=...)``: a ``Line``, closed after the test."""
    made: list[Line] = []

    def make(**options: Any) -> Line:
        made.append(Line(workdir, **options))
        return made[-1]

    yield make
    for line in made:
        line.close()
