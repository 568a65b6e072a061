"""Reads one OPC UA server: a subscription (default) or a batched Read per interval.

Recovery is ours, not the library's: one connection attempt = one fresh client and session.
When the session dies -- the socket closes, the server reports a status change, the library's
watchdog gives up, or neither data nor keep-alive arrived for three keep-alive periods -- every
point goes ``bad`` at once, the client is torn down (its subscription deleted when the server
still listens, so nothing is duplicated) and a new one connects after a capped, jittered
backoff, recreating the subscription and every monitored item.

A node the server does not know (``BadNodeIdUnknown``, an unresolvable browse path) marks only
its point bad, is reported once, and is retried every ``retry_unknown_nodes``: nodes can appear
after a server reload. A node deleted while monitored is handled the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import structlog
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription

from adapters.opcua import security
from adapters.opcua.config import OpcUaDevice, OpcUaPoint
from adapters.opcua.convert import convert
from adapters.opcua.nodes import read_value_id, resolve
from adapters.opcua.write import expected_value, to_variant, variant_type
from gateway.backoff import Backoff
from gateway.errors import DeviceError, DeviceTimeout
from gateway.model import BAD, Reading, Scalar, bad_readings
from gateway.source import CONNECTED, DISCONNECTED, ERROR, WriteOutcome, raise_if_cancelling
from gateway.stats import DeviceStats

log = structlog.get_logger("adapters.opcua")

# asyncua logs every lost connection and failed request itself; we report each outage once.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

ITEMS_PER_REQUEST = 1000  # monitored items per CreateMonitoredItems, nodes per Read
DEAD_AFTER_KEEPALIVES = 3
MISSING_NODE = ("BadNodeIdUnknown", "BadNodeIdInvalid")
DATA_TYPE = ua.AttributeIds.DataType


class OpcUaSource:
    """A ``gateway.source.Source`` for one OPC UA server (one device of the map)."""

    def __init__(self, device: OpcUaDevice) -> None:
        self.device = device
        self.device_id = device.id
        self.points = {p.name: p for p in device.points}
        self._handles = {p.name: index for index, p in enumerate(device.points, start=1)}
        self._by_handle = {self._handles[p.name]: p for p in device.points}
        self._client: Client | None = None
        self._log = log.bind(device=device.id, endpoint=device.endpoint)
        # Points the server does not know: point -> reason; retried periodically.
        self.unknown: dict[str, str] = {}
        self.monitored = 0  # monitored items currently created on the server
        # Where asyncua keeps the session token, so a session that outlives its connection
        # can be resumed (and its subscription deleted) rather than left as a duplicate.
        self._session_file = _state_dir() / f"{device.id}.session.json"
        self._subscription_id: int | None = None
        self.state: tuple[str, str | None] = (DISCONNECTED, "not connected yet")
        self.stats = DeviceStats()  # polls: poll cycles, or a subscription's notification batches
        self._nodes: dict[str, ua.NodeId] = {}  # resolved points
        self._variant_types: dict[str, ua.VariantType] = {}  # built-in type of written points
        # Poll reads and writes take turns on the session (a write's read-back is its own).
        self._requests = asyncio.Lock()

    async def readings(self) -> AsyncIterator[list[Reading]]:
        backoff = Backoff(initial=0.5, cap=30.0)
        outage: str | None = None
        while True:
            session = self._poll() if self.device.mode == "poll" else self._subscribe()
            try:
                async for batch in session:
                    self.stats.polls += 1
                    backoff.reset()
                    self.state = (CONNECTED, None)
                    if outage is not None:
                        self._log.info("device recovered", after=outage)
                        outage = None
                    if batch:
                        yield batch
            except DeviceError as exc:
                raise_if_cancelling()
                self.stats.failed(exc)
                if exc.reason != outage:
                    detail = getattr(exc, "detail", None)
                    self._log.warning("device unreachable", reason=exc.reason, detail=detail)
                    outage = exc.reason
                    kind = ERROR if isinstance(exc, security.SecuritySetupError) else DISCONNECTED
                    self.state = (kind, exc.reason)
                    yield bad_readings(self.device_id, self.device.points, exc.reason, time.time())
            finally:
                await session.aclose()
                await self.close()
            await asyncio.sleep(backoff.next_delay())

    async def close(self) -> None:
        """Close the session politely (deleting its subscriptions) when the server answers.

        When it does not, the session may live on in the server (a dropped connection does not
        end a session): its token stays in the state file, so the next connection resumes it and
        deletes the old subscription instead of leaving a duplicate behind.
        """
        client, self._client = self._client, None
        self.monitored = 0
        if client is None:
            return
        protocol = client.uaclient.protocol
        alive = protocol is not None and not protocol.is_closed
        closed = False
        try:
            async with asyncio.timeout(self.device.timeout):
                # On a closed connection this only stops the client's background tasks.
                await client.close_session()
                if alive:
                    await client.close_secure_channel()
                    closed = True
        except Exception:  # a dead or hung server cannot be closed politely; keep the token
            pass
        if closed:
            self._session_file.unlink(missing_ok=True)
            self._subscription_id = None
        client.disconnect_socket()

    def check(self, point: str, value: Scalar) -> None:
        """Nothing to check without the server: the node's DataType decides."""

    async def write(self, point: str, value: Scalar) -> WriteOutcome:
        """A command (``gateway.source.Writable``): read the old value and the node's DataType
        (once), write the Value as exactly that type, read it back."""
        client = self._client
        if client is None or self.state[0] != CONNECTED:
            raise DeviceError(self.state[1] or "not connected")
        spec = self.points[point]
        async with self._requests:
            with translate_errors(self.device):
                node = self._nodes.get(point)
                if node is None:
                    resolved, failed = await resolve(client, [spec])
                    if point not in resolved:
                        reason = failed.get(point, "BadNodeIdUnknown")
                        raise DeviceError(reason, connection_lost=False)
                    node = self._nodes[point] = resolved[point]
                item = read_value_id(node)
                old, data_type = await _read(client, [item, read_value_id(node, DATA_TYPE)])
                vtype = self._variant_types.get(point)
                if vtype is None:
                    status = data_type.StatusCode
                    if (status is not None and not status.is_good()) or data_type.Value is None:
                        raise DeviceError(f"cannot read DataType: {status}", connection_lost=False)
                    vtype = await variant_type(client, data_type.Value.Value)
                    self._variant_types[point] = vtype
                variant = to_variant(value, vtype)
                change = ua.WriteValue()
                change.NodeId = item.NodeId
                change.AttributeId = ua.AttributeIds.Value
                # The value alone: many servers refuse a written SourceTimestamp.
                change.Value = ua.DataValue(variant)
                request = ua.WriteParameters()
                request.NodesToWrite = [change]
                (written,) = await client.uaclient.write(request)
                if not written.is_good():
                    raise DeviceError(f"write refused: {written.name}", connection_lost=False)
                (after,) = await _read(client, [item])
        received = time.time()
        new, quality, ts, why = convert(after, received)
        reading = Reading(self.device_id, point, new, quality, ts, spec.unit, why)
        return WriteOutcome(convert(old, received)[0], expected_value(variant), reading)

    # -- connection ---------------------------------------------------------------------

    async def _connect(self) -> tuple[Client, asyncio.Event]:
        device = self.device
        client = Client(
            device.endpoint, timeout=device.timeout, watchdog_intervall=max(device.timeout, 1.0)
        )
        client.session_timeout = int(device.session_timeout * 1000)
        client.name = client.description = f"factory-gateway {device.id}"
        lost = asyncio.Event()

        async def on_lost(_exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        client.session_state_path = self._session_file
        previous = _saved_token(self._session_file)
        self._client = client
        with translate_errors(device):
            async with asyncio.timeout(3 * device.timeout):
                await security.configure(client, device)
                await client.connect()
        resumed = previous is not None and previous == client.uaclient.session.authentication_token
        if resumed and self._subscription_id is not None:
            # We resumed a session that outlived its connection: its subscription is still on
            # the server. Delete it, or the server would publish everything twice.
            with contextlib.suppress(Exception):
                await client.delete_subscriptions([self._subscription_id])
            self._log.info("resumed session", deleted_subscription=self._subscription_id)
        self._subscription_id = None
        return client, lost

    async def _resolve(
        self, client: Client, points: Iterable[OpcUaPoint]
    ) -> tuple[dict[str, ua.NodeId], list[str]]:
        """(resolved nodes, names of points newly found unavailable)."""
        with translate_errors(self.device):
            resolved, failed = await resolve(client, list(points))
        self._nodes.update(resolved)
        # A resolved point stays "unknown" until its item is created or its read is good.
        return resolved, [
            name for name, reason in failed.items() if self._mark_unknown(name, reason)
        ]

    def _mark_unknown(self, name: str, reason: str) -> bool:
        """Remember a node the server does not know; True the first time (to report it once)."""
        if self.unknown.get(name) == reason:
            return False
        self.unknown[name] = reason
        self._log.warning(
            "node unavailable", point=name, reason=reason, node=_address(self.points[name])
        )
        return True

    # -- subscribe mode -----------------------------------------------------------------

    async def _subscribe(self) -> AsyncGenerator[list[Reading], None]:
        device = self.device
        client, lost = await self._connect()
        keepalive_count = max(1, math.ceil(1.0 / device.interval))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = device.interval * 1000
        params.RequestedMaxKeepAliveCount = keepalive_count
        params.RequestedLifetimeCount = max(10_000, 3 * keepalive_count)
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        with translate_errors(device):
            subscription = await client.create_subscription(
                params, None, queue_maxsize=max(10_000, 4 * len(self.points))
            )
        self._subscription_id = subscription.subscription_id
        # Wait for data or a keep-alive at least this often, or declare the session dead.
        revised = subscription.parameters
        keepalive_period = (
            revised.RequestedPublishingInterval / 1000 * max(1, revised.RequestedMaxKeepAliveCount)
        )
        dead_after = DEAD_AFTER_KEEPALIVES * keepalive_period + device.timeout
        pending: list[Reading] = []
        ready = asyncio.Event()
        status: list[str] = []
        consumer = asyncio.ensure_future(self._consume(subscription, pending, ready, status))
        try:
            yield await self._create_items(subscription, client, list(self.points.values()))
            self._log.info("subscribed", items=self.monitored, interval=device.interval)
            retry_at = time.monotonic() + device.retry_unknown_nodes
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(keepalive_period, 1.0)):
                        await ready.wait()
                ready.clear()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    yield self._note_deleted_nodes(subscription, batch)
                if status:
                    raise DeviceError(f"subscription {status[0]}")
                if consumer.done() and not consumer.cancelled() and consumer.exception():
                    self._log.error("notification handling failed", exc_info=consumer.exception())
                    raise DeviceError("internal error handling notifications")
                if lost.is_set() or consumer.done():
                    raise DeviceError("connection lost")
                last = subscription.last_publish_at
                if last is not None and time.monotonic() - last > dead_after:
                    raise DeviceError(f"no data or keep-alive for {dead_after:.1f}s")
                if self.unknown and time.monotonic() >= retry_at:
                    retry = [self.points[name] for name in self.unknown]
                    yield await self._create_items(subscription, client, retry)
                    retry_at = time.monotonic() + device.retry_unknown_nodes
        finally:
            consumer.cancel()

    async def _consume(
        self,
        subscription: Subscription,
        pending: list[Reading],
        ready: asyncio.Event,
        status: list[str],
    ) -> None:
        """Turn notifications into readings; the only work done per notification."""
        device_id = self.device_id
        by_handle = self._by_handle
        async for event in subscription:
            if isinstance(event, DataChangeEvent):
                point = by_handle.get(event.data.monitored_item.ClientHandle)
                if point is None:
                    continue
                value, quality, ts, reason = convert(event.data.monitored_item.Value, time.time())
                pending.append(
                    Reading(device_id, point.name, value, quality, ts, point.unit, reason)
                )
            elif isinstance(event, StatusChangeEvent):
                status.append(event.notification.Status.name)
            ready.set()

    async def _create_items(
        self, subscription: Subscription, client: Client, points: list[OpcUaPoint]
    ) -> list[Reading]:
        """Monitored items for ``points``, 1,000 per request; bad readings for those refused."""
        resolved, newly_bad = await self._resolve(client, points)
        requests = [self._item_request(self.points[name], node) for name, node in resolved.items()]
        names = list(resolved)
        for start in range(0, len(requests), ITEMS_PER_REQUEST):
            chunk = requests[start : start + ITEMS_PER_REQUEST]
            with translate_errors(self.device):
                results = await subscription.create_monitored_items(chunk)
            for name, result in zip(names[start : start + ITEMS_PER_REQUEST], results, strict=True):
                if isinstance(result, ua.StatusCode):
                    if self._mark_unknown(name, result.name):
                        newly_bad.append(name)
                else:
                    self.monitored += 1
                    self.unknown.pop(name, None)
        now = time.time()
        return [
            Reading(
                self.device_id, name, None, BAD, now, self.points[name].unit, self.unknown[name]
            )
            for name in dict.fromkeys(newly_bad)
            if name in self.unknown
        ]

    def _item_request(self, point: OpcUaPoint, node: ua.NodeId) -> ua.MonitoredItemCreateRequest:
        parameters = ua.MonitoringParameters()
        parameters.ClientHandle = self._handles[point.name]
        interval = point.sampling_interval or self.device.interval
        parameters.SamplingInterval = interval * 1000
        parameters.QueueSize = point.queue_size
        parameters.DiscardOldest = True
        absolute = point.deadband is not None and self.device.server_deadband
        if absolute or point.deadband_percent is not None:
            band = ua.DataChangeFilter()
            band.Trigger = ua.DataChangeTrigger.StatusValue
            if point.deadband_percent is not None:
                band.DeadbandType = ua.DeadbandType.Percent
                band.DeadbandValue = point.deadband_percent
            else:
                band.DeadbandType = ua.DeadbandType.Absolute
                band.DeadbandValue = point.deadband or 0.0
            parameters.Filter = band
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read_value_id(node)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = parameters
        return request

    def _note_deleted_nodes(
        self, subscription: Subscription, batch: list[Reading]
    ) -> list[Reading]:
        """A node deleted while monitored: its item is dead, so it joins the retry list."""
        for reading in batch:
            if reading.reason in MISSING_NODE and reading.point not in self.unknown:
                self._mark_unknown(reading.point, reading.reason)
                self.monitored -= 1
                self._forget_item(subscription, reading.point)
        return batch

    def _forget_item(self, subscription: Subscription, name: str) -> None:
        handle = self._handles[name]
        items: dict[int, Any] = getattr(subscription, "_monitored_items", {})
        data = items.get(handle)
        if data is not None and data.server_handle is not None:
            task = asyncio.ensure_future(subscription.unsubscribe(data.server_handle))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- poll mode ----------------------------------------------------------------------

    async def _poll(self) -> AsyncGenerator[list[Reading], None]:
        device = self.device
        client, lost = await self._connect()
        resolved, _ = await self._resolve(client, self.points.values())
        now = time.time()
        yield [
            Reading(self.device_id, name, None, BAD, now, self.points[name].unit, reason)
            for name, reason in self.unknown.items()
        ]
        names = list(resolved)
        reads = [read_value_id(resolved[name]) for name in names]
        last_reason: dict[str, str | None] = {}
        loop = asyncio.get_running_loop()
        due = loop.time()
        retry_at = time.monotonic() + device.retry_unknown_nodes
        while True:
            if lost.is_set():
                raise DeviceError("connection lost")
            batch: list[Reading] = []
            for start in range(0, len(reads), ITEMS_PER_REQUEST):
                with translate_errors(device):
                    async with self._requests:
                        self.stats.requests += 1
                        started = time.perf_counter()
                        results = await _read(client, reads[start : start + ITEMS_PER_REQUEST])
                        self.stats.read_seconds.observe(time.perf_counter() - started)
                raise_if_cancelling()
                received = time.time()
                for name, data in zip(
                    names[start : start + ITEMS_PER_REQUEST], results, strict=True
                ):
                    value, quality, ts, reason = convert(data, received)
                    if quality == BAD:
                        # A node the server does not know is reported once, not every poll.
                        if last_reason.get(name) == reason:
                            continue
                        if reason in MISSING_NODE:
                            self._mark_unknown(name, reason or "")
                    else:
                        self.unknown.pop(name, None)
                    last_reason[name] = reason
                    point = self.points[name]
                    batch.append(
                        Reading(self.device_id, name, value, quality, ts, point.unit, reason)
                    )
            if self.unknown and time.monotonic() >= retry_at:
                retry_at = time.monotonic() + device.retry_unknown_nodes
                missing = [self.points[n] for n in self.unknown if n not in resolved]
                if missing:
                    found, _ = await self._resolve(client, missing)
                    for name, node in found.items():
                        resolved[name] = node
                        names.append(name)
                        reads.append(read_value_id(node))
            yield batch
            due = max(due + device.interval, loop.time())
            await asyncio.sleep(due - loop.time())


async def _read(client: Client, items: list[ua.ReadValueId]) -> list[ua.DataValue]:
    request = ua.ReadParameters()
    request.NodesToRead = items
    request.TimestampsToReturn = ua.TimestampsToReturn.Both
    return await client.uaclient.read(request)


_STATE_DIR: Path | None = None


def _state_dir() -> Path:
    """A private folder for session tokens, made once per process."""
    global _STATE_DIR
    if _STATE_DIR is None:
        _STATE_DIR = Path(tempfile.mkdtemp(prefix="factory-gateway-opcua-"))
    return _STATE_DIR


def _saved_token(path: Path) -> ua.NodeId | None:
    try:
        return ua.NodeId.from_string(json.loads(path.read_text())["authentication_token"])
    except (OSError, ValueError, KeyError, TypeError, ua.UaStringParsingError):
        return None


def _address(point: OpcUaPoint) -> str:
    return point.node or point.browse_path or ""


@contextlib.contextmanager
def translate_errors(device: OpcUaDevice) -> Any:
    """asyncua and socket exceptions -> ``DeviceError`` with a short reason, in one place."""
    try:
        yield
    except DeviceError:
        raise
    except TimeoutError:
        raise DeviceTimeout from None
    except ua.UaStatusCodeError as exc:
        name = ua.StatusCode(exc.code).name
        if name.startswith("BadCertificate") or name == "BadSecurityChecksFailed":
            raise security.SecuritySetupError(
                name,
                f"the server refused our application certificate ({name}): add "
                f"{device.certificate} to the server's trusted certificates",
            ) from None
        raise DeviceError(name) from None
    except ConnectionRefusedError:
        raise DeviceError(f"cannot connect to {_host_port(device)}") from None
    except (ConnectionError, OSError) as exc:
        raise DeviceError(str(exc) or type(exc).__name__) from None
    except ua.UaError as exc:
        raise DeviceError(str(exc) or type(exc).__name__) from None
    # asyncua waits with asyncio.wait_for, which can swallow a cancellation on Python 3.11.
    raise_if_cancelling()


def _host_port(device: OpcUaDevice) -> str:
    return device.endpoint.split("://", 1)[-1].split("/", 1)[0]


def create_sources(devices: list[OpcUaDevice]) -> list[OpcUaSource]:
    """One source (one client, one session) per device."""
    return [OpcUaSource(device) for device in devices]
