"""Secure channel and identity of an OPC UA client: own certificate, server trust, user.

OPC UA security is mutual: the server must trust our application certificate, and we must trust
the server's. We follow the usual PKI folder layout: our own pair under ``pki/own/`` (generated
self-signed, with the application URI the server will check, when absent), trusted server
certificates in ``pki/trusted/``, and certificates we refused in ``pki/rejected/``, so the
fix for "not trusted" is one file move, and the error says which.

A server certificate is trusted when it, or a CA certificate that issued it, is in the trust
folder; it must be within its validity dates (``accept_expired`` overrides) and name the
application URI the server announces. Folders we create are 0700, our key 0600 from the start.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
from pathlib import Path

import structlog
from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from adapters.opcua.config import OpcUaDevice
from gateway.errors import DeviceError
from gateway.files import private_folder, write_private

log = structlog.get_logger("adapters.opcua")

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class SecuritySetupError(DeviceError):
    """The secure channel cannot be set up as configured (an untrusted server certificate, no
    matching endpoint). ``detail`` says what to do; the short ``reason`` goes on the readings.
    Retried like any fault, so fixing the trust folder needs no restart."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.detail = detail


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:factory-gateway"


def ensure_certificate(
    cert_file: Path, key_file: Path, application_uri: str, server: bool = False
) -> str:
    """Create a self-signed application certificate when absent; return its application URI.

    An existing certificate is never overwritten: its URI (from the SubjectAltName) is the one
    the application must present, so we read it back instead of imposing ours.
    """
    if cert_file.is_file() and key_file.is_file():
        found = application_uri_of(x509.load_der_x509_certificate(cert_file.read_bytes()))
        return found or default_application_uri()
    private_folder(key_file.parent)
    private_folder(cert_file.parent)
    key = generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),
    ]
    if server:
        names.append(x509.DNSName("localhost"))
    cert = generate_self_signed_app_certificate(
        key, application_uri, {}, names, extended=usage, days=3650
    )
    write_private(key_file, dump_private_key_as_pem(key))
    cert_file.write_bytes(cert.public_bytes(Encoding.DER))
    log.info("generated application certificate", certificate=str(cert_file), uri=application_uri)
    return application_uri


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The application URI a certificate names (its first SubjectAltName URI)."""
    uris = _uris(cert)
    return uris[0] if uris else None


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def load_certificate(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def is_trusted(server_cert: x509.Certificate, trust_dir: Path) -> bool:
    """Trusted = the certificate itself, or the CA that signed it, is in the trust folder (a
    trusted certificate that is not a CA vouches for itself only)."""
    if not trust_dir.is_dir():
        return False
    for path in sorted(trust_dir.iterdir()):
        if path.suffix.lower() not in CERT_SUFFIXES or not path.is_file():
            continue
        try:
            trusted = load_certificate(path.read_bytes())
        except ValueError:
            log.warning("unreadable certificate in the trust folder", file=str(path))
            continue
        if trusted == server_cert:
            return True
        if not _is_ca(trusted):
            continue
        try:
            server_cert.verify_directly_issued_by(trusted)
        except (ValueError, TypeError, InvalidSignature):  # not its issuer
            continue
        return True
    return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def check_server_certificate(
    der: bytes, device: OpcUaDevice, server_uri: str | None = None
) -> None:
    """Raise ``SecuritySetupError`` unless the certificate is valid now, names ``server_uri``
    (the application URI the server announces) and is trusted; an untrusted one is saved to
    ``rejected/``."""
    cert = x509.load_der_x509_certificate(der)
    subject = cert.subject.rfc4514_string()
    now = datetime.datetime.now(datetime.UTC)
    valid = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    if not valid and not device.accept_expired:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        raise SecuritySetupError(
            "server certificate expired" if now > end else "server certificate not yet valid",
            f"server certificate {subject} is valid from {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M} UTC, not now: renew it on the server (or, knowingly, set "
            "accept_expired: true on this device)",
        )
    named = _uris(cert)
    if server_uri is not None and server_uri not in named:
        raise SecuritySetupError(
            "server certificate is not the server's",
            f"the server says its application URI is {server_uri!r}, but its certificate "
            f"{subject} names {', '.join(map(repr, named)) or 'none'}: the certificate "
            "belongs to another application",
        )
    if is_trusted(cert, device.trust):
        return
    thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest()
    name = _file_name(cert, thumbprint)
    if device.trust_on_first_use:
        private_folder(device.trust)
        (device.trust / name).write_bytes(der)
        log.warning(
            "trusting server certificate on first use",
            device=device.id,
            file=str(device.trust / name),
            thumbprint=thumbprint,
        )
        return
    rejected = device.trust.parent / "rejected"
    private_folder(rejected)
    (rejected / name).write_bytes(der)
    raise SecuritySetupError(
        "server certificate not trusted",
        f"server certificate not trusted: {subject} "
        f"(SHA-1 {thumbprint}) was saved as {rejected / name}; "
        f"to trust this server, move that file into {device.trust}/",
    )


def _file_name(cert: x509.Certificate, thumbprint: str) -> str:
    common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    label = str(common[0].value) if common else "server"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
    return f"{safe}_{thumbprint}.der"


async def configure(client: Client, device: OpcUaDevice) -> None:
    """Set identity and (when asked for) the secure channel on a client not yet connected."""
    uri = device.application_uri or default_application_uri()
    if device.username is not None:
        client.set_user(device.username)
        if device.password is not None:
            client.set_password(device.password)
    if device.user_certificate is not None and device.user_private_key is not None:
        await client.load_client_certificate(str(device.user_certificate))
        await client.load_private_key(device.user_private_key)
    if device.security.policy == "None":
        client.application_uri = uri
        return
    client.application_uri = ensure_certificate(device.certificate, device.private_key, uri)
    mode = MODES[device.security.mode]
    policy = POLICIES[device.security.policy]
    endpoints = await client.connect_and_get_server_endpoints()
    matching = [
        e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy.URI
    ]
    if not matching:
        offered = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise SecuritySetupError(
            "no matching security endpoint",
            f"server offers no endpoint with policy {device.security.policy} and mode "
            f"{device.security.mode} (it offers {', '.join(offered)})",
        )
    server_der = _first_certificate(matching[0].ServerCertificate)
    check_server_certificate(server_der, device, matching[0].Server.ApplicationUri)
    await client.set_security(
        policy, device.certificate, device.private_key, server_certificate=server_der, mode=mode
    )


def _first_certificate(chain: bytes) -> bytes:
    """A ServerCertificate field may hold a chain: DER certificates back to back."""
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    # DER SEQUENCE length: short form, or long form with 1-4 length bytes.
    first = chain[1]
    if first < 0x80:
        return chain[: 2 + first]
    count = first & 0x7F
    length = int.from_bytes(chain[2 : 2 + count], "big")
    return chain[: 2 + count + length]
