"""Modbus exception answers: the device answered, refusing the request; the connection is fine."""

from __future__ import annotations

from gateway.errors import DeviceError

EXCEPTION_REASONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusExceptionAnswer(DeviceError):
    """The device answered with a Modbus exception: the connection is fine."""

    def __init__(self, code: int) -> None:
        super().__init__(
            EXCEPTION_REASONS.get(code, f"modbus exception {code}"), connection_lost=False
        )
        self.code = code
