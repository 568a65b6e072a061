"""The lean Modbus TCP client against a scripted server: answers, exception answers, a late
answer after a timeout, another unit's answer, frames split and run together, garbage, a
dropped connection (the real servers are in integration)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException

from adapters.modbus.client import PymodbusClient
from adapters.modbus.errors import ModbusExceptionAnswer
from adapters.modbus.tcp import TcpClient, write_pdu
from gateway.errors import DeviceError, DeviceTimeout
from gateway.model import Reading
from gateway.registry import create_sources, load_config

Reply = Callable[[int, bytes], list[bytes]]  # (transaction id, request PDU) -> frames to send


def _frame(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def _with_server(reply: Reply, scenario: Callable[[TcpClient], object]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _, length, _ = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                for frame in reply(tid, pdu):
                    if frame == b"close":
                        writer.close()
                        return
                    writer.write(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TcpClient("127.0.0.1", port, timeout=0.2)
    try:
        await client.connect()
        await scenario(client)  # type: ignore[misc]
    finally:
        client.close()
        server.close()


def test_reads_registers_as_wire_bytes_and_bits_packed() -> None:
    def reply(tid: int, pdu: bytes) -> list[bytes]:
        function, _, count = struct.unpack(">BHH", pdu)
        if function == 3:
            return [_frame(tid, bytes([3, 2 * count]) + bytes(range(2 * count)))]
        return [_frame(tid, bytes([1, 1, 0b101]))]

    async def scenario(client: TcpClient) -> None:
        assert await client.read_registers("holding", 0, 3, 1) == bytes(range(6))
        assert await client.read_bits("coil", 0, 3, 1) == [True, False, True]

    asyncio.run(_with_server(reply, scenario))


def test_an_exception_answer_keeps_the_connection() -> None:
    asyncio.run(
        _with_server(
            lambda tid, pdu: [_frame(tid, bytes([pdu[0] | 0x80, 2]))],
            _expect_exception,
        )
    )


async def _expect_exception(client: TcpClient) -> None:
    with pytest.raises(ModbusExceptionAnswer) as caught:
        await client.read_registers("holding", 0, 1, 1)
    assert caught.value.code == 2 and caught.value.reason == "illegal data address"
    assert client.connected


def test_a_late_answer_is_not_taken_for_the_next_request() -> None:
    answers: Iterator[list[bytes] | None] = iter([[], None])

    def reply(tid: int, pdu: bytes) -> list[bytes]:
        late = next(answers)
        if late is not None:  # the first request: no answer now
            return []
        # The second: first the first request's late answer, then the right one.
        return [
            _frame(tid - 1, bytes([3, 2, 0xDE, 0xAD])),
            _frame(tid, bytes([3, 2, 0x00, 0x07])),
        ]

    async def scenario(client: TcpClient) -> None:
        with pytest.raises(DeviceError, match="timeout"):
            await client.read_registers("holding", 0, 1, 1)
        assert await client.read_registers("holding", 0, 1, 1) == b"\x00\x07"

    asyncio.run(_with_server(reply, scenario))


def test_garbage_and_a_dropped_connection_are_device_errors() -> None:
    async def short(client: TcpClient) -> None:
        with pytest.raises(DeviceError, match="wrong length"):
            await client.read_registers("holding", 0, 2, 1)

    asyncio.run(_with_server(lambda tid, pdu: [_frame(tid, bytes([3, 2, 0, 1]))], short))

    async def bad_header(client: TcpClient) -> None:
        with pytest.raises(DeviceError, match="bad MBAP header"):
            await client.read_registers("holding", 0, 1, 1)
        assert not client.connected

    asyncio.run(_with_server(lambda tid, pdu: [b"\x00\x01\x00\x07\x00\x05\x01\x03"], bad_header))

    async def dropped(client: TcpClient) -> None:
        with pytest.raises(DeviceError, match="connection lost"):
            await client.read_registers("holding", 0, 1, 1)
        assert not client.connected

    asyncio.run(_with_server(lambda tid, pdu: [b"close"], dropped))


def test_an_answer_from_another_unit_is_refused() -> None:
    async def scenario(client: TcpClient) -> None:
        with pytest.raises(DeviceError, match="from unit 7, asked unit 1") as caught:
            await client.read_registers("holding", 0, 1, 1)
        assert caught.value.connection_lost is False and client.connected

    frame = lambda tid, pdu: [_frame(tid, bytes([3, 2, 0, 9]), unit=7)]  # noqa: E731
    asyncio.run(_with_server(frame, scenario))


class _Wire(asyncio.Transport):
    """A transport that keeps what the client writes; the test feeds the answers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def test_frames_split_across_reads_and_run_together_are_read_whole() -> None:
    async def scenario() -> None:
        client = TcpClient("127.0.0.1", 502, timeout=5)
        client._loop = asyncio.get_running_loop()
        wire = _Wire()
        client.connection_made(wire)
        first = asyncio.create_task(client.read_registers("holding", 0, 2, 1))
        await asyncio.sleep(0)  # the request is written
        tid = struct.unpack(">H", wire.sent[-1][:2])[0]
        answer = _frame(tid, bytes([3, 4, 0, 1, 0, 2]))
        for cut in (3, 8):  # inside the MBAP header, then inside the PDU
            client.data_received(answer[:cut])
            answer = answer[cut:]
            await asyncio.sleep(0)
            assert not first.done()
        client.data_received(answer)
        assert await first == bytes([0, 1, 0, 2])
        # A stale answer and the current one in one segment: the stale one is dropped.
        second = asyncio.create_task(client.read_registers("holding", 0, 1, 1))
        await asyncio.sleep(0)
        tid = struct.unpack(">H", wire.sent[-1][:2])[0]
        both = _frame(tid - 1, bytes([3, 2, 0xDE, 0xAD])) + _frame(tid, bytes([3, 2, 0, 7]))
        client.data_received(both)
        assert await second == bytes([0, 7])

    asyncio.run(scenario())


def test_writes_send_the_standard_function_codes() -> None:
    assert write_pdu("coil", 7, True) == bytes([5, 0, 7, 0xFF, 0])
    assert write_pdu("holding", 2, [0x1234]) == bytes([6, 0, 2, 0x12, 0x34])
    assert write_pdu("holding", 2, [1, 2]) == bytes([16, 0, 2, 0, 2, 4, 0, 1, 0, 2])


class _Pymodbus:
    """Stands in for a pymodbus client: each call raises or returns what the test says."""

    connected = True

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> object:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class _Answer:
    def __init__(self, registers: list[int], error: int | None = None) -> None:
        self.registers = registers
        self.exception_code = error

    def isError(self) -> bool:
        return self.exception_code is not None


@pytest.mark.parametrize(
    ("outcome", "error", "reason", "lost"),
    [
        (ModbusIOException("no response"), DeviceTimeout, "timeout", True),
        (ConnectionException("closed"), DeviceError, "connection lost", True),
        (ConnectionRefusedError(111, "refused"), DeviceError, "connection error: refused", True),
        (_Answer([], error=2), ModbusExceptionAnswer, "illegal data address", False),
        (_Answer([1]), DeviceError, "short response", False),
    ],
)
def test_pymodbus_errors_are_translated_by_type(
    outcome: object, error: type[DeviceError], reason: str, lost: bool
) -> None:
    client = PymodbusClient(_Pymodbus(outcome), timeout=0.5)  # type: ignore[arg-type]
    with pytest.raises(error) as caught:
        asyncio.run(client.read_registers("holding", 0, 2, 1))
    assert (caught.value.reason, caught.value.connection_lost) == (reason, lost)
    good = PymodbusClient(_Pymodbus(_Answer([0x0102, 0x0304])), timeout=0.5)  # type: ignore[arg-type]
    assert asyncio.run(good.read_registers("holding", 0, 2, 1)) == bytes([1, 2, 3, 4])


def test_a_device_that_cannot_be_opened_is_bad_not_fatal(tmp_path: Path) -> None:
    """A serial URL pyserial does not know, a host name that cannot be one, a refused port:
    bad readings with the reason, never an exception out of the source."""
    path = tmp_path / "map.yaml"
    path.write_text(
        "gateway: {id: gw, hierarchy: {enterprise: e, site: s, area: a}}\ndevices:\n"
        + "".join(
            f"  - {{id: d{n}, line: l1, {where}, points: [{{name: p, table: coil, address: 0}}]}}\n"
            for n, where in enumerate(
                [
                    'protocol: modbus-rtu, port: "foo://x"',
                    f"protocol: modbus-tcp, host: {'a' * 70}.example",
                    "protocol: modbus-tcp, host: 127.0.0.1, port: 1",
                ]
            )
        )
    )

    async def first_batches() -> list[tuple[str, str | None]]:
        out = []
        for source in create_sources(load_config([path]).devices):
            batch = await asyncio.wait_for(anext(aiter(source.readings())), 10)
            out.extend((r.quality, r.reason) for r in batch if isinstance(r, Reading))
            await source.close()
        return out

    got = asyncio.run(first_batches())
    assert [q for q, _ in got] == ["bad"] * 3
    assert all(reason and reason.startswith("cannot connect to ") for _, reason in got), got
