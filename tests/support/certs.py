"""Self-signed test certificates written with the cryptography package."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_certificate(
    folder: Path,
    *,
    common_name: str,
    prefix: str = "test",
    valid_from_days: float = -1,
    valid_until_days: float = 1,
    ip_address: str | None = None,
) -> tuple[Path, Path]:
    """Write `{prefix}-cert.pem` and `{prefix}-key.pem` into `folder`.

    The validity period runs from `valid_from_days` to `valid_until_days`
    around now, so a negative end makes an expired certificate. With
    `ip_address` the certificate names that address, so a client that checks
    host names accepts it there.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_from_days))
        .not_valid_after(now + datetime.timedelta(days=valid_until_days))
    )
    if ip_address is not None:
        address = x509.IPAddress(ipaddress.ip_address(ip_address))
        builder = builder.add_extension(
            x509.SubjectAlternativeName([address]), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    cert_file = folder / f"{prefix}-cert.pem"
    key_file = folder / f"{prefix}-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
