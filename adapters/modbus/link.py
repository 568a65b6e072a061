"""One Modbus connection (TCP, UDP, RTU over TCP, or a serial port) shared by every unit behind it.

Several devices behind one Modbus gateway or on one RS-485 bus share a link; their requests are
serialized by the link's lock, because Modbus allows one outstanding request per connection
(pymodbus enforces it too) and a serial bus carries one frame at a time. The link owns the
reconnect backoff, so devices sharing it do not hammer a dead gateway each on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from adapters.modbus.client import ModbusClient, make_client
from adapters.modbus.config import BIT_TABLES, ModbusDevice, ModbusRtuDevice
from gateway.backoff import Backoff
from gateway.errors import DeviceError, DeviceTimeout

log = structlog.get_logger("adapters.modbus")

T = TypeVar("T")


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
        self._client: ModbusClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

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
        client = make_client(self.first, self.timeout)
        try:
            async with asyncio.timeout(self.timeout * 2 + 1):
                await client.connect()
        except (TimeoutError, DeviceError) as exc:
            client.close()
            why = exc.reason if isinstance(exc, DeviceError) else "timeout"
            self.last_error = f"cannot connect to {self.name}" + (f": {why}" if why else "")
            self.retry_at = loop.time() + self.backoff.next_delay()
            raise DeviceError(self.last_error) from None
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
                if not isinstance(exc, DeviceTimeout) or attempt == retries:
                    raise
        raise AssertionError("unreachable")

    async def write(self, table: str, address: int, values: list[int] | bool, unit: int) -> None:
        """One write request: FC 5 for a coil, FC 6 for one register, FC 16 for several.

        Never retried: a write whose answer was lost may have been applied, and the caller
        reads back to find out.
        """
        await self._exchange(self._write_once, table, address, values, unit)

    async def _exchange(self, request: Callable[..., Awaitable[T]], *args: Any) -> T:
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
        if table in BIT_TABLES:
            return await client.read_bits(table, address, count, unit)
        return await client.read_registers(table, address, count, unit)

    async def _write_once(
        self, table: str, address: int, values: list[int] | bool, unit: int
    ) -> None:
        await self._connected_client().write(table, address, values, unit)

    def _connected_client(self) -> ModbusClient:
        if self._client is None:
            raise DeviceError(self.last_error or "not connected")
        return self._client


def inter_frame_silence(device: ModbusDevice) -> float:
    """3.5 character times on a serial line (11 bits a character); 1.75 ms above 19200 baud,
    as the Modbus serial line specification fixes it. Zero for TCP and UDP."""
    if not isinstance(device, ModbusRtuDevice):
        return 0.0
    if device.baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / device.baudrate
