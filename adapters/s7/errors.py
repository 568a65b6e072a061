"""python-snap7's exceptions -> the gateway's, by type, in one place."""

from __future__ import annotations

from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError

from gateway.errors import DeviceError, DeviceTimeout


class S7Refusal(DeviceError):
    """The PLC answered, refusing the request (an address out of range, a data block that does
    not exist, no access): the connection is fine, only the request's points are bad.

    python-snap7 raises one type for an item the PLC refuses and for an answer it cannot read,
    with nothing but the text to tell them apart: both are taken as a refusal, and the source
    starts a new connection when every request of a poll is refused (source.py)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, connection_lost=False)


def translate(exc: BaseException) -> DeviceError:
    """The gateway's error for one raised by python-snap7 or the socket under it."""
    if isinstance(exc, DeviceError):
        return exc
    if isinstance(exc, TimeoutError | S7TimeoutError):
        return DeviceTimeout()
    if isinstance(exc, S7ProtocolError):
        # Its text is the PLC's item code in words ("Invalid address (0x05)").
        return S7Refusal(_reason(exc) or "refused by the PLC")
    if isinstance(exc, S7ConnectionError):
        if isinstance(exc.__context__, ConnectionRefusedError):  # wrapped by the client
            return DeviceError("connection refused", connection_lost=True)
        return DeviceError(_reason(exc) or "connection lost", connection_lost=True)
    if isinstance(exc, ConnectionRefusedError):
        return DeviceError("connection refused", connection_lost=True)
    if isinstance(exc, OSError):
        return DeviceError(exc.strerror or "connection lost", connection_lost=True)
    if isinstance(exc, S7Error):
        return DeviceError(_reason(exc) or type(exc).__name__, connection_lost=True)
    raise exc


def _reason(exc: BaseException) -> str:
    """The library's sentence, shortened to what a reading's reason needs."""
    text = str(exc).strip()
    for prefix in ("Read operation failed: ", "Write operation failed: ", "Connection failed: "):
        text = text.removeprefix(prefix)
    return text[:120]
