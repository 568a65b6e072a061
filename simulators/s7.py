"""S7 simulator: a python-snap7 server (a software PLC) per S7 device of a map.

Each device's memory (its data blocks, M, I and Q) is sized to hold its points (or the
``db_sizes`` the map gives). A ticker writes the points' ``sim:`` generators into it ten
times a second; a point a client wrote holds that value until written again, as a PLC's
memory would (the ticker sees the bytes are not what it wrote last). The device-level
``sim:`` block makes answers late: ``delay`` on every read, 30 s on every ``drop_every``-th
(a wedged PLC). The server runs in python-snap7's own threads; the memory is changed under
the server's area locks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import math
import socket
import time

import structlog
from snap7.error import S7Error
from snap7.server import Server
from snap7.type import SrvArea

from adapters.s7.codec import encoder
from adapters.s7.config import S7Device, S7Faults, S7Point
from simulators.errors import ListenError
from simulators.generators import Generated, Generator, make_generator

log = structlog.get_logger("simulators.s7")
logging.getLogger("snap7").setLevel(logging.ERROR)

TICK = 0.1  # seconds between two updates of the generated values
DROPPED_ANSWER_DELAY = 30.0  # long past any client timeout
SRV_AREAS = {"DB": SrvArea.DB, "M": SrvArea.MK, "I": SrvArea.PE, "Q": SrvArea.PA}
INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1), "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}  # fmt: skip


class SimulatedPoint:
    def __init__(self, point: S7Point, seed: int) -> None:
        self.point = point
        self.where = point.where
        self.encode = encoder(point)
        self.value_type = point.value_type.removesuffix("[]")  # engineering units
        self.generate: Generator = make_generator(point.sim, _generator_type(point), seed)
        self.last: bytes | None = None  # what the ticker wrote last
        self.generated: object = None  # ... and the value it encoded (unchanged: not again)
        self.held = False  # a client wrote it: it keeps that value

    def value(self, elapsed: float) -> object:
        generated = self.generate(elapsed)
        kind = self.point.kind.name
        value = _coerce(generated, self.value_type)
        if kind in ("DATE", "DATE_AND_TIME", "DTL") and self.point.sim is None:
            now = dt.datetime.now().replace(microsecond=0)  # a clock, unless the map says
            value = now.date().isoformat() if kind == "DATE" else now.isoformat()
        elif kind in ("CHAR", "WCHAR") and isinstance(value, str):
            value = (value or "?")[:1]
        elif self.point.kind.length and isinstance(value, str) and self.point.sim is None:
            value = value[: self.point.kind.length]  # the default text, cut to fit
        if self.point.count is not None:
            return [value] * self.point.count
        return value


def _generator_type(point: S7Point) -> str:
    value_type = point.kind.value_type
    return "float64" if point.kind.name in ("S5TIME", "TIME", "TIME_OF_DAY") else value_type


def _coerce(value: Generated, value_type: str) -> Generated:
    if value_type == "bool":
        return bool(value)
    if value_type == "string":
        return str(value)
    if value_type in INT_RANGES:
        low, high = INT_RANGES[value_type]
        number = float(value) if not isinstance(value, str) else 0.0
        return int(min(high, max(low, round(number)))) if math.isfinite(number) else 0
    return float(value) if not isinstance(value, str) else 0.0


class S7DeviceSimulator:
    """One software PLC serving one device of the map."""

    def __init__(self, device: S7Device) -> None:
        self.device = device
        self.server = Server(log=False)
        self.memory: dict[tuple[str, int], bytearray] = {}
        self.points = [SimulatedPoint(p, seed) for seed, p in enumerate(device.points)]
        sizes: dict[tuple[str, int], int] = {}
        for point in device.points:
            where = point.where
            key = (where.area, where.db)
            sizes[key] = max(sizes.get(key, 1), where.byte + point.size)
        for db, size in (device.db_sizes or {}).items():
            sizes[("DB", db)] = max(sizes.get(("DB", db), 1), size)
        for (area, number), size in sizes.items():
            memory = self.memory[(area, number)] = bytearray(size)
            self.server.register_area(SRV_AREAS[area], number, memory)
        self.started = time.monotonic()
        self.reads = itertools.count(1)  # next() is atomic: the server answers in threads
        faults = device.sim
        if faults is not None and (faults.delay or faults.drop_every):
            # Called in the server's thread of the client, before the answer goes out.
            self.server.set_read_events_callback(lambda _event: self._fault(faults))

    def _fault(self, faults: S7Faults) -> None:
        """A late answer: ``delay`` on every read, 30 s on every ``drop_every``-th."""
        if faults.drop_every and next(self.reads) % faults.drop_every == 0:
            time.sleep(DROPPED_ANSWER_DELAY)
        elif faults.delay:
            time.sleep(faults.delay)

    def start(self) -> None:
        self.update()
        try:
            # python-snap7's server binds with SO_REUSEPORT, so a port in use is shared
            # silently (connections then land on either server): a plain bind says first.
            with socket.socket() as probe:  # SO_REUSEADDR: a closed connection may linger
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.device.host, self.device.port))
            self.server.start_to(self.device.host, self.device.port)
        except (S7Error, OSError, ValueError):
            raise ListenError(
                f"cannot serve device {self.device.id!r} on {self.device.host}:"
                f"{self.device.port}: address in use, or not an address of this machine"
            ) from None

    def update(self) -> None:
        """Write each point's generated value, unless a client wrote the point: its bytes
        (its bit) are no longer what they were at the end of the last update, when every
        point's bytes were taken, so points sharing bytes do not mistake each other's new
        values for a client's."""
        elapsed = time.monotonic() - self.started
        for simulated in self.points:
            if simulated.held:
                continue
            where = simulated.where
            memory = self.memory[(where.area, where.db)]
            start, size = where.byte, simulated.point.size
            with self._locked(where.area, where.db):
                now = bytes(memory[start : start + size])
                if simulated.last is not None and _changed(simulated, now):
                    simulated.held = True  # a client wrote it
                    continue
                value = simulated.value(elapsed)
                if value == simulated.generated and simulated.last is not None:
                    continue  # the same value: the bytes are already there
                simulated.generated = value
                try:
                    data = simulated.encode(value)  # type: ignore[arg-type]
                except ValueError as exc:  # a generator the type cannot hold: said once
                    simulated.held = True
                    log.warning("cannot simulate point", point=simulated.point.name,
                                reason=str(exc))  # fmt: skip
                    continue
                if where.width == "X":  # only its bit of the byte it shares
                    mask = 1 << where.bit_offset
                    data = bytes([now[0] & ~mask | data[0]])
                memory[start : start + size] = data
        for simulated in self.points:  # what every point's bytes are now
            where = simulated.where
            memory = self.memory[(where.area, where.db)]
            with self._locked(where.area, where.db):
                simulated.last = bytes(memory[where.byte : where.byte + simulated.point.size])

    def _locked(self, area: str, number: int) -> _AreaLock:
        return _AreaLock(self.server, SRV_AREAS[area], number)

    def stop(self) -> None:
        self.server.stop()


def _changed(simulated: SimulatedPoint, now: bytes) -> bool:
    last = simulated.last
    assert last is not None
    if simulated.where.width == "X":
        mask = 1 << simulated.where.bit_offset
        return (now[0] & mask) != (last[0] & mask)
    return now != last


class _AreaLock:
    def __init__(self, server: Server, area: SrvArea, number: int) -> None:
        self.server, self.area, self.number = server, area, number

    def __enter__(self) -> None:
        self.server.lock_area(self.area, self.number)

    def __exit__(self, *_: object) -> None:
        self.server.unlock_area(self.area, self.number)


class S7Simulator:
    """Every S7 device of a map, each on its own host:port."""

    def __init__(self, devices: list[S7Device]) -> None:
        endpoints: dict[tuple[str, int], str] = {}
        for device in devices:
            other = endpoints.setdefault((device.host, device.port), device.id)
            if other != device.id:
                raise ListenError(
                    f"devices {other!r} and {device.id!r} are both on {device.host}:"
                    f"{device.port}: a simulated PLC serves one device, give each its port"
                )
        self.devices = [S7DeviceSimulator(d) for d in devices]
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        started: list[S7DeviceSimulator] = []
        try:
            for device in self.devices:
                device.start()
                started.append(device)
                log.info("simulating device", device=device.device.id, protocol="s7",
                         endpoint=f"{device.device.host}:{device.device.port}")  # fmt: skip
        except ListenError:
            for device in started:
                await asyncio.to_thread(device.stop)
            raise
        self._ticker = asyncio.create_task(self._tick(), name="s7-simulator")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for device in self.devices:
                device.update()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for device in self.devices:
            await asyncio.to_thread(device.stop)  # it waits for its threads
