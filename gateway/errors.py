"""The exception tree of the gateway, in one place.

- ``GatewayError``: base of every error the gateway raises on purpose.
  - ``ConfigError``: the device map is wrong; carries every problem found (file, line, column,
    sentence) so a user fixes them all in one go.
  - ``DeviceError``: a southbound device failed (timeout, refused, garbage, protocol exception).
    Carries a short ``reason`` that becomes the reading's quality reason.
    - ``DeviceTimeout``: no answer in time.
  - ``CommandError``: a command (an MQTT write request) is refused before it reaches a device:
    not writable, out of range, a wrong type... Its message is what the caller reads.
  - ``BrokerError``: the MQTT broker refused us (CONNACK, DISCONNECT) or a message; the
    transport logs a refused connection and reconnects.
    - ``Refused``: the broker refused the connection; says why in plain words, with a hint.
    - ``MessageTooLarge``: a message over the broker's maximum packet size (MQTT 5): it can
      never be delivered, so it is dropped and counted.
    - ``NotConnected``: a message handed to the transport while it has no connection.
  - ``StoreError``: the durable buffer cannot write (a full disk, an I/O error); what was to
    be written waits in memory and is written again.
  - ``TransportFailed``: the MQTT transport itself failed (paho or a listener raised); the
    gateway stops rather than stall.

Lower-library exceptions (pymodbus, asyncua, PyYAML, ssl) are translated into these where they
are caught, never returned as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a device map, located as precisely as the YAML allows."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigError(GatewayError):
    """A device map could not be loaded; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.column))
        super().__init__("\n".join(str(i) for i in self.issues))


class CommandError(GatewayError):
    """A command refused by the gateway; ``str(error)`` is the caller's ``error`` text.

    ``command_id`` is the command's correlation id when it could be read before the refusal.
    """

    def __init__(self, message: str, command_id: str | int | float | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class BrokerError(GatewayError):
    """The broker refused the connection or broke the protocol; ``str(error)`` says how."""


class MessageTooLarge(BrokerError):
    """A message longer than the broker accepts (its MQTT 5 Maximum Packet Size)."""


class NotConnected(BrokerError):
    """The transport has no connection to the broker right now."""


class Refused(BrokerError):
    """The broker refused the connection: ``reason`` in plain words, ``hint`` what to do."""

    def __init__(self, reason: str, hint: str | None = None, retry_now: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.retry_now = retry_now  # the next attempt differs (a plainer will): no backoff


class StoreError(GatewayError):
    """The buffer's store could not write; ``str(error)`` is SQLite's or the system's reason."""


class TransportFailed(GatewayError):
    """The MQTT transport failed in a way a reconnect does not mend (a bug, not the network)."""


class DeviceError(GatewayError):
    """A device did not answer as it should. ``reason`` is short and user-facing."""

    def __init__(self, reason: str, *, connection_lost: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # False when the device answered (e.g. a Modbus exception): the connection is still fine.
        self.connection_lost = connection_lost


class DeviceTimeout(DeviceError):
    """The device did not answer in time (the connection may still be fine: a retry may)."""

    def __init__(self) -> None:
        super().__init__("timeout")
