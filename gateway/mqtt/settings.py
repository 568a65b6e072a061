"""The map's ``mqtt:`` section -> the transport's settings (TLS context, will, sessions)."""

from __future__ import annotations

import ssl
from dataclasses import replace

import structlog

from gateway.config.schema import MqttSection
from gateway.errors import GatewayError
from gateway.mqtt.client import Server, Settings, Will

log = structlog.get_logger("gateway.mqtt")

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def data_session(config: MqttSection, client_id: str, will: Will | None) -> Settings:
    """The readings' session: persistent, with the last will. Warns (every start) of settings
    that expose the connection."""
    if config.tls and config.insecure:
        log.warning(
            "mqtt.insecure is true: the broker's certificate is not checked against its host "
            "name, so anyone on the network path can pose as the broker",
            broker=", ".join(config.url),
        )
    remote = [str(Server(*s)) for s in config.servers if s[0] not in LOOPBACK]
    if config.password and not config.tls and remote:
        log.warning(
            "the MQTT password is sent in clear text (mqtt://): use mqtts:// for a broker "
            "reached over a network",
            broker=", ".join(remote),
        )
    return Settings(
        servers=tuple(Server(host, port) for host, port in config.servers),
        client_id=client_id,
        version=config.version,
        keepalive=int(config.keepalive),
        username=config.username,
        password=config.password if config.username else None,
        tls=tls_context(config) if config.tls else None,
        ca_file=str(config.ca) if config.ca else None,
        client_certificate=config.cert is not None,
        persistent=True,
        session_expiry=int(config.session_expiry),
        will=will,
        content_type="application/json",
        message_expiry=None if config.message_expiry is None else int(config.message_expiry),
        max_incoming=int(config.max_incoming),
    )


def command_session(data: Settings) -> Settings:
    """The commands' session, beside the readings' one: clean, so the broker never keeps a
    command for later; no will."""
    return replace(
        data,
        client_id=f"{data.client_id}-commands",
        persistent=False,
        will=None,
        will_provider=None,
        message_expiry=None,
        name="commands",
    )


def tls_context(config: MqttSection) -> ssl.SSLContext:
    """Verify the broker against ``ca`` (or the system's CAs); present ``cert``/``key``."""
    try:
        context = ssl.create_default_context(cafile=str(config.ca) if config.ca else None)
        if config.insecure:
            context.check_hostname = False
        if config.cert is not None and config.key is not None:
            context.load_cert_chain(str(config.cert), str(config.key))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot load the broker TLS files (ca, cert, key): {exc}") from None
    return context
