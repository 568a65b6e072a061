"""The broker link: TLS with client certificates, MQTT 5, device batches and device states."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import ROOT, Collector, Mosquitto, Process, free_port, wait_port
from tests.integration.plant import PLC2_POINTS, device, write_map

SCHEMAS = ROOT / "docs" / "schemas"
BATCH_SCHEMA = json.loads((SCHEMAS / "device-batch.schema.json").read_text())
DEVICE_STATUS_SCHEMA = json.loads((SCHEMAS / "device-status.schema.json").read_text())


def _key_and_cert(
    folder: Path, name: str, issuer: tuple[Any, x509.Certificate] | None, server: bool = False
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer[0] if issuer else key, hashes.SHA256())
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key, cert


def _pki(folder: Path) -> None:
    """A CA, a broker certificate and a client certificate it signed; and a stranger CA."""
    folder.mkdir()
    ca = _key_and_cert(folder, "ca", None)
    _key_and_cert(folder, "broker", ca, server=True)
    _key_and_cert(folder, "client", ca)
    _key_and_cert(folder, "other-ca", None)


def tls_broker(workdir: Path) -> tuple[Mosquitto, int]:
    """mosquitto with a plain listener and a TLS one (its port returned) that requires a client
    certificate; the CA, broker, client and stranger CA files in ``workdir/pki``."""
    pki = workdir / "pki"
    _pki(pki)
    tls_port = free_port()
    broker = Mosquitto(
        workdir,
        extra=(
            f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/broker.crt\n"
            f"keyfile {pki}/broker.key\nrequire_certificate true\n"
        ),
    )
    wait_port(tls_port)
    return broker, tls_port


def test_tls_with_client_certificates_and_a_refused_stranger(workdir: Path) -> None:
    broker, tls_port = tls_broker(workdir)
    port = free_port()
    dev = device("plc-t", port, PLC2_POINTS)
    path = write_map(workdir / "gw.yaml", broker.port, [dev])
    text = path.read_text().replace(
        f"url: mqtt://127.0.0.1:{broker.port}",
        f"url: mqtts://127.0.0.1:{tls_port}\n  ca: pki/ca.crt\n  cert: pki/client.crt\n"
        "  key: pki/client.key",
    )
    path.write_text(text)
    stranger = workdir / "stranger.yaml"
    stranger.write_text(text.replace("ca: pki/ca.crt", "ca: pki/other-ca.crt"))
    collector = Collector(broker.port, "acme/#")  # on the plain listener
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    refused = None
    try:
        reading = collector.wait_for(lambda r: r["point"] == "speed" and r["quality"] == "good")
        assert reading["value"] == 1.25
        gateway.stop()
        # A broker whose certificate the configured CA did not sign is refused, and the log
        # says why; nothing is published.
        mark = len(collector.readings())
        refused = Process("run", str(stranger), log=workdir / "stranger.log")
        deadline = time.monotonic() + 20
        while "broker certificate refused" not in refused.output():
            assert time.monotonic() < deadline, refused.output()[-2000:]
            time.sleep(0.2)
        assert len(collector.readings()) == mark
    finally:
        if refused is not None:
            refused.stop()
        gateway.stop()
        sim.stop()
        collector.close()
        broker.stop()
    (event,) = [
        json.loads(x)
        for x in refused.output().splitlines()
        if x.startswith("{") and "broker certificate refused" in x
    ][:1]
    assert event["reason"]  # OpenSSL's words, e.g. "self-signed certificate in certificate chain"
    assert "other-ca.crt" in event["hint"]


class V5Subscriber:
    """An MQTT 5 subscriber that keeps each message's properties."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, Any, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, orjson.loads(message.payload), message.properties))

    def wait(self, count: int, timeout: float = 20) -> list[tuple[str, Any, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} messages")

    def close(self) -> None:
        self.client.disconnect()
        with contextlib.suppress(AttributeError):  # paho's loop_stop race, as in Collector
            self.client.loop_stop()


def test_mqtt5_device_batches_and_device_states(workdir: Path, broker: Mosquitto) -> None:
    port = free_port()
    dev = device("plc-5", port, PLC2_POINTS, poll="200ms", timeout="300ms")
    sim_map = write_map(workdir / "sim.yaml", broker.port, [dev])
    path = write_map(workdir / "gw.yaml", broker.port, [dev])
    path.write_text(
        path.read_text().replace(
            "  qos: 1\n", "  qos: 1\n  version: 5\n  batch: device\n  message_expiry: 1h\n"
        )
    )
    batches = V5Subscriber(broker.port, "acme/plant-1/assembly/line-1/plc-5")
    states = Collector(broker.port, "acme/plant-1/assembly/line-1/plc-5/_status")
    states_v5 = V5Subscriber(broker.port, "acme/plant-1/assembly/line-1/plc-5/_status")
    sim = Process("simulate", str(sim_map), log=workdir / "sim.log")
    wait_port(port)
    gateway = Process("run", str(path), log=workdir / "gw.log")
    try:
        received = batches.wait(5)
        # One message per poll cycle carrying both points, with content type and expiry.
        for topic, payload, properties in received:
            jsonschema.validate(payload, BATCH_SCHEMA)
            assert topic == "acme/plant-1/assembly/line-1/plc-5"
            assert set(payload["points"]) == {"count", "speed"}
            assert properties.ContentType == "application/json"
            assert 3500 < properties.MessageExpiryInterval <= 3600
        speed = received[-1][1]["points"]["speed"]
        assert (speed["value"], speed["unit"], speed["quality"]) == (1.25, "m/s", "good")
        seqs = [p["seq"] for _, p, _ in received]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # Device state: connected, then disconnected with the reason, then connected again.
        _wait_state(states, "connected")
        # Readings expire (message_expiry); a retained state does not, or the broker would
        # forget the state of a device that has not changed for an hour.
        for topic, _, properties in states_v5.wait(1):
            assert topic.endswith("/_status")
            assert properties.ContentType == "application/json"
            assert not hasattr(properties, "MessageExpiryInterval")
        sim.kill()
        down = _wait_state(states, "disconnected")
        assert down["reason"].startswith(("cannot connect", "connection lost", "timeout"))
        sim = Process("simulate", str(sim_map), log=workdir / "sim2.log")
        wait_port(port)
        _wait_state(states, "connected", after=down)
        for _, payload, _ in states.snapshot():
            jsonschema.validate(payload, DEVICE_STATUS_SCHEMA)
        # The state is retained: a subscriber arriving now gets the last one at once.
        late = Collector(broker.port, "acme/plant-1/assembly/line-1/plc-5/_status")
        try:
            late.wait_for_message(lambda topic, payload: True, timeout=10)
            ((_, payload, retained),) = late.snapshot()
            assert (retained, payload["state"]) == (True, "connected")
        finally:
            late.close()
    finally:
        gateway.stop()
        sim.stop()
        batches.close()
        states.close()
        states_v5.close()


def _wait_state(
    collector: Collector, state: str, after: dict[str, Any] | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        payloads = [p for _, p, _ in collector.snapshot() if isinstance(p, dict)]
        if after is not None:
            payloads = payloads[payloads.index(after) + 1 :]
        for payload in payloads:
            if payload.get("state") == state:
                return payload
        time.sleep(0.05)
    raise AssertionError(f"device never {state}: {collector.snapshot()}")
