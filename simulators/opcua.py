"""OPC UA simulator: an asyncua server per endpoint of a map, serving its devices' variables.

Variables sit at the map's node ids (namespaces registered so ``ns=2`` and ``nsu=`` resolve) or
along the map's browse paths; node-id points are grouped in folders of 100 under a folder per
device (asyncua's server slows down quadratically with many children of one node). Values come
from the points' ``sim:`` generators; only changing values are written, on a tick, so thousands
of constant variables cost nothing after start.

When a device of the endpoint asks for security, the server offers that policy and mode
(SignAndEncrypt and Sign) with its own certificate, and requires the device's username and
password if it has one. Faults for tests and demos: ``restart()``, ``drop_sessions()``,
``freeze()``, ``delete_point()`` / ``add_point()``, and the periodic ``sim:`` faults of a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from asyncua import Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.hazmat.primitives.serialization import Encoding

from adapters.opcua.config import OpcUaDevice, OpcUaPoint, split_browse_path
from adapters.opcua.nodes import parse_node_id
from adapters.opcua.security import ensure_certificate, load_certificate
from simulators.errors import ListenError
from simulators.generators import Generated, Generator, make_generator

log = structlog.get_logger("simulators.opcua")
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

TICK = 0.1  # seconds between value updates of changing points
FOLDER_SIZE = 100
INT_RANGES = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
SECURITY_TYPES = {
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"): (
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt
    ),
    ("Aes128_Sha256_RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"): (
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt
    ),
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
}


def data_type_of(point: OpcUaPoint) -> str:
    """The variable's DataType: the map's, or inferred from the generator."""
    if point.data_type is not None:
        return point.data_type
    sim = point.sim
    if sim is None:
        return "Double"
    if sim.constant is not None:
        constant = sim.constant
        if isinstance(constant, bool):
            return "Boolean"
        if isinstance(constant, int):
            return "Int64"
        return "String" if isinstance(constant, str) else "Double"
    if sim.toggle is not None:
        return "Boolean"
    return "Int64" if sim.counter is not None else "Double"


def coerce(value: Generated, data_type: str) -> Any:
    """Fit a generated value to an OPC UA DataType."""
    if data_type == "Boolean":
        return bool(value)
    if data_type in INT_RANGES:
        low, high = INT_RANGES[data_type]
        number = value if isinstance(value, int) else _number(value)
        return int(min(high, max(low, round(number)))) if math.isfinite(number) else 0
    if data_type in ("Float", "Double"):
        return _number(value)
    if data_type == "DateTime":
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return datetime.now(UTC)
    if data_type == "ByteString":
        return str(value).encode()
    if data_type == "LocalizedText":
        return ua.LocalizedText(str(value), "en")
    if data_type == "Guid":
        return uuid.uuid5(uuid.NAMESPACE_URL, str(value))
    return str(value)


def _number(value: Generated) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return float(value)


class SimulatedPoint:
    def __init__(self, device: OpcUaDevice, point: OpcUaPoint, seed: int) -> None:
        self.device = device
        self.point = point
        self.data_type = data_type_of(point)
        self.variant = getattr(ua.VariantType, self.data_type)
        self.generator: Generator = make_generator(point.sim, _generic(self.data_type), seed)
        # A writable point is a setpoint: it holds what a client writes (the generator only
        # gives its first value).
        self.constant = point.writable or (point.sim is not None and point.sim.constant is not None)
        self.node: Node | None = None
        self.node_id: ua.NodeId | None = None
        self.parent: Node | None = None
        self.last: Any = None

    def value(self, elapsed: float) -> Any:
        value = coerce(self.generator(elapsed), self.data_type)
        if self.point.array is not None:
            return [value] * self.point.array
        return value

    def data_value(self, value: Any) -> ua.DataValue:
        now: Any = datetime.now(UTC)  # ua.DateTime is typed as a NewType of int
        return ua.DataValue(
            ua.Variant(value, self.variant, is_array=self.point.array is not None),
            SourceTimestamp=now,
            ServerTimestamp=now,
        )


def _generic(data_type: str) -> str:
    """The generator family of a DataType (the generators speak Modbus-like type names)."""
    if data_type == "Boolean":
        return "bool"
    if data_type in INT_RANGES:
        return "int32"
    return "float64" if data_type in ("Float", "Double") else "string"


class _Users(UserManager):
    """Accepts exactly the configured usernames and passwords, and the configured user
    certificates (certificate identity); nothing anonymous."""

    def __init__(self, users: dict[str, str], certificates: set[bytes]) -> None:
        self.users = users
        self.certificates = certificates

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:
            if self.users.get(username) == password:
                return User(role=UserRole.User, name=username)
            return None
        # asyncua passes the channel's client certificate for anonymous tokens too: only a
        # configured user certificate is an identity.
        if certificate is not None and _der(certificate) in self.certificates:
            return User(role=UserRole.User, name="certificate")
        return None


def _der(certificate: Any) -> bytes:
    if isinstance(certificate, bytes | bytearray):
        return bytes(certificate)
    return bytes(certificate.public_bytes(Encoding.DER))


class EndpointSimulator:
    """One asyncua server: every device of the map that uses this endpoint."""

    def __init__(self, endpoint: str, devices: list[OpcUaDevice], pki: Path) -> None:
        self.endpoint = endpoint
        self.devices = devices
        self.pki = pki
        self.points: dict[tuple[str, str], SimulatedPoint] = {}
        for seed, (device, point) in enumerate((d, p) for d in devices for p in d.points):
            self.points[(device.id, point.name)] = SimulatedPoint(device, point, seed)
        self.server: Server | None = None
        self.frozen = False
        self.start_time = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._faults: list[asyncio.Task[None]] = []
        self.restarts = 0

    async def start(self) -> None:
        await self._serve()
        self._ticker = asyncio.create_task(self._tick())
        for device in self.devices:
            faults = device.sim
            if faults and faults.restart_every:
                self._faults.append(
                    asyncio.create_task(self._every(faults.restart_every, self.restart))
                )
            if faults and faults.drop_sessions_every:
                self._faults.append(
                    asyncio.create_task(self._every(faults.drop_sessions_every, self._drop))
                )

    async def stop(self) -> None:
        for task in (self._ticker, *self._faults):
            if task is not None:
                task.cancel()
        await self._shutdown()

    async def restart(self, down_for: float = 0.5) -> None:
        """Stop the server (every session and subscription is lost) and start a fresh one."""
        log.info("restarting server", endpoint=self.endpoint)
        await self._shutdown()
        await asyncio.sleep(down_for)
        await self._serve()
        self.restarts += 1

    async def drop_sessions(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        """Close every client connection (the sessions die with them)."""
        server = self.server
        if server is None or server.bserver is None:
            return
        for protocol in list(server.bserver.clients):
            if protocol.transport is not None:
                protocol.transport.close()
        log.info("dropped sessions", endpoint=self.endpoint)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) changing values; the server keeps answering."""
        self.frozen = frozen

    async def delete_point(self, device: str, point: str) -> None:
        """Delete a variable as a server following the spec does: its monitored items get a
        data change with status BadNodeIdUnknown."""
        sim = self.points[(device, point)]
        server = self.server
        assert server is not None and sim.node is not None
        now: Any = datetime.now(UTC)  # ua.DateTime is typed as a NewType of int
        status = ua.StatusCode(ua.UInt32(ua.StatusCodes.BadNodeIdUnknown))
        gone = ua.DataValue(StatusCode=status, SourceTimestamp=now, ServerTimestamp=now)
        await server.write_attribute_value(sim.node.nodeid, gone)
        # asyncua's own deletion would report a subscription-wide status change instead (and,
        # calling a coroutine it never awaits, does not even do that): drop its callbacks.
        space = server.iserver.aspace
        value = space[sim.node.nodeid].attributes[ua.AttributeIds.Value]
        for handle in list(value.datachange_callbacks):
            space.delete_datachange_callback(handle)
        await server.delete_nodes([sim.node])
        sim.node = None

    async def add_point(self, device: str, point: str) -> None:
        sim = self.points[(device, point)]
        assert sim.parent is not None
        await self._add_variable(sim, sim.parent)

    async def set_value(self, device: str, point: str, value: Generated) -> None:
        sim = self.points[(device, point)]
        sim.constant = True
        sim.last = coerce(value, sim.data_type)
        if sim.node is not None and self.server is not None:
            await self.server.write_attribute_value(sim.node.nodeid, sim.data_value(sim.last))

    def monitored_items(self) -> int:
        """Monitored items on the server, across sessions and subscriptions."""
        if self.server is None:
            return 0
        subscriptions = self.server.iserver.subscription_service.subscriptions
        return sum(len(s.monitored_item_srv._monitored_items) for s in subscriptions.values())

    def channel_policies(self) -> list[str]:
        """Security policy URI of each open connection (tests check encryption is in use)."""
        return [p.processor._connection.security_policy.URI for p in self._connections()]

    def session_users(self) -> list[str | None]:
        """The user of each connection's activated session."""
        return [
            p.processor.session.user.name
            for p in self._connections()
            if p.processor.session is not None and p.processor.session.user is not None
        ]

    def _connections(self) -> list[Any]:
        if self.server is None or self.server.bserver is None:
            return []
        return [p for p in self.server.bserver.clients if p.processor is not None]

    # -- building the server ------------------------------------------------------------

    async def _serve(self) -> None:
        parts = urlsplit(self.endpoint)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"factory-gateway simulator {parts.path.strip('/') or 'opcua'}")
        await self._secure(server)
        await self._build(server)
        try:
            await server.start()
        except OSError as exc:
            raise ListenError(
                f"cannot serve {', '.join(d.id for d in self.devices)} on {self.endpoint}: "
                f"{exc.strerror or exc}"
            ) from None
        self.server = server
        for device in self.devices:
            log.info(
                "simulating device",
                device=device.id,
                protocol="opcua",
                endpoint=self.endpoint,
                points=len(device.points),
                security=f"{device.security.policy}/{device.security.mode}",
            )

    async def _shutdown(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()

    async def _secure(self, server: Server) -> None:
        policies = {(d.security.policy, d.security.mode) for d in self.devices}
        users = {d.username: d.password or "" for d in self.devices if d.username}
        for device in self.devices:
            if device.sim and device.sim.username:
                users[device.sim.username] = device.sim.password or ""
        secure = sorted(p for p in policies if p[0] != "None")
        if secure:
            faults = self.devices[0].sim
            cert = (faults.certificate if faults else None) or self.pki / "cert.der"
            key = (faults.private_key if faults else None) or self.pki / "key.pem"
            uri = ensure_certificate(cert, key, "urn:factory-gateway:simulator", server=True)
            await server.set_application_uri(uri)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            # Both modes of each configured policy, as a real server typically offers.
            types = {
                SECURITY_TYPES[(policy, mode)]
                for policy, _ in secure
                for mode in ("Sign", "SignAndEncrypt")
            }
            if ("None", "None") in policies:
                types.add(ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(sorted(types, key=lambda t: t.value))
        certificates = {
            load_certificate(d.user_certificate.read_bytes()).public_bytes(Encoding.DER)
            for d in self.devices
            if d.user_certificate is not None and d.user_certificate.is_file()
        }
        if users or certificates:
            server.iserver.user_manager = _Users(users, certificates)
            server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])

    async def _build(self, server: Server) -> None:
        namespaces = await server.get_namespace_array()
        for device in self.devices:
            for point in device.points:
                if point.node is not None and point.node.startswith("nsu="):
                    uri = point.node[4:].partition(";")[0]
                    if uri not in namespaces:
                        await server.register_namespace(uri)
                        namespaces = await server.get_namespace_array()
        highest = max((self._index_of(p) for p in self.points.values()), default=1)
        while len(namespaces) <= highest:
            await server.register_namespace(f"urn:factory-gateway:simulator:ns{len(namespaces)}")
            namespaces = await server.get_namespace_array()
        objects = server.nodes.objects
        created: dict[tuple[tuple[int, str], ...], Node] = {}
        by_device: dict[str, list[SimulatedPoint]] = defaultdict(list)
        for sim in self.points.values():
            if sim.point.browse_path is not None:
                sim.parent = await self._path_parent(objects, sim.point.browse_path, created)
                await self._add_variable(sim, sim.parent)
            else:
                node = parse_node_id(sim.point.node or "", namespaces)
                assert isinstance(node, ua.NodeId)
                sim.node_id = node
                by_device[sim.device.id].append(sim)
        for device_id, sims in by_device.items():
            namespace = sims[0].node_id.NamespaceIndex if sims[0].node_id else 1
            folder = await objects.add_folder(namespace, device_id)
            for start in range(0, len(sims), FOLDER_SIZE):
                chunk = sims[start : start + FOLDER_SIZE]
                parent = (
                    folder
                    if len(sims) <= FOLDER_SIZE
                    else await folder.add_folder(namespace, f"points-{start:05d}")
                )
                for sim in chunk:
                    sim.parent = parent
                    await self._add_variable(sim, parent)

    def _index_of(self, sim: SimulatedPoint) -> int:
        node = sim.point.node
        if node is not None and node.startswith("ns="):
            return int(node[3:].split(";", 1)[0])
        if sim.point.browse_path is not None:
            return max(ns for ns, _ in split_browse_path(sim.point.browse_path))
        return 1

    async def _path_parent(
        self, objects: Node, path: str, created: dict[tuple[tuple[int, str], ...], Node]
    ) -> Node:
        """Objects along a browse path (created once each); the last segment is the variable."""
        segments = split_browse_path(path)
        if segments and segments[0] == (0, "Objects"):
            segments = segments[1:]
        parent = objects
        for depth in range(len(segments) - 1):
            key = tuple(segments[: depth + 1])
            if key not in created:
                namespace, name = segments[depth]
                created[key] = await parent.add_object(namespace, name)
            parent = created[key]
        return parent

    async def _add_variable(self, sim: SimulatedPoint, parent: Node) -> None:
        value = sim.value(time.monotonic() - self.start_time) if sim.last is None else sim.last
        sim.last = value
        if sim.point.browse_path is not None:
            namespace, name = split_browse_path(sim.point.browse_path)[-1]
            # A stable string id, so a deleted and re-added variable is the same node again.
            node_id = sim.node_id or ua.NodeId(
                ua.String(sim.point.browse_path), ua.Int16(namespace)
            )
        else:
            assert sim.node_id is not None
            name, node_id, namespace = sim.point.name, sim.node_id, sim.node_id.NamespaceIndex
        variable = ua.Variant(value, sim.variant, is_array=sim.point.array is not None)
        sim.node = await parent.add_variable(
            node_id, ua.QualifiedName(name, namespace), variable, sim.variant
        )
        sim.node_id = sim.node.nodeid
        if sim.point.writable:  # as on a real server: only what the map writes is writable
            await sim.node.set_writable()
        await sim.node.write_value(sim.data_value(value))

    async def _tick(self) -> None:
        """Write the changing values; constants were written once at creation."""
        moving = [s for s in self.points.values() if not s.constant]
        while True:
            await asyncio.sleep(TICK)
            server = self.server
            if self.frozen or server is None:
                continue
            elapsed = time.monotonic() - self.start_time
            for sim in moving:
                if sim.constant or sim.node is None:
                    continue
                value = sim.value(elapsed)
                if value != sim.last:
                    sim.last = value
                    with contextlib.suppress(Exception):
                        await server.write_attribute_value(sim.node.nodeid, sim.data_value(value))

    async def _every(self, period: float, action: Any) -> None:
        """Inject a fault periodically; a failed injection is logged and tried again."""
        while True:
            await asyncio.sleep(period)
            try:
                await action()
            except Exception:
                log.exception("fault injection failed", endpoint=self.endpoint)


class OpcUaSimulator:
    """Every OPC UA device of a map, one server per distinct endpoint."""

    def __init__(self, devices: list[OpcUaDevice], base_dir: Path) -> None:
        by_endpoint: dict[str, list[OpcUaDevice]] = defaultdict(list)
        for device in devices:
            by_endpoint[device.endpoint].append(device)
        self.endpoints = {
            endpoint: EndpointSimulator(
                endpoint, members, base_dir / "pki" / "simulator" / _slug(endpoint)
            )
            for endpoint, members in by_endpoint.items()
        }

    def of(self, device_id: str) -> EndpointSimulator:
        for simulator in self.endpoints.values():
            if any(d.id == device_id for d in simulator.devices):
                return simulator
        raise KeyError(device_id)

    async def start(self) -> None:
        started = []
        try:
            for simulator in self.endpoints.values():
                await simulator.start()
                started.append(simulator)
        except BaseException:
            for simulator in started:
                await simulator.stop()
            raise

    async def stop(self) -> None:
        for simulator in self.endpoints.values():
            await simulator.stop()


def _slug(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.hostname}_{parts.port or 4840}"
