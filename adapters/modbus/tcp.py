"""A lean Modbus TCP client: MBAP frames on a bare asyncio transport.

Why not pymodbus here: its request path (a transaction manager, a timer and a PDU object per
request, registers decoded one by one into a list) costs several times this client's CPU
(docs/performance.md), and a poll reads tens of blocks per device per second. This client
builds the request frame from a precompiled header, waits on one future, and returns the
answer's register bytes as they came off the wire, for the block decoder. pymodbus serves every
other framing (RTU over serial or TCP, UDP) behind the same ``ModbusClient`` protocol.

One request at a time per connection, as most Modbus TCP servers expect (the link's lock
guarantees it); transaction ids still tell a late answer to a timed-out request from the
current one, so a stale answer is dropped instead of being taken for the next.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import cast

from adapters.modbus.errors import ModbusExceptionAnswer
from gateway.errors import DeviceError, DeviceTimeout

READ_FUNCTIONS = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}

_header = struct.Struct(">HHHB")  # MBAP: transaction id, protocol 0, length, unit
_read_pdu = struct.Struct(">BHH")  # function, address, count


class TcpClient(asyncio.Protocol):
    """One Modbus TCP connection (the link owns reconnects and backoff)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._tid = 0
        # (transaction id, unit id, the answer's PDU)
        self._waiting: tuple[int, int, asyncio.Future[bytes]] | None = None
        self._lost: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the link's client interface ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._lost is None

    async def connect(self) -> None:
        # Kept: asking for the running loop costs a ``getpid`` system call on Python 3.11.
        loop = self._loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, self.host, self.port)
        except (OSError, ValueError) as exc:  # refused, unreachable; a host name that is not one
            raise DeviceError(str(exc)) from None

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    async def read_registers(self, table: str, address: int, count: int, unit: int) -> bytes:
        return await self._read(table, address, count, unit)

    async def read_bits(self, table: str, address: int, count: int, unit: int) -> list[bool]:
        packed = await self._read(table, address, count, unit)
        return [bool(packed[i >> 3] >> (i & 7) & 1) for i in range(count)]

    async def write(self, table: str, address: int, values: list[int] | bool, unit: int) -> None:
        await self.request(unit, write_pdu(table, address, values))

    async def _read(self, table: str, address: int, count: int, unit: int) -> bytes:
        """Registers as wire bytes (two per register), or for bit tables the packed bits."""
        function = READ_FUNCTIONS[table]
        answer = await self.request(unit, _read_pdu.pack(function, address, count))
        size = count * 2 if function > 2 else (count + 7) // 8
        if len(answer) != size + 2 or answer[1] != size:
            raise DeviceError("garbled answer: wrong length", connection_lost=False)
        return answer[2:]

    async def request(self, unit: int, pdu: bytes) -> bytes:
        """Send one request PDU; the answer's PDU (function code first)."""
        transport = self._transport
        if transport is None or self._lost is not None:
            raise DeviceError(self._lost or "not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._waiting = (tid, unit, future)
        transport.write(_header.pack(tid, 0, len(pdu) + 1, unit) + pdu)
        # A bare timer, not ``asyncio.timeout``: this runs thousands of times a second.
        timer = loop.call_later(self.timeout, _expire, future)
        try:
            answer = await future
        finally:
            timer.cancel()
            self._waiting = None
        function = answer[0]
        if function & 0x80:
            raise ModbusExceptionAnswer(answer[1] if len(answer) > 1 else 0)
        if function != pdu[0]:
            raise DeviceError("garbled answer: wrong function code", connection_lost=False)
        return answer

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's is not an asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # requests are small and each waits for its answer: no Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport = transport
        self._lost = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 8:
            tid, protocol, length, unit = _header.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= 254:
                self._fail("garbled answer: bad MBAP header")
                return
            if len(buffer) < 6 + length:
                return
            pdu = bytes(buffer[7 : 6 + length])
            del buffer[: 6 + length]
            waiting = self._waiting
            if waiting is None or waiting[0] != tid or waiting[2].done():
                continue  # the answer to a request that timed out already: dropped
            # Another unit's answer (a confused Modbus gateway). Units 0 and 248-255 address
            # the TCP device itself, which may answer with any id (pymodbus skips 0 too).
            if unit != waiting[1] and 1 <= waiting[1] <= 247:
                error = DeviceError(
                    f"garbled answer: from unit {unit}, asked unit {waiting[1]}",
                    connection_lost=False,
                )
                waiting[2].set_exception(error)
            else:
                waiting[2].set_result(pdu)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection lost")

    def _fail(self, reason: str) -> None:
        self._lost = reason
        self._buffer.clear()
        waiting = self._waiting
        if waiting is not None and not waiting[2].done():
            waiting[2].set_exception(DeviceError(reason))
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()


def write_pdu(table: str, address: int, values: list[int] | bool) -> bytes:
    """FC 5 for a coil, FC 6 for one register, FC 16 for several."""
    if table == "coil":
        return struct.pack(">BHH", 5, address, 0xFF00 if values else 0)
    assert isinstance(values, list) and table == "holding"
    if len(values) == 1:
        return struct.pack(">BHH", 6, address, values[0])
    count = len(values)
    return struct.pack(f">BHHB{count}H", 16, address, count, 2 * count, *values)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(DeviceTimeout())
