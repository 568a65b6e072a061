"""Device-map schema of OPC UA devices and points (keys: README.md beside this file)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from gateway.config.schema import DeviceConfig, PointConfig
from gateway.config.types import (
    POINT_CONFIG,
    Duration,
    FieldError,
    OptionalText,
    StrictModel,
    relative_to_map,
)

Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
Mode = Literal["None", "Sign", "SignAndEncrypt"]
# The simulator creates a variable of this DataType; the gateway itself reads the type from the
# server, so the key matters only to `factory-gateway simulate` (and to writes, later).
SimDataType = Literal[
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "ByteString",
    "LocalizedText",
    "Guid",
]

_NODE_ID = re.compile(r"^(?:(?:ns=\d+|nsu=[^;]+);)?[isgb]=.+$", re.DOTALL)
_BROWSE_SEGMENT = re.compile(r"^(?:(\d+):)?(.+)$")


def check_node_id(text: str) -> str:
    """``ns=2;s=Name``, ``i=85``, ``nsu=http://uri;s=Name`` (namespace by URI), ``g=`` or ``b=``."""
    if not _NODE_ID.match(text):
        raise ValueError(
            f"{text!r} is not an OPC UA node id; write it like 'ns=2;s=Oven.Temperature', "
            "'ns=2;i=1042', 'i=2258' or 'nsu=http://example.com/plant;s=Oven.Temperature'"
        )
    from asyncua import ua

    if not text.startswith("nsu="):
        try:
            ua.NodeId.from_string(text)
        except ua.UaStringParsingError:
            raise ValueError(f"{text!r} is not a valid OPC UA node id") from None
    return text


def split_browse_path(path: str) -> list[tuple[int, str]]:
    """``0:Objects/2:Oven/2:State`` -> [(0, 'Objects'), (2, 'Oven'), (2, 'State')].

    A segment without ``index:`` uses namespace 0 for the first one (``Objects``) and the
    previous segment's namespace after that, which is how most address spaces are built.
    """
    segments: list[tuple[int, str]] = []
    for part in path.strip("/").split("/"):
        match = _BROWSE_SEGMENT.match(part.strip())
        if not match:
            raise ValueError(f"browse path {path!r} has an empty segment")
        index = match.group(1)
        name = match.group(2)
        namespace = int(index) if index is not None else (segments[-1][0] if segments else 0)
        segments.append((namespace, name))
    return segments


@dataclass(config=POINT_CONFIG, frozen=True, slots=True, kw_only=True)
class OpcUaPoint(PointConfig):
    node: str | None = None
    browse_path: str | None = None  # from the Root folder, e.g. 0:Objects/2:Oven/2:State
    sampling_interval: Duration | None = None  # default: the device's publishing interval
    queue_size: int = Field(default=1, ge=1, le=10_000)  # server-side queue of the item
    # Server-side percent deadband (of the variable's EURange), subscribe mode only. The
    # absolute `deadband` is applied by the gateway and, unless the device sets
    # `server_deadband: false`, also sent to the server as a DataChangeFilter.
    deadband_percent: float | None = Field(default=None, gt=0, le=100)
    data_type: SimDataType | None = None  # the variable's type in the simulator
    array: int | None = Field(default=None, ge=1, le=10_000)  # simulator: an array this long

    @field_validator("node")
    @classmethod
    def _node(cls, node: str | None) -> str | None:
        return None if node is None else check_node_id(node)

    @field_validator("browse_path")
    @classmethod
    def _browse_path(cls, path: str | None) -> str | None:
        if path is not None:
            split_browse_path(path)
        return path

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaPoint:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError(f"point {self.name!r} needs exactly one of node or browse_path")
        if self.deadband is not None and self.deadband_percent is not None:
            raise FieldError(
                "deadband_percent", "use either deadband (absolute) or deadband_percent, not both"
            )
        return self


class Security(StrictModel):
    policy: Policy = "None"
    mode: Mode = "None"

    @model_validator(mode="after")
    def _pair(self) -> Security:
        if (self.policy == "None") != (self.mode == "None"):
            raise FieldError(
                "mode",
                "security policy None goes with mode None, and a policy other than None "
                "needs mode Sign or SignAndEncrypt",
            )
        return self


class OpcUaFaults(StrictModel):
    """Device-level ``sim:`` block: what the simulator does (ignored by ``run``)."""

    certificate: Path | None = None  # the server's own certificate; generated when absent
    private_key: Path | None = None
    restart_every: Duration | None = None  # stop and restart the server this often
    drop_sessions_every: Duration | None = None  # close every client session this often
    # Simulator's username/password; default: the device's (so a map simulates what it reads).
    username: str | None = None
    password: str | None = Field(default=None, repr=False)


PKI_PATHS = ("certificate", "private_key", "trust", "user_certificate", "user_private_key")


class OpcUaDevice(DeviceConfig):
    protocol: Literal["opcua"]
    endpoint: str
    mode: Literal["subscribe", "poll"] = "subscribe"
    # Subscription publishing interval, or the poll interval in poll mode. Default: poll_interval.
    publishing_interval: Duration | None = None
    timeout: Duration = 5.0  # one request (a batch of 1,000 monitored items is one request)
    security: Security = Security()
    username: OptionalText = None  # empty (`${OPCUA_USER:-}` unset): anonymous
    password: OptionalText = Field(default=None, repr=False)
    # Own application certificate (DER) and key (PEM), generated when absent; the folder of
    # trusted server certificates. Relative paths are relative to the device map's folder.
    certificate: Path = Path("pki/own/cert.der")
    private_key: Path = Path("pki/own/key.pem")
    trust: Path = Path("pki/trusted")
    trust_on_first_use: bool = False
    # A server certificate outside its validity dates is refused unless this is true.
    accept_expired: bool = False
    user_certificate: Path | None = None  # certificate identity (instead of a username)
    user_private_key: Path | None = None
    application_uri: str | None = None  # default: read from the certificate, or generated
    session_timeout: Duration = 60.0
    # Send absolute deadbands to the server too (less traffic). Some servers compare with the
    # previous sample instead of the last reported value, so a slow drift never passes: set
    # false for those, and the gateway's own deadband (against the last published) still applies.
    server_deadband: bool = True
    retry_unknown_nodes: Duration = 30.0  # how often a node the server does not know is retried
    points: Sequence[OpcUaPoint] = Field(min_length=1)
    sim: OpcUaFaults | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(
                f"{endpoint!r}: an OPC UA endpoint looks like opc.tcp://host:4840/path"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"{endpoint!r}: the port is not a number from 1 to 65535") from None
        return endpoint

    @model_validator(mode="after")
    def _pki(self, info: ValidationInfo) -> OpcUaDevice:
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError(
                "a certificate identity needs both user_certificate and user_private_key"
            )
        if self.user_certificate is not None and self.username is not None:
            raise FieldError(
                "user_certificate", "use either username/password or user_certificate, not both"
            )
        if self.password is not None and self.username is None:
            raise FieldError("password", "password is set but username is not")
        relative_to_map(self, PKI_PATHS, info)
        return self

    @property
    def interval(self) -> float:
        return self.publishing_interval or self.poll_interval
