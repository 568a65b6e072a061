"""One Modbus connection (TCP, UDP, RTU over TCP, or a serial port) shared by every unit behind it.

Several devices behind one Modbus gateway or on one RS-485 bus share a link; their requests are
serialized by the link's lock, because Modbus allows one outstanding request per connection
(pymodbus enforces it too) and a serial bus carries one frame at a time. The link owns the
reconnect backoff, so devices sharing it do not hammer a dead gateway each on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.client import (
    AsyncModbusSerialClient,
    AsyncModbusTcpClient,
    AsyncModbusUdpClient,
)
from pymodbus.exceptions import ModbusException

from adapters.modbus.config import BIT_TABLES, ModbusDevice, ModbusRtuDevice, ModbusTcpDevice
from adapters.modbus.decode import registers_to_bytes
from adapters.modbus.errors import ModbusExceptionAnswer
from adapters.modbus.tcp import TcpClient
from gateway.backoff import Backoff
from gateway.errors import DeviceError

log = structlog.get_logger("adapters.modbus")


class ModbusLink:
    def __init__(self, devices: list[ModbusDevice]) -> None:
        self.devices = devices
        self.first = devices[0]
        self.name = self.first.endpoint
        self.timeout = max(d.timeout for d in devices)
        self.users = len(devices)
        self.lock = asyncio.Lock()
        self._connecting = asyncio.Lock()
        self.backoff = Backoff(initial=min(1.0, min(d.poll_interval for d in devices)), cap=30.0)
        self.retry_at = 0.0  # loop time before which no reconnect is tried
        self.silence = inter_frame_silence(self.first)
        self._last_frame = 0.0  # loop time the last answer (or timeout) ended
        self.last_error: str | None = None
        self._client: Any = None

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def connect(self, pause_after_connect: float = 0.0) -> None:
        """Connect if needed; raise DeviceError (without trying) while backing off."""
        if self.connected:
            return
        async with self._connecting:  # devices sharing the link: one opens it, the others wait
            await self._connect(pause_after_connect)

    async def _connect(self, pause_after_connect: float) -> None:
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self.retry_at and self.last_error is not None:
            raise DeviceError(self.last_error)
        self.close()
        detail = ""
        client: Any = None
        try:
            client = self._make_client()
            async with asyncio.timeout(self.timeout * 2 + 1):
                ok = await client.connect()
        except TimeoutError:
            ok, detail = False, ": timeout"
        except (
            Exception
        ) as exc:  # pyserial and termios raise their own types; all mean "cannot open"
            ok, detail = False, f": {exc}"
        if not ok:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            self.last_error = f"cannot connect to {self.name}{detail}"
            self.retry_at = loop.time() + self.backoff.next_delay()
            raise DeviceError(self.last_error)
        self._client = client
        self.last_error = None
        self.backoff.reset()
        if pause_after_connect:
            await asyncio.sleep(pause_after_connect)

    def failed(self, reason: str) -> None:
        """A request failed in a way that leaves the connection unusable: drop it, back off."""
        self.close()
        self.last_error = reason
        self.retry_at = asyncio.get_running_loop().time() + self.backoff.next_delay()

    def release(self) -> None:
        """A device is done with the link; the last one closes it."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def read(
        self, table: str, address: int, count: int, unit: int, retries: int = 0
    ) -> bytes | list[bool]:
        """One read request, serialized on the link; ``retries`` more tries after a timeout.

        Registers come back as their wire bytes (two per register, big-endian), bits as bools.
        """
        for attempt in range(retries + 1):
            try:
                values: bytes | list[bool] = await self._exchange(
                    self._read_once, table, address, count, unit
                )
                return values
            except DeviceError as exc:
                if exc.reason != "timeout" or attempt == retries:
                    raise
        raise AssertionError("unreachable")

    async def write(self, table: str, address: int, values: list[int] | bool, unit: int) -> None:
        """One write request: FC 5 for a coil, FC 6 for one register, FC 16 for several.

        Never retried: a write whose answer was lost may have been applied, and the caller
        reads back to find out.
        """
        await self._exchange(self._write_once, table, address, values, unit)

    async def _exchange(self, request: Any, *args: Any) -> Any:
        """Run one request, keeping the RTU inter-frame silence before it."""
        if not self.silence:
            return await request(*args)
        loop = asyncio.get_running_loop()
        if self.silence:
            # RTU: a frame ends after 3.5 characters of silence; pymodbus does not wait it
            # out between requests, so a fast poll could run two frames together.
            gap = self._last_frame + self.silence - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
        try:
            return await request(*args)
        finally:
            self._last_frame = loop.time()

    async def _read_once(
        self, table: str, address: int, count: int, unit: int
    ) -> bytes | list[bool]:
        client = self._connected_client()
        bits = table in BIT_TABLES
        if isinstance(client, TcpClient):
            try:
                raw = await client.read(table, address, count, unit)
            except OSError as exc:
                raise DeviceError(f"connection error: {exc.strerror or exc}") from None
            if bits:
                return [bool(raw[i >> 3] >> (i & 7) & 1) for i in range(count)]
            return raw
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
        }[table]
        response = await self._answer(lambda: call(address, count=count, device_id=unit))
        if bits:
            flags = list(response.bits)[:count]
            if len(flags) != count:
                raise DeviceError("short response", connection_lost=False)
            return flags
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceError("short response", connection_lost=False)
        return registers_to_bytes(registers)

    async def _write_once(
        self, table: str, address: int, values: list[int] | bool, unit: int
    ) -> None:
        client = self._connected_client()
        if isinstance(client, TcpClient):
            try:
                await client.request(unit, write_pdu(table, address, values))
            except OSError as exc:
                raise DeviceError(f"connection error: {exc.strerror or exc}") from None
            return
        if table == "coil":
            await self._answer(lambda: client.write_coil(address, bool(values), device_id=unit))
        elif isinstance(values, list) and len(values) > 1:
            await self._answer(lambda: client.write_registers(address, values, device_id=unit))
        else:
            assert isinstance(values, list) and table == "holding"
            await self._answer(lambda: client.write_register(address, values[0], device_id=unit))

    def _connected_client(self) -> Any:
        if self._client is None:
            raise DeviceError(self.last_error or "not connected")
        return self._client

    async def _answer(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """Send a pymodbus request; its exceptions and exception answers -> ``DeviceError``."""
        try:
            async with asyncio.timeout(self.timeout * 2 + 1):  # a guard; pymodbus times out first
                response = await request()
        except TimeoutError:
            raise DeviceError("timeout") from None
        except ModbusException as exc:
            text = str(exc).lower()
            lost = not ("timeout" in text or "no response" in text)
            raise DeviceError("connection lost" if lost else "timeout") from None
        except OSError as exc:
            raise DeviceError(f"connection error: {exc.strerror or exc}") from None
        if response.isError():
            raise ModbusExceptionAnswer(getattr(response, "exception_code", 0))
        return response

    def _make_client(self) -> Any:
        device = self.first
        common: dict[str, Any] = {"timeout": self.timeout, "retries": 0, "reconnect_delay": 0}
        if isinstance(device, ModbusRtuDevice):
            return AsyncModbusSerialClient(
                device.port, framer=FramerType.RTU, **device.line_settings, **common
            )
        assert isinstance(device, ModbusTcpDevice)
        if device.protocol == "modbus-udp":
            return AsyncModbusUdpClient(device.host, port=device.port, **common)
        if device.protocol == "modbus-tcp":
            return TcpClient(device.host, device.port, self.timeout)
        return AsyncModbusTcpClient(device.host, port=device.port, framer=FramerType.RTU, **common)


def inter_frame_silence(device: ModbusDevice) -> float:
    """3.5 character times on a serial line (11 bits a character); 1.75 ms above 19200 baud,
    as the Modbus serial line specification fixes it. Zero for TCP and UDP."""
    if not isinstance(device, ModbusRtuDevice):
        return 0.0
    if device.baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / device.baudrate


def write_pdu(table: str, address: int, values: list[int] | bool) -> bytes:
    """FC 5 for a coil, FC 6 for one register, FC 16 for several."""
    if table == "coil":
        return struct.pack(">BHH", 5, address, 0xFF00 if values else 0)
    assert isinstance(values, list) and table == "holding"
    if len(values) == 1:
        return struct.pack(">BHH", 6, address, values[0])
    count = len(values)
    return struct.pack(f">BHHB{count}H", 16, address, count, 2 * count, *values)
