"""TLS for HTTPS and wss://: the configured certificate or a throwaway one."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import ifaddr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.config import SettingsError

SELF_SIGNED_DAYS = 30


@dataclass(frozen=True)
class SelfSigned:
    """A certificate made at start-up and the files it was written to."""

    cert_file: Path
    key_file: Path
    fingerprint: str
    names: tuple[str, ...]


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Load a certificate chain and its key into a server-side context.

    Raises SettingsError naming the file and the problem: unreadable, not
    PEM, or a key that does not belong to the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise SettingsError(
            f"TLS_KEY_FILE={str(key_file)!r} is encrypted with a passphrase, "
            "which the server cannot ask for: store it decrypted, for example "
            "with `openssl pkey -in KEY -out KEY.plain`, readable only by the "
            "server's user"
        ) from None
    except ssl.SSLError as exc:
        raise SettingsError(_load_error(cert_file, key_file, exc)) from None
    except OSError as exc:
        # The settings checked that both files are readable, so this is a
        # file removed or changed since then.
        raise SettingsError(
            f"TLS_CERT_FILE={str(cert_file)!r} or TLS_KEY_FILE={str(key_file)!r} "
            f"cannot be read: {exc.strerror or exc}"
        ) from None
    return context


def reload_certificate(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> str:
    """Load renewed certificate files into a running server's context.

    New connections get the new certificate, and open ones keep theirs. The
    files are checked in a fresh context first, so a broken pair raises
    SettingsError and leaves the old certificate in place. Returns the new
    certificate's SHA-256 fingerprint.
    """
    server_context(cert_file, key_file)
    context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


class _EncryptedKey(Exception):
    """The key file needs a passphrase."""


def _no_passphrase() -> bytes:
    # Called by OpenSSL only for an encrypted key, instead of a prompt on the
    # terminal that would stop start-up.
    raise _EncryptedKey


def validity_warning(cert_file: Path) -> str | None:
    """Return a warning when the first certificate in the file is not valid now.

    Browsers refuse such a certificate, but the server still starts, so that
    a renewal can replace the file.
    """
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        return (
            f"TLS_CERT_FILE={str(cert_file)!r} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: browsers will refuse it"
        )
    if cert.not_valid_before_utc > now:
        return (
            f"TLS_CERT_FILE={str(cert_file)!r} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: browsers will refuse it"
        )
    return None


def _load_error(cert_file: Path, key_file: Path, exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return (
            f"TLS_KEY_FILE={str(key_file)!r} is not the private key of "
            f"TLS_CERT_FILE={str(cert_file)!r}"
        )
    if "PEM" in reason or reason in ("NO_START_LINE", "BAD_END_LINE"):
        try:
            x509.load_pem_x509_certificates(cert_file.read_bytes())
        except ValueError:
            return f"TLS_CERT_FILE={str(cert_file)!r} contains no PEM certificate"
        return f"TLS_KEY_FILE={str(key_file)!r} contains no PEM private key"
    return (
        f"TLS_CERT_FILE={str(cert_file)!r} and TLS_KEY_FILE={str(key_file)!r} "
        f"could not be loaded: {reason}"
    )


def make_self_signed(folder: Path, extra_names: tuple[str, ...] = ()) -> SelfSigned:
    """Write a fresh self-signed certificate and key into `folder`.

    The certificate names localhost, this machine's host name, 127.0.0.1,
    ::1, this machine's addresses and `extra_names`, so a phone on the same
    LAN can open the page after accepting the browser's warning.
    """
    names = _local_names(extra_names)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "self-signed-cert.pem"
    key_file = folder / "self-signed-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return SelfSigned(cert_file, key_file, fingerprint, names)


def _local_names(extra_names: tuple[str, ...]) -> tuple[str, ...]:
    names = ["localhost", "127.0.0.1", "::1", *extra_names]
    names.append(socket.gethostname())
    # The interfaces' own addresses, read without a DNS query.
    for adapter in ifaddr.get_adapters():
        for address in adapter.ips:
            ip = address.ip if isinstance(address.ip, str) else address.ip[0]
            names.append(ip)
    unique: dict[str, None] = {}
    for name in names:
        if name and name != "0.0.0.0":
            unique.setdefault(name.split("%")[0], None)
    return tuple(unique)
