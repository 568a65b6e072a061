"""Polls one Modbus TCP device on its interval and turns its registers into readings.

It owns the connection: a timeout, a refused connection or a dropped socket marks every point of
the device bad (once per outage, logged once) and reconnects with capped, jittered backoff. A
Modbus exception answer marks only the points of that request bad; the connection stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from adapters.modbus.config import BIT_TABLES, ModbusPoint, ModbusTcpDevice, Order
from adapters.modbus.decode import Scaling, decode, registers_to_bytes
from adapters.modbus.plan import ReadRequest, plan_reads
from gateway.backoff import Backoff
from gateway.errors import DeviceError
from gateway.model import BAD, GOOD, Reading, bad_readings

log = structlog.get_logger("adapters.modbus")

# pymodbus logs every failed connect at ERROR: we report each outage once ourselves.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

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


@dataclass(frozen=True, slots=True)
class _Decoder:
    """How to turn one point's slice of a response into a value (precomputed at start-up)."""

    point: ModbusPoint
    offset: int  # in registers (or bits) from the start of the request
    scaling: Scaling
    byte_order: Order
    word_order: Order


class ModbusSource:
    """A ``gateway.source.Source`` for one Modbus TCP device."""

    def __init__(self, device: ModbusTcpDevice) -> None:
        self.device = device
        self.device_id = device.id
        self.plan = plan_reads(device.points)
        self._decoders = {
            id(request): [
                _Decoder(
                    p,
                    p.address - request.start,
                    Scaling(p.scale, p.offset),
                    device.byte_order_of(p),
                    device.word_order_of(p),
                )
                for p in request.points
            ]
            for request in self.plan
        }
        self._all_points = [(p.name, p.unit) for p in device.points]
        self._client: AsyncModbusTcpClient | None = None
        self._log = log.bind(device=device.id, host=device.host, port=device.port)

    async def readings(self) -> AsyncIterator[list[Reading]]:
        device = self.device
        backoff = Backoff(initial=min(1.0, device.poll_interval), cap=30.0)
        outage: str | None = None  # reason of the current outage, None while healthy
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while True:
            try:
                await self._connect()
                batch = await self._poll()
            except DeviceError as exc:
                await self.close()
                if exc.reason != outage:
                    self._log.warning("device unreachable", reason=exc.reason)
                    outage = exc.reason
                    yield bad_readings(device.id, self._all_points, exc.reason, time.time())
                await asyncio.sleep(backoff.next_delay())
                next_poll = loop.time()
                continue
            if outage is not None:
                self._log.info("device recovered", after=outage)
                outage = None
                backoff.reset()
            yield batch
            # Fixed-rate schedule: the next poll is due one interval after the last was due, so
            # periods do not drift; if we fell behind, skip the missed slots instead of bursting.
            next_poll += device.poll_interval
            now = loop.time()
            if next_poll < now:
                next_poll = now
            await asyncio.sleep(next_poll - now)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _connect(self) -> None:
        if self._client is not None and self._client.connected:
            return
        await self.close()
        device = self.device
        client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            timeout=device.timeout,
            retries=0,
            reconnect_delay=0,  # we reconnect ourselves, with backoff and bad-quality reporting
        )
        try:
            async with asyncio.timeout(device.timeout * 2):
                connected = await client.connect()
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected:
            client.close()
            raise DeviceError(f"cannot connect to {device.host}:{device.port}")
        self._client = client

    async def _poll(self) -> list[Reading]:
        batch: list[Reading] = []
        for request in self.plan:
            try:
                values = await self._read(request)
            except DeviceError as exc:
                if exc.connection_lost:
                    raise
                now = time.time()
                batch.extend(
                    Reading(self.device_id, p.name, None, BAD, now, p.unit, exc.reason)
                    for p in request.points
                )
                continue
            batch.extend(self._decode(request, values, time.time()))
        return batch

    async def _read(self, request: ReadRequest) -> list[int] | list[bool]:
        client = self._client
        assert client is not None
        unit = self.device.unit_id
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
        }[request.table]
        try:
            async with asyncio.timeout(self.device.timeout * 1.5):
                response = await call(request.start, count=request.count, device_id=unit)
        except TimeoutError:
            raise DeviceError("timeout") from None
        except ModbusException as exc:
            text = str(exc).lower()
            raise DeviceError(
                "timeout" if "timeout" in text or "no response" in text else "connection lost"
            ) from None
        except OSError as exc:
            raise DeviceError(f"connection error: {exc.strerror or exc}") from None
        if response.isError():
            code = getattr(response, "exception_code", 0)
            reason = EXCEPTION_REASONS.get(code, f"modbus exception {code}")
            raise DeviceError(reason, connection_lost=False)
        if request.table in BIT_TABLES:
            bits: list[bool] = list(response.bits)
            if len(bits) < request.count:
                raise DeviceError("short response", connection_lost=False)
            return bits
        registers: list[int] = list(response.registers)
        if len(registers) != request.count:
            raise DeviceError("short response", connection_lost=False)
        return registers

    def _decode(
        self, request: ReadRequest, values: list[int] | list[bool], ts: float
    ) -> list[Reading]:
        device_id = self.device_id
        decoders = self._decoders[id(request)]
        if request.table in BIT_TABLES:
            return [
                Reading(device_id, d.point.name, bool(values[d.offset]), GOOD, ts, d.point.unit)
                for d in decoders
            ]
        raw = registers_to_bytes(values)
        out = []
        for d in decoders:
            point = d.point
            chunk = raw[2 * d.offset : 2 * (d.offset + point.width)]
            value = decode(chunk, point.data_type, d.byte_order, d.word_order)
            if not d.scaling.identity and not isinstance(value, bool | str):
                value = d.scaling.apply(value)
            out.append(Reading(device_id, point.name, value, GOOD, ts, point.unit))
        return out
