"""Settings that expose the gateway are said at every start; outside text is escaped on a
console."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.config.schema import MqttSection
from gateway.logging import escape_controls
from gateway.mqtt.settings import data_session

INSECURE = "mqtt.insecure is true"
CLEAR = "the MQTT password is sent in clear text"


@pytest.mark.parametrize(
    ("mqtt", "said"),
    [
        ({"url": "mqtts://broker.example:8883", "insecure": True}, [INSECURE]),
        ({"url": "mqtt://broker.example:1883", "username": "u", "password": "p"}, [CLEAR]),
        ({"url": "mqtt://127.0.0.1:1883", "username": "u", "password": "p"}, []),  # loopback
        ({"url": "mqtts://broker.example:8883", "username": "u", "password": "p"}, []),
    ],
)
def test_exposing_settings_are_warned_at_start(mqtt: dict[str, Any], said: list[str]) -> None:
    with capture_logs() as logs:
        data_session(MqttSection.model_validate(mqtt), "gw", None)
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert [p for w in warnings for p in (INSECURE, CLEAR) if w.startswith(p)] == said
    assert all("password" not in e for e in logs)


def test_console_logs_escape_control_characters_from_outside() -> None:
    event = {"event": "command", "id": "\x1b[2J\x1b[31mok", "value": "a\u202eb", "n": 3}
    assert escape_controls(None, "info", event) == {
        "event": "command",
        "id": "\\x1b[2J\\x1b[31mok",
        "value": "a\\u202eb",
        "n": 3,
    }
    plain = {"event": "text with ü, tabs\tand\nlines"}
    assert escape_controls(None, "info", dict(plain)) == plain
