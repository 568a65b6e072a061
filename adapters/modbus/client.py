"""The boundary between a Modbus link and the code that speaks a framing: one ``ModbusClient``
protocol, two implementations.

- ``tcp.TcpClient``: the lean Modbus TCP client (MBAP on a bare asyncio transport).
- ``PymodbusClient``: pymodbus for every other framing (RTU over serial or TCP, UDP).

Both return registers as their wire bytes and bits as booleans, and raise only the gateway's
errors: ``DeviceError`` (``connection_lost`` says whether the connection is still usable) and
``ModbusExceptionAnswer``. pymodbus's exceptions are translated here, by type, and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, AsyncModbusUdpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from adapters.modbus.config import ModbusDevice, ModbusRtuDevice, ModbusTcpDevice
from adapters.modbus.decode import registers_to_bytes
from adapters.modbus.errors import ModbusExceptionAnswer
from gateway.errors import DeviceError, DeviceTimeout


class ModbusClient(Protocol):
    """One Modbus connection; one request at a time (the link's lock sees to it)."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the connection; ``DeviceError`` saying why it cannot be opened (its reason may
        be empty when the library does not say)."""
        ...

    def close(self) -> None: ...

    async def read_registers(self, table: str, address: int, count: int, unit: int) -> bytes:
        """``count`` holding or input registers as wire bytes (two per register)."""
        ...

    async def read_bits(self, table: str, address: int, count: int, unit: int) -> list[bool]:
        """``count`` coils or discrete inputs."""
        ...

    async def write(self, table: str, address: int, values: list[int] | bool, unit: int) -> None:
        """FC 5 for a coil, FC 6 for one register, FC 16 for several."""
        ...


class PymodbusClient:
    """A ``ModbusClient`` on one of pymodbus's async clients."""

    def __init__(self, client: ModbusBaseClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> None:
        try:
            ok = await self._client.connect()
        except (OSError, ValueError, ModbusException) as exc:  # a port pyserial cannot open
            raise DeviceError(str(exc)) from None
        if not ok:  # pymodbus says no more than that
            raise DeviceError("")

    def close(self) -> None:
        self._client.close()

    async def read_registers(self, table: str, address: int, count: int, unit: int) -> bytes:
        client = self._client
        read = client.read_holding_registers if table == "holding" else client.read_input_registers
        response = await self._answer(lambda: read(address, count=count, device_id=unit))
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceError("short response", connection_lost=False)
        return registers_to_bytes(registers)

    async def read_bits(self, table: str, address: int, count: int, unit: int) -> list[bool]:
        client = self._client
        read = client.read_coils if table == "coil" else client.read_discrete_inputs
        response = await self._answer(lambda: read(address, count=count, device_id=unit))
        bits = list(response.bits)[:count]
        if len(bits) != count:
            raise DeviceError("short response", connection_lost=False)
        return bits

    async def write(self, table: str, address: int, values: list[int] | bool, unit: int) -> None:
        client = self._client
        if table == "coil":
            await self._answer(lambda: client.write_coil(address, bool(values), device_id=unit))
        elif isinstance(values, list) and len(values) > 1:
            await self._answer(lambda: client.write_registers(address, values, device_id=unit))
        else:
            assert isinstance(values, list) and table == "holding"
            await self._answer(lambda: client.write_register(address, values[0], device_id=unit))

    async def _answer(self, request: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request; pymodbus's exceptions and exception answers as the gateway's errors."""
        try:
            async with asyncio.timeout(self._timeout * 2 + 1):  # a guard: pymodbus times out
                response = await request()
        except TimeoutError:
            raise DeviceTimeout from None
        except ModbusIOException:  # no (usable) answer within the timeout
            raise DeviceTimeout from None
        except ConnectionException:
            raise DeviceError("connection lost") from None
        except ModbusException as exc:
            raise DeviceError(f"request failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise DeviceError(f"connection error: {exc.strerror or exc}") from None
        if response.isError():
            raise ModbusExceptionAnswer(getattr(response, "exception_code", 0))
        return response


def make_client(device: ModbusDevice, timeout: float) -> ModbusClient:
    """The client for a device's framing: the lean one for Modbus TCP, pymodbus otherwise."""
    from adapters.modbus.tcp import TcpClient

    if isinstance(device, ModbusRtuDevice):
        line = device.line_settings
        serial = AsyncModbusSerialClient(
            device.port,
            framer=FramerType.RTU,
            baudrate=line["baudrate"],
            bytesize=line["bytesize"],
            parity=line["parity"],
            stopbits=line["stopbits"],
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
        )
        return PymodbusClient(serial, timeout)
    assert isinstance(device, ModbusTcpDevice)
    if device.protocol == "modbus-tcp":
        return TcpClient(device.host, device.port, timeout)
    if device.protocol == "modbus-udp":
        udp = AsyncModbusUdpClient(
            device.host, port=device.port, timeout=timeout, retries=0, reconnect_delay=0
        )
        return PymodbusClient(udp, timeout)
    rtu_over_tcp = AsyncModbusTcpClient(
        device.host,
        port=device.port,
        framer=FramerType.RTU,
        timeout=timeout,
        retries=0,
        reconnect_delay=0,
    )
    return PymodbusClient(rtu_over_tcp, timeout)
