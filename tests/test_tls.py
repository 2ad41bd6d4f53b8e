"""HTTPS and wss:// from the real `python -m server` process.

The test certificate comes from the openssl command line, not from the
server's own code, and clients trust exactly that certificate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from server.config import SettingsError
from server.tls import server_context
from tests.support.certs import write_certificate
from tests.support.services import free_port, run_server_to_exit

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 20.0
TIMEOUT = 5.0

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is not installed"
)


def make_certificate(folder: Path, name: str = "test") -> tuple[Path, Path]:
    """Write a certificate for 127.0.0.1 and its key with the openssl tool."""
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def server_env(**settings: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        **settings,
    }


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    log_file: Path

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


StartProcess = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def start_process(tmp_path: Path) -> AsyncIterator[StartProcess]:
    """Start `python -m server` with the given arguments and settings."""
    started: list[ServerProcess] = []

    async def start(*args: str, **settings: str) -> ServerProcess:
        port = free_port()
        log_file = tmp_path / f"server-{len(started)}.log"
        with log_file.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server",
                *args,
                cwd=tmp_path,
                env=server_env(PORT=str(port), **settings),
                stdout=log,
                stderr=log,
            )
        server = ServerProcess(process, port, log_file)
        started.append(server)
        async with asyncio.timeout(START_TIMEOUT_S):
            while f"listening on https://127.0.0.1:{port}" not in server.log:
                assert process.returncode is None, server.log
                await asyncio.sleep(0.05)
        return server

    yield start
    for server in started:
        if server.process.returncode is None:
            server.process.terminate()
            await server.process.wait()


async def test_https_and_wss_with_a_certificate(
    tmp_path: Path, start_process: StartProcess
) -> None:
    cert, key = make_certificate(tmp_path)
    server = await start_process(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    trust = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/health", ssl=trust) as response:
            assert response.status == 200
        async with session.get(f"{base}/", ssl=trust) as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
        async with session.ws_connect(
            f"wss://127.0.0.1:{server.port}/ws", ssl=trust
        ) as websocket:
            await websocket.send_str(json.dumps({"type": "join", "language": "en"}))
            async with asyncio.timeout(TIMEOUT):
                joined = json.loads(await websocket.receive_str())
            assert joined["type"] == "joined"
        # A client that trusts only the system's authorities refuses it.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{base}/api/health")
        # Plain HTTP on the TLS port gets no page.
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{server.port}/api/health")


async def test_self_signed_certificate_is_announced(
    start_process: StartProcess,
) -> None:
    server = await start_process("--self-signed")
    match = re.search(r"SHA-256 fingerprint: ([0-9A-F:]{95})", server.log)
    assert match is not None, server.log
    assert "self-signed certificate made at start-up" in server.log

    pem = await asyncio.to_thread(
        ssl.get_server_certificate, ("127.0.0.1", server.port)
    )
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    assert ":".join(re.findall("..", digest)) == match.group(1)
    # Trusting that one certificate is enough: it names 127.0.0.1.
    trust = ssl.create_default_context(cadata=pem)
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{server.port}/api/health"
        async with session.get(url, ssl=trust) as response:
            assert response.status == 200


async def served_fingerprint(port: int) -> str:
    """Return the SHA-256 of the certificate that a new connection gets."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def file_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return hashlib.sha256(der).hexdigest()


async def wait_for_log(server: ServerProcess, text: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if text in server.log:
                return
            await asyncio.sleep(0.05)


async def test_sighup_reloads_renewed_certificate(
    start_process: StartProcess, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    server = await start_process(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    assert await served_fingerprint(server.port) == file_fingerprint(cert)

    # A renewal writes a new pair over the same paths.
    renewed_cert, renewed_key = make_certificate(tmp_path, "renewed")
    shutil.copyfile(renewed_cert, cert)
    shutil.copyfile(renewed_key, key)
    assert await served_fingerprint(server.port) != file_fingerprint(cert)
    server.process.send_signal(signal.SIGHUP)
    await wait_for_log(server, "TLS certificate reloaded")
    assert await served_fingerprint(server.port) == file_fingerprint(renewed_cert)

    # A key that does not match is rejected, and the served one stays.
    other_cert, _ = make_certificate(tmp_path, "other")
    shutil.copyfile(other_cert, cert)
    server.process.send_signal(signal.SIGHUP)
    await wait_for_log(server, "TLS certificate not reloaded")
    assert "is not the private key of" in server.log
    assert server.process.returncode is None
    assert await served_fingerprint(server.port) == file_fingerprint(renewed_cert)


def run_server(tmp_path: Path, *args: str, **settings: str) -> tuple[int, str]:
    """Run `python -m server` to its exit; return the code and its stderr."""
    result = run_server_to_exit(
        *args, cwd=tmp_path, env=server_env(PORT=str(free_port()), **settings)
    )
    return result.returncode, result.stderr


def test_bad_tls_files_stop_start_up(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    other_cert, other_key = make_certificate(tmp_path, "other")
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = [
        (
            {"TLS_CERT_FILE": str(missing), "TLS_KEY_FILE": str(key)},
            f"TLS_CERT_FILE='{missing}' cannot be read: No such file or directory",
        ),
        (
            {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(tmp_path)},
            f"TLS_KEY_FILE='{tmp_path}' is invalid: not a regular file",
        ),
        (
            {"TLS_CERT_FILE": str(cert)},
            "TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither",
        ),
        (
            {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(other_key)},
            f"TLS_KEY_FILE='{other_key}' is not the private key of "
            f"TLS_CERT_FILE='{cert}'",
        ),
        (
            {"TLS_CERT_FILE": str(not_pem), "TLS_KEY_FILE": str(key)},
            f"TLS_CERT_FILE='{not_pem}' contains no PEM certificate",
        ),
        (
            {"TLS_CERT_FILE": str(other_cert), "TLS_KEY_FILE": str(not_pem)},
            f"TLS_KEY_FILE='{not_pem}' contains no PEM private key",
        ),
    ]
    for settings, message in cases:
        code, stderr = run_server(tmp_path, **settings)
        assert code == 2, stderr
        assert stderr.strip().splitlines() == [f"error: {message}"], settings

    code, stderr = run_server(
        tmp_path, "--self-signed", TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key)
    )
    assert code == 2
    assert "exclude each other" in stderr


def test_encrypted_key_stops_start_up(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    encrypted = tmp_path / "encrypted-key.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x",
         "-out", str(encrypted)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    code, stderr = run_server(
        tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(encrypted)
    )
    assert code == 2
    assert stderr.startswith(
        f"error: TLS_KEY_FILE='{encrypted}' is encrypted with a passphrase"
    )
    assert len(stderr.strip().splitlines()) == 1


async def test_stalled_handshake_closed_after_request_timeout(
    tmp_path: Path, start_process: StartProcess
) -> None:
    cert, key = make_certificate(tmp_path)
    server = await start_process(
        TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key), REQUEST_TIMEOUT_S="2"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # Half of a TLS record header, then nothing: the handshake never ends.
    writer.write(b"\x16\x03")
    await writer.drain()
    # asyncio's own handshake timeout is 60 s; the server sets 2 s.
    async with asyncio.timeout(20):
        assert await reader.read() == b""
    writer.close()


async def test_expired_certificate_is_warned_about(
    tmp_path: Path, start_process: StartProcess
) -> None:
    cert, key = write_certificate(
        tmp_path,
        common_name="127.0.0.1",
        prefix="expired",
        valid_from_days=-30,
        valid_until_days=-1,
    )
    server = await start_process(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    assert f"TLS_CERT_FILE='{cert}' expired on " in server.log
    assert "browsers will refuse it" in server.log


def test_server_context_file_gone_is_settings_error(tmp_path: Path) -> None:
    """A file removed after the settings were read still gives one clear line."""
    missing = tmp_path / "gone.pem"
    with pytest.raises(SettingsError, match="cannot be read: No such file"):
        server_context(missing, missing)
