"""Which OPC UA server certificates the gateway trusts, and how its own key is kept.

Real certificates made with ``cryptography``: a CA, a server certificate it issued, a leaf that
(wrongly) issued another, expired and not-yet-valid ones, one naming another application.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from adapters.opcua.config import OpcUaDevice
from adapters.opcua.security import SecuritySetupError, check_server_certificate, ensure_certificate

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
URI = "urn:plant:oven-server"

Key = ec.EllipticCurvePrivateKey


def _certificate(
    name: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None = None,
    ca: bool = False,
    uri: str | list[str] = URI,
    start: datetime.datetime = NOW - DAY,
    end: datetime.datetime = NOW + 365 * DAY,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_name, signer_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(u)
                    for u in ([uri] if isinstance(uri, str) else uri)
                ]
            ),
            critical=False,
        )
    )
    return builder.sign(signer_key, hashes.SHA256())


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _device(folder: Path, **keys: object) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "id": "oven",
            "line": "l1",
            "protocol": "opcua",
            "endpoint": "opc.tcp://127.0.0.1:4840",
            "trust": str(folder / "pki" / "trusted"),
            "points": [{"name": "t", "node": "ns=2;s=T"}],
            **keys,
        }
    )


def _trust(device: OpcUaDevice, cert: x509.Certificate) -> None:
    device.trust.mkdir(parents=True, exist_ok=True)
    name = cert.subject.rfc4514_string().replace("=", "_")
    (device.trust / f"{name}.der").write_bytes(cert.public_bytes(Encoding.DER))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def test_a_certificate_issued_by_a_trusted_ca_is_trusted(tmp_path: Path) -> None:
    ca_key = _key()
    ca = _certificate("plant CA", ca_key, ca=True)
    server = _certificate("oven", _key(), issuer=(ca, ca_key))
    device = _device(tmp_path)
    _trust(device, ca)
    check_server_certificate(_der(server), device, URI)


def test_a_certificate_issued_by_a_trusted_leaf_is_refused(tmp_path: Path) -> None:
    leaf_key = _key()
    leaf = _certificate("some trusted server", leaf_key)  # CA:FALSE
    forged = _certificate("oven", _key(), issuer=(leaf, leaf_key))
    device = _device(tmp_path)
    _trust(device, leaf)
    check_server_certificate(_der(leaf), device, URI)  # the leaf itself stays trusted
    with pytest.raises(SecuritySetupError) as refused:
        check_server_certificate(_der(forged), device, URI)
    assert refused.value.reason == "server certificate not trusted"
    assert list((tmp_path / "pki" / "rejected").iterdir())  # saved for the operator to judge


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (NOW - 400 * DAY, NOW - DAY, "server certificate expired"),
        (NOW + DAY, NOW + 400 * DAY, "server certificate not yet valid"),
    ],
)
def test_a_certificate_outside_its_dates_is_refused_unless_accepted(
    tmp_path: Path, start: datetime.datetime, end: datetime.datetime, reason: str
) -> None:
    cert = _certificate("oven", _key(), start=start, end=end)
    device = _device(tmp_path)
    _trust(device, cert)  # trusted, and still refused
    with pytest.raises(SecuritySetupError) as refused:
        check_server_certificate(_der(cert), device, URI)
    assert refused.value.reason == reason
    assert f"valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in refused.value.detail
    assert "accept_expired: true" in refused.value.detail
    check_server_certificate(_der(cert), _device(tmp_path, accept_expired=True), URI)


def test_a_certificate_of_another_application_is_refused(tmp_path: Path) -> None:
    cert = _certificate("oven", _key(), uri="urn:plant:another-server")
    device = _device(tmp_path)
    _trust(device, cert)
    with pytest.raises(SecuritySetupError) as refused:
        check_server_certificate(_der(cert), device, URI)
    assert refused.value.reason == "server certificate is not the server's"
    assert "'urn:plant:another-server'" in refused.value.detail
    both = _certificate("oven", _key(), uri=["urn:plant:another-server", URI])
    _trust(device, both)
    check_server_certificate(_der(both), device, URI)  # any of its URIs may be the server's


def test_the_key_is_never_readable_by_others(tmp_path: Path) -> None:
    """Under the most open umask, a watcher sees the key file only ever as 0600, and every
    folder made for it is 0700."""
    seen: set[int] = set()
    stop = threading.Event()
    keys = [tmp_path / f"g{n}" / "pki" / "own" / "key.pem" for n in range(5)]

    def watch() -> None:
        while not stop.is_set():
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    seen.add(stat.S_IMODE(os.stat(key).st_mode))

    old = os.umask(0)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for key in keys:
            ensure_certificate(key.parent / "cert.der", key, URI)
    finally:
        stop.set()
        watcher.join()
        os.umask(old)
    assert seen == {0o600}
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        for folder in (key.parent, key.parent.parent, key.parent.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert not [p for p in tmp_path.rglob("*.tmp")]
