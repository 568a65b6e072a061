"""Builds the stages once, wires them, and runs them on one event loop.

    sources (one task per device) -> pipeline (transforms) -> encoder -> buffer -> forwarder
    -> MQTT transport (the readings' session)
    commands: MQTT transport (the commands' session) -> channel -> intake (bounded queue and
    rate) -> router -> source.write -> answer on the commands' session (+ the value read back,
    as a reading, into the encoder)

Every device runs in its own task, so a slow or dead device never delays another. The pump of
each device also publishes the device's connection state when it changes. A reload (``apply``)
stops and starts device tasks one by one; everything else carries over.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping
from dataclasses import replace

import structlog

from gateway.commands import CommandRouter
from gateway.commands.channel import CommandChannel
from gateway.commands.intake import Intake
from gateway.commands.request import Incoming
from gateway.config.load import Config
from gateway.delivery.buffer import Buffer, open_store
from gateway.delivery.encode_json import JsonEncoder, iso_time, kept_json
from gateway.delivery.forwarder import OFFLINE, Forwarder
from gateway.delivery.sparkplug.aliases import Aliases
from gateway.delivery.sparkplug.bdseq import BdSeq
from gateway.delivery.sparkplug.payload import QUALITY_CODES
from gateway.delivery.sparkplug.session import EdgeNode, SparkplugEncoder
from gateway.delivery.sparkplug.topics import SparkplugTopics
from gateway.http.health import Health
from gateway.http.listener import HttpListener
from gateway.http.metrics import Metrics
from gateway.http.observed import CommandRow, Observed, ReloadRow
from gateway.http.page import StatusPage
from gateway.http.status import Status
from gateway.model import Reading, Scalar, expand
from gateway.mqtt.client import Settings, Will
from gateway.mqtt.settings import command_session, data_session
from gateway.pipeline import Deadband, Transform
from gateway.registry import create_sources, reading_intervals, value_types
from gateway.reload import Reloader, diff
from gateway.source import CONNECTED, Source, Writable
from gateway.stats import DeviceStats
from gateway.systemd import Notifier
from gateway.topics import Topics

log = structlog.get_logger("gateway")


class Gateway:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier(None, None)
        self.topics = self._topics(config)
        settings = config.buffer
        self.buffer = Buffer(
            open_store(settings.mode, settings.path, settings.max_size),
            settings.max_size,
            settings.on_full,
            # Sparkplug: strictly in order, the backlog first, so a host sees a device's
            # history before its later births and deaths.
            1.0 if config.sparkplug is not None else settings.replay_rate,
        )
        mqtt = config.mqtt
        self.encoder: JsonEncoder | SparkplugEncoder
        self.edge: EdgeNode | None = None
        if config.sparkplug is not None:  # mqtt.format: sparkplug
            node = config.sparkplug.edge_node_id or config.gateway.id
            spb_topics = SparkplugTopics(config.sparkplug.group_id, node)
            self.encoder = SparkplugEncoder(
                spb_topics,
                self.buffer,
                config.devices,
                _value_types(config),
                Aliases(settings.path / "sparkplug-aliases.json", self.buffer.count > 0),
                QUALITY_CODES[config.sparkplug.quality_codes],
            )
            self.edge = EdgeNode(
                spb_topics,
                self.encoder,
                BdSeq(settings.path / "bdseq"),
                config.sparkplug.primary_host_id,
                servers=len(config.mqtt.url),
            )
            # DCMD is subscribed whatever the map says: a reload may make a point writable,
            # and a write to one that is not is refused (and audited) like any command.
            self.edge.write = self._sparkplug_write
        else:
            self.encoder = JsonEncoder(self.topics, self.buffer, batch=mqtt.batch == "device")
        self.forwarder = Forwarder(
            self._data_session(config),
            self.buffer,
            0 if self.edge is not None else mqtt.qos,
            self.topics.status,
            settings.sync_interval,
            self.edge,
        )
        self.sources: dict[str, Source] = {s.device_id: s for s in create_sources(config.devices)}
        self.deadband = Deadband(config.devices)
        self.transforms: list[Transform] = [self.deadband]
        self.router = self._router(config)
        self.intake = Intake(config.commands.rate, config.commands.queue)
        # Commands have a session of their own while the map has a writable point.
        self.commands: CommandChannel | None = None
        http = config.http
        self.health = Health(
            reading_intervals(config.devices),
            http.stale_after if http else None,
            lambda: self.forwarder.broker_connected,
            lambda: self.buffer.bytes,
            int(http.buffer_alarm) if http and http.buffer_alarm is not None else None,
            self._last_error,
        )
        self.health.held = lambda: self.forwarder.held
        observed = Observed(
            config.gateway.id,
            self._device_stats,
            self.health,
            self.buffer,
            lambda: self.encoder.readings,
            lambda: self.forwarder.broker_connected,
            lambda: self.forwarder.connections,
            self.forwarder.ack_age,
            self._command_outcomes,
            lambda: self.reloads,
            started=time.time(),
            broker_since=lambda: self.forwarder.since,
            broker_url=lambda: self.forwarder.broker_url,
            map_files=lambda: self.config.sources,
            last_reload=self._last_reload,
            recent_commands=self._recent_commands,
        )
        self.metrics = Metrics(observed)
        # The status page's memory of the points: only while a listener serves the page.
        self.status = Status(config.devices if http else ())
        self.listener = (
            HttpListener(http, self.health, self.metrics, StatusPage(observed, self.status))
            if http
            else None
        )
        self._reloader: Reloader | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._commands_task: asyncio.Task[None] | None = None
        self.reloads: Mapping[str, int] = {}  # applied | refused, from the reloader

    async def run(self, reloader: Reloader | None = None) -> None:
        """Run until cancelled; ``reloader`` applies new maps (SIGHUP, ``run --watch``)."""
        log.info(
            "gateway starting",
            gateway=self.config.gateway.id,
            devices=len(self.sources),
            points=sum(len(d.points) for d in self.config.devices),
            broker=", ".join(self.config.mqtt.url),
        )
        self.health.running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                if self.listener is not None:
                    tasks.create_task(self.listener.run(), name="http")
                    tasks.create_task(self.status.run(), name="status-trends")
                tasks.create_task(self.forwarder.run(), name="mqtt-forwarder")
                tasks.create_task(self.intake.run(self._command), name="command-intake")
                self._follow_commands(self.forwarder.settings)
                for source in self.sources.values():
                    self._start(source)
                if reloader is not None:
                    self._reloader = reloader
                    reloader.watching(self.config)
                    self.reloads = reloader.outcomes
                    tasks.create_task(reloader.run(), name="reload")
                if self.listener is not None:  # a probe may follow READY at once
                    await self.listener.started.wait()
                self.notifier.ready()
                log.info("gateway running")
                tasks.create_task(self.notifier.run(), name="systemd")
        finally:
            self.health.running = False
            self.router.cancel()
            log.info("gateway stopped", published=self.forwarder.published)

    async def apply(self, config: Config) -> list[str]:
        """Run a new, validated map: only what changed restarts (gateway/reload.py).

        Everything that can fail (the broker session's TLS files, the new sources) is built
        before anything running is touched: a ``GatewayError`` leaves the running map as it is.
        Returns the sections whose changes wait for the next restart.
        """
        # Comparing two big maps takes a while: the devices keep polling meanwhile.
        change = await asyncio.to_thread(diff, self.config, config)
        if change.pending:
            log.warning(
                "these settings changed and apply at the next restart",
                sections=change.pending,
            )
        new = change.config
        if change.empty:
            log.info("map reloaded: no device or broker setting changed")
            self.config = new
            return change.pending
        session = self._data_session(new) if change.mqtt else self.forwarder.settings
        fresh = create_sources([*change.restarted, *change.added])
        topics = self._topics(new)
        self.notifier.reloading()
        log.info(
            "map reloaded",
            added=[d.id for d in change.added],
            removed=change.removed,
            restarted=[d.id for d in change.restarted],
            sharing_a_connection=change.sharing,
            unchanged=len(change.unchanged),
            broker="reconnecting" if change.mqtt else "unchanged",
        )
        stopping = [*change.removed, *(d.id for d in change.restarted)]
        await self.router.retire(stopping)  # commands on them finish first
        await self._stop(stopping)
        for device in change.removed:
            if self.edge is not None:
                self.edge.removed(device)
                continue
            self.forwarder.set_retained(
                self.topics.device_status(device),
                _device_state("removed", "removed from the device map"),
            )
        if self.edge is not None:  # a restarted device is born again when it answers
            for restarted in change.restarted:
                self.edge.device_state(restarted.id, False)
        for moved in change.restarted:  # moved to another line: its old state must not stay
            old, now = self.topics.device_status(moved.id), topics.device_status(moved.id)
            if old != now and self.edge is None:
                self.forwarder.set_retained(old, _device_state("removed", f"moved to {now}"))
        self.config = new
        self.topics = topics
        if isinstance(self.encoder, JsonEncoder):
            self.encoder.topics = topics
        else:
            self.encoder.track(new.devices, _value_types(new), keep=change.unchanged)
        self.deadband.track(new.devices, keep=change.unchanged)
        self.health.track(reading_intervals(new.devices), keep=change.unchanged)
        if self.listener is not None:
            self.status.track(new.devices, keep=change.unchanged)
        self.sources.update((s.device_id, s) for s in fresh)
        router, self.router = self.router, self._router(new)
        self.router.take_over(router, change.unchanged)
        if change.mqtt:
            if self.edge is not None:
                self.edge.servers = len(new.mqtt.url)
            self.forwarder.switch(session, 0 if self.edge is not None else new.mqtt.qos)
            await self._stop_commands()
        self._follow_commands(session)
        for source in fresh:
            self._start(source)
        # What the old map built is garbage now, the new map lives as long as the process:
        # collect once, freeze again (see cli.run: docs/performance.md, step 9).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.notifier.ready()
        return change.pending

    # -- wiring --------------------------------------------------------------------------------

    def _topics(self, config: Config) -> Topics:
        return Topics(config.mqtt.topic, config.gateway, config.devices, config.mqtt.batch_topic)

    def _data_session(self, config: Config) -> Settings:
        mqtt = config.mqtt
        if self.edge is not None:  # the NDEATH, with a new bdSeq for every CONNECT
            session = data_session(mqtt, mqtt.client_id or config.gateway.id, None)
            # A clean session, as Sparkplug requires: the broker keeps no DCMD for later.
            return replace(
                session,
                will_provider=self.edge.will,
                persistent=False,
                session_expiry=0,
                content_type=None,
            )
        will = Will(self.topics.status, OFFLINE, min(mqtt.qos, 1), mqtt.retain)
        return data_session(mqtt, mqtt.client_id or config.gateway.id, will)

    def _router(self, config: Config) -> CommandRouter:
        writers = {i: s for i, s in self.sources.items() if isinstance(s, Writable)}
        return CommandRouter(
            config.devices,
            writers,
            self.topics,
            self._answer,
            self._publish_now,
            config.mqtt.response_prefix,
            config.commands.max_age,
        )

    def _start(self, source: Source) -> None:
        assert self._tasks is not None
        name = f"device:{source.device_id}"
        self._pumps[source.device_id] = self._tasks.create_task(self._pump(source), name=name)

    async def _stop(self, devices: list[str]) -> None:
        """Stop these devices' pumps and wait until their connections are closed."""
        pumps = [self._pumps.pop(d) for d in devices if d in self._pumps]
        for pump in pumps:
            pump.cancel()
        if pumps:
            await asyncio.wait(pumps)
        for device in devices:
            self.sources.pop(device, None)

    def _follow_commands(self, data: Settings) -> None:
        """A command session beside ``data`` while a point is writable (after a reload too)."""
        writable = any(d.writable for d in self.config.devices)
        if writable and self._commands_task is None:
            assert self._tasks is not None
            session = command_session(data)
            self.commands = CommandChannel(session, self.topics.command_filter())
            self._commands_task = self._tasks.create_task(
                self.commands.run(self.intake.offer), name="commands"
            )
        elif not writable and self._commands_task is not None:
            self._commands_task.cancel()
            self._commands_task, self.commands = None, None

    async def _stop_commands(self) -> None:
        task, self._commands_task, self.commands = self._commands_task, None, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def _sparkplug_write(self, device: str, point: str, value: Scalar, command_id: str) -> None:
        self.router.submit(device, point, value, command_id)

    def _command(self, message: Incoming) -> None:
        self.router.handle(message)

    def _answer(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        if self.commands is not None:
            self.commands.answer(topic, payload, correlation)
        else:  # the command session is being replaced (a reload changed the broker)
            log.warning("command answer dropped: the command session is reconnecting", topic=topic)

    def _device_stats(self) -> dict[str, tuple[str, DeviceStats]]:
        protocols = {d.id: d.protocol for d in self.config.devices}
        return {i: (protocols.get(i, ""), s.stats) for i, s in self.sources.items()}

    def _announce(self, device: str, topic: str, state: tuple[str, str | None]) -> None:
        """A device's new state: retained on its _status (JSON), or a Sparkplug DBIRTH or
        DDEATH."""
        if self.edge is None:
            self.forwarder.set_retained(topic, _device_state(*state))
        else:
            self.edge.device_state(device, state[0] == CONNECTED)

    def _last_error(self, device: str) -> str | None:
        source = self.sources.get(device)
        return source.stats.last_error if source is not None else None

    def _last_reload(self) -> ReloadRow | None:
        last = self._reloader.last if self._reloader is not None else None
        return ReloadRow(*last) if last is not None else None

    def _recent_commands(self) -> list[CommandRow]:
        return [
            CommandRow(
                answered,
                None if result.command_id is None else str(result.command_id),
                result.device,
                result.point,
                result.requested,
                result.outcome,
                result.value,
                result.error,
                client,
            )
            for result, client, answered in self.router.recent
        ]

    def _command_outcomes(self) -> dict[str, int]:
        return {**self.router.outcomes, "dropped": self.intake.dropped.total}

    def _publish_now(self, reading: Reading) -> None:
        """A value read back after a command: published at once, whatever the deadband (it
        also becomes the deadband's reference, so the next poll does not repeat it)."""
        self.deadband.remember(reading)
        self.encoder.send([reading])
        if self.listener is not None:
            self.status.tap_one(reading)

    async def _pump(self, source: Source) -> None:
        send = self.encoder.send
        room = self.buffer.room
        status_topic = self.topics.device_status(source.device_id)
        published_state: tuple[str, str | None] | None = None
        # Blocks of values go to the sink as they are unless a transform must see readings.
        transforms = [t for t in self.transforms if t.covers(source.device_id)]
        seen = self.health.seen
        # What goes to the broker, for the status page (one list append a batch).
        tap = self.status.table(source.device_id).tap if self.listener is not None else None
        try:
            async for batch in source.readings():
                seen(source.device_id, source.state, batch)
                if source.state != published_state:
                    published_state = source.state
                    if isinstance(self.encoder, SparkplugEncoder):  # a DBIRTH has the values
                        self.encoder.remember(batch)
                    self._announce(source.device_id, status_topic, published_state)
                if transforms:
                    readings = expand(batch)
                    for transform in transforms:
                        readings = transform(readings)
                    batch = readings
                if batch:
                    send(batch)
                    if tap is not None:
                        tap(batch)
                if not room.is_set():  # buffer full with on_full: block_oldest_first
                    await self.buffer.wait_for_room()
        finally:
            await source.close()


def _value_types(config: Config) -> dict[str, dict[str, str | None]]:
    return {d.id: value_types(d) for d in config.devices}


def _device_state(state: str, reason: str | None) -> bytes:
    """``{"state", "since", "reason"}``: docs/schemas/device-status.schema.json."""
    payload: dict[str, str] = {"state": state, "since": iso_time(time.time())}
    if reason is not None:
        payload["reason"] = reason
    return kept_json(payload)
