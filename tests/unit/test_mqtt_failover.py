"""The transport's walk over several brokers, with the connection attempts faked: which
broker is tried when, when the backoff waits, and where a replacing session starts. (Moving
for real, with brokers: tests/integration/test_failover.py and test_broker_cluster.py.)"""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import Refused
from gateway.mqtt import client as transport
from gateway.mqtt.client import Broker, Message, MqttClient, Server, Settings

A, B, C = Server("a", 1883), Server("b", 1883), Server("c", 1883)


class Listener:
    def __init__(self) -> None:
        self.client: MqttClient | None = None
        self.ups: list[Server] = []

    def connected(self, broker: Broker) -> None:
        assert self.client is not None
        self.ups.append(self.client.server)
        # Each connection is lost at once (as a broker that dies would end it).
        asyncio.get_running_loop().call_soon(self.client._went_down, "lost")

    def disconnected(self, reason: str, by_broker: bool) -> None:
        pass

    def acknowledged(self, mid: int) -> None:
        pass

    def refused(self, mid: int, reason: str) -> None:
        pass

    def lost(self, mid: int) -> None:
        pass

    def received(self, message: Message) -> None:
        pass


class Steps:
    """The backoff's delays: 1, 2, 3 ... (never reset: no connection here holds 10 s)."""

    def __init__(self, **_: float) -> None:
        self.delays = iter(range(1, 100))

    def next_delay(self) -> float:
        return float(next(self.delays))

    def reset(self) -> None:
        pass


def walk(
    servers: tuple[Server, ...],
    outcomes: list[str],
    start: Server | None = None,
) -> tuple[list[tuple[str, Server | float]], list[bool]]:
    """Run the transport's loop over ``outcomes``, one per attempt: ``up`` (connected, then
    lost), ``down`` (refused or unreachable) or ``again`` (a refusal to retry at once).
    What happened, in order: ("try", broker) and ("wait", delay); and whether each attempt
    asked for a clean start."""
    happened: list[tuple[str, Server | float]] = []
    cleans: list[bool] = []

    async def main() -> None:
        listener = Listener()
        client = MqttClient(Settings(servers, "gw"), listener, start=start)
        listener.client = client
        left = list(outcomes)

        async def connect() -> Broker:
            server = client.server
            happened.append(("try", server))
            cleans.append(client._session_on != server)
            if not left:
                client._stopping = True
                raise OSError("the test is over")
            outcome = left.pop(0)
            if outcome == "down":
                raise OSError("refused")
            if outcome == "again":
                raise Refused("a plainer will", None, retry_now=True)
            client._closed = asyncio.get_running_loop().create_future()
            client._session_on = server
            return Broker(session_present=False)

        async def sleep(delay: float) -> None:
            happened.append(("wait", delay))

        client._connect = connect  # type: ignore[method-assign]
        with pytest.MonkeyPatch.context() as patch:  # the loop's waits, recorded, not waited
            patch.setattr(transport, "Backoff", Steps)
            patch.setattr(transport.asyncio, "sleep", sleep)
            await client._keep_connected()

    asyncio.run(main())
    return happened, cleans


def test_one_broker_waits_after_every_failure_as_before() -> None:
    happened, _ = walk((A,), ["down", "down", "up"])
    assert happened == [
        ("try", A), ("wait", 1.0), ("try", A), ("wait", 2.0), ("try", A), ("wait", 3.0),
        ("try", A), ("wait", 4.0),
    ]  # fmt: skip


def test_failures_move_on_at_once_and_a_whole_round_waits() -> None:
    happened, _ = walk((A, B, C), ["down", "down", "down", "down", "up"])
    assert happened == [
        ("try", A), ("try", B), ("try", C), ("wait", 1.0),
        ("try", A), ("try", B),  # b answers, then the connection is lost
        ("wait", 2.0), ("try", C),
    ]  # fmt: skip


def test_a_lost_connection_moves_to_the_next_broker_after_the_backoff() -> None:
    happened, cleans = walk((A, B), ["up", "up", "up"])
    assert happened == [
        ("try", A), ("wait", 1.0), ("try", B), ("wait", 2.0), ("try", A), ("wait", 3.0),
        ("try", B),
    ]  # fmt: skip
    # A session is resumed only where it was made: each move starts a new one, also back on a.
    assert cleans[:3] == [True, True, True]


def test_a_refusal_to_retry_at_once_stays_on_the_broker() -> None:
    happened, _ = walk((A, B), ["again", "up"])
    assert happened[:3] == [("try", A), ("try", A), ("wait", 1.0)]


def test_the_same_broker_again_resumes_its_session() -> None:
    happened, cleans = walk((A,), ["up", "up"])
    assert [h for h in happened if h[0] == "try"] == [("try", A)] * 3
    assert cleans[:2] == [True, False]


def test_a_replacing_session_starts_where_the_old_one_was_when_it_is_still_listed() -> None:
    assert walk((A, B, C), [], start=B)[0][0] == ("try", B)
    assert walk((A, C), [], start=B)[0][0] == ("try", A)
