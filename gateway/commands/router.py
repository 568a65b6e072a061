"""Commands from MQTT to the devices: MQTT -> router -> adapter write -> result on MQTT.

The router knows topics and devices, not MQTT: the link hands it ``Incoming`` messages on the
event loop and it answers through ``respond``. Every message gets exactly one answer, on
``{command topic}/result`` (or the MQTT 5 response topic), including messages it refuses.

- A device takes one command at a time (its own lock, in arrival order); the adapter serialises
  the write with the device's polls. Different devices write in parallel.
- ``write_rate_limit`` per device: a token bucket; a command beyond it is refused at once.
- Retained commands are refused: a broker would hand them out again on every reconnect.
- With ``max_age``, a command must carry its sending time ``ts`` and be younger than that.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping

import structlog

from gateway.commands.execute import (
    FAILED,
    REFUSED,
    Result,
    check_command,
    execute,
    write_bound,
)
from gateway.commands.request import CommandId, Incoming, check_age, parse, scalar
from gateway.config.schema import DeviceConfig
from gateway.errors import CommandError
from gateway.model import Reading, Scalar
from gateway.source import Writable
from gateway.topics import Topics

log = structlog.get_logger("gateway.commands")

# Commands waiting or running, all devices together; beyond it new ones are refused.
MAX_PENDING = 1000
RECENT = 20  # commands the status page lists

# (topic, payload, correlation data) -> published at QoS 1, not retained.
Respond = Callable[[str, bytes, bytes | None], None]


class RateLimit:
    """A token bucket: ``rate`` commands per second, bursts up to ``max(rate, 1)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class CommandRouter:
    def __init__(
        self,
        devices: list[DeviceConfig],
        sources: Mapping[str, Writable],
        topics: Topics,
        respond: Respond,
        publish_reading: Callable[[Reading], None],
        response_prefix: str | None = None,
        max_age: float | None = None,
    ) -> None:
        """``response_prefix``: MQTT 5 response topics are honoured only under it; ``max_age``:
        commands older than this (by their ``ts``) are refused."""
        self.devices = {d.id: d for d in devices}
        self.sources = sources
        self.topics = topics
        self.respond = respond
        self.publish_reading = publish_reading
        self.response_prefix = response_prefix
        self.max_age = max_age
        self.limits = {d.id: RateLimit(d.write_rate_limit) for d in devices}
        self.locks = {d.id: asyncio.Lock() for d in devices}
        self.tasks: set[asyncio.Task[None]] = set()
        self.device_of: dict[asyncio.Task[None], str] = {}  # a running command's device
        self.retiring: set[str] = set()  # devices a reload is about to stop
        self.answered = 0
        self.outcomes: Counter[str] = Counter()  # written | refused | failed (for /metrics)
        # The last commands, who sent them and when they were answered (the status page).
        self.recent: deque[tuple[Result, str | None, float]] = deque(maxlen=RECENT)

    def take_over(self, old: CommandRouter, keep: Iterable[str]) -> None:
        """After a reload: commands still running finish and are answered; the devices in
        ``keep`` (unchanged) keep their write lock and rate limit; the counts go on."""
        self.tasks, self.device_of = old.tasks, old.device_of
        self.answered = old.answered
        self.outcomes = old.outcomes
        self.recent = old.recent
        for device in keep:
            if device in old.locks and device in self.locks:
                self.locks[device] = old.locks[device]
                self.limits[device] = old.limits[device]

    async def retire(self, devices: Iterable[str]) -> None:
        """These devices are about to stop (a reload): new commands for them are refused, the
        running finish (within a write's time bound), and any still unfinished then (waiting
        behind it, say) is cancelled and answered ``failed``."""
        retiring = {d for d in devices if d in self.devices}
        if not retiring:
            return
        self.retiring |= retiring
        running = [t for t, d in self.device_of.items() if d in retiring]
        if not running:
            return
        # A second beyond the write's own bound: a write that times out is answered as such.
        bound = max(write_bound(self.devices[d]) for d in retiring) + 1.0
        _, late = await asyncio.wait(running, timeout=bound)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    @property
    def subscription(self) -> str:
        return self.topics.command_filter()

    def handle(self, message: Incoming) -> None:
        """Take one message (on the event loop); answer at once or start its execution."""
        target = self.topics.command_target(message.topic)
        if target is None:  # not a command topic (only a misbehaving broker sends one)
            log.warning("message outside the command topics ignored", topic=message.topic)
            return
        device_id, point, exact = target
        command_id: CommandId = None
        value: Scalar | None = None  # the audit says what was asked, once it is read
        try:
            command_id, value, ts = parse(message.payload)
            if self.max_age is not None:
                check_age(ts, self.max_age, time.time())
            if message.retain:
                raise CommandError("retained commands are refused (they replay on reconnect)")
            if device_id not in self.devices:
                raise CommandError(f"unknown device {device_id!r}")
            if not exact:
                raise self._misplaced(device_id, point)
            assert point is not None
            self._admit(device_id, point, value)
        except CommandError as exc:
            known = device_id in self.devices  # echo only names that exist
            named, named_point = (device_id, point) if known else (None, None)
            self._answer(message, _refused(exc, command_id, named, named_point, value))
            return
        assert value is not None
        self._start(message, device_id, point, value, command_id)

    def submit(self, device_id: str, point: str, value: Scalar, command_id: CommandId) -> None:
        """A write that has no answer topic (a Sparkplug DCMD): the same checks, the same
        audit; its result is the value read back, published as a reading."""
        try:
            if device_id not in self.devices:
                raise CommandError(f"unknown device {device_id!r}")
            value = scalar(value)  # NaN, infinity
            self._admit(device_id, point, value)
        except CommandError as exc:
            known = device_id in self.devices
            named, named_point = (device_id, point) if known else (None, None)
            self._answer(None, _refused(exc, command_id, named, named_point, value))
            return
        self._start(None, device_id, point, value, command_id)

    def _admit(self, device_id: str, point: str, value: Scalar) -> None:
        """Raise ``CommandError`` unless the command may run now."""
        check_command(self.devices[device_id], point, value)
        if device_id not in self.sources:
            raise CommandError("this device's protocol cannot write")
        if device_id in self.retiring:
            raise CommandError("the device is restarting for a map reload: send it again")
        if not self.limits[device_id].take():
            rate = self.devices[device_id].write_rate_limit
            raise CommandError(f"rate limit exceeded ({rate:g} commands/s for this device)")
        if len(self.tasks) >= MAX_PENDING:
            raise CommandError("gateway busy: too many commands waiting")

    def _start(
        self,
        message: Incoming | None,
        device_id: str,
        point: str,
        value: Scalar,
        command_id: CommandId,
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(message, device_id, point, value, command_id)
        )
        self.tasks.add(task)
        self.device_of[task] = device_id
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.device_of.pop(task, None)

    async def _run(
        self,
        message: Incoming | None,
        device_id: str,
        point: str,
        value: Scalar,
        command_id: CommandId,
    ) -> None:
        device = self.devices[device_id]
        try:
            async with self.locks[device_id]:
                result, reading = await execute(
                    device, self.sources[device_id], point, value, command_id
                )
        except asyncio.CancelledError:
            if device_id in self.retiring:  # not shutting down: the caller is owed an answer
                error = "cancelled: the device restarted for a map reload; read the point back"
                self._answer(message, Result(command_id, device_id, point, value, FAILED, error))
            raise
        if reading is not None:
            self.publish_reading(reading)
        self._answer(message, result)

    def _misplaced(self, device_id: str, point: str | None) -> CommandError:
        device = self.devices[device_id]
        if point is None or not any(p.name == point for p in device.points):
            return CommandError(f"unknown point {point!r} of device {device_id!r}")
        return CommandError(f"wrong topic: this point's is {self.topics.point(device_id, point)}")

    def _answer(self, message: Incoming | None, result: Result) -> None:
        """Audit and count; answer on MQTT when the command came with a topic to answer."""
        client = message.client if message is not None else None
        result.audit(client)
        self.outcomes[result.outcome] += 1
        self.recent.append((result, client, time.time()))
        if message is None:
            return
        topic, prefix = message.response_topic, self.response_prefix
        if (
            not topic
            or prefix is None
            or not topic.startswith(prefix)
            or "+" in topic
            or "#" in topic
        ):
            topic = message.topic + "/result"  # never a topic the gateway reads or owns
        self.respond(topic, result.payload(), message.correlation)
        self.answered += 1

    def cancel(self) -> None:
        """Shutting down: commands still waiting or running get no answer."""
        for task in self.tasks:
            task.cancel()


def _refused(
    error: CommandError,
    command_id: CommandId,
    device: str | None,
    point: str | None,
    requested: Scalar | None = None,
) -> Result:
    return Result(
        error.command_id if error.command_id is not None else command_id,
        device,
        point,
        requested,
        REFUSED,
        error=str(error),
    )
