"""The certificate ``maider serve --share`` serves HTTPS with: the user's own, or a self-signed one made here.

The self-signed certificate (ECDSA P-256, one year) names every host name and address the panel is shared under,
lives in MAIDER_HOME/tls (key 0600), and is reused while it still covers those names. Teammates compare its SHA-256
fingerprint, which ``serve`` prints, with what their browser shows the first time.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_DIR = "tls"
VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=14)


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path
    fingerprint: str  # SHA-256, colon-separated hex, as browsers show it


def fingerprint_of(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def own_certificate(cert_path: Path, key_path: Path) -> Certificate:
    """The user's certificate and key (``--tls-cert/--tls-key``), checked to load."""
    for path in (cert_path, key_path):
        if not path.is_file():
            raise ValueError(f"{path} is not a readable file")
    try:
        fingerprint = fingerprint_of(cert_path)
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the certificate or key could not be read as PEM: {exc}") from None
    return Certificate(cert_path, key_path, fingerprint)


def self_signed(home: Path, names: list[str], now: datetime | None = None) -> Certificate:
    """A self-signed certificate for ``names`` (host names and IP addresses), made once and reused."""
    folder = home / TLS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    now = now or datetime.now(timezone.utc)
    if cert_path.is_file() and key_path.is_file() and _still_covers(cert_path, names, now):
        return Certificate(cert_path, key_path, fingerprint_of(cert_path))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "maider panel")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return Certificate(cert_path, key_path, fingerprint_of(cert_path))


def _alt_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _still_covers(cert_path: Path, names: list[str], now: datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    return set(_alt_names(names)) <= set(present)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
