"""Local services for tests: free ports, real redis-server and coturn
processes, and runs of the call server to its exit."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import redis.asyncio as redis
from aioice import stun, turn
from redis.exceptions import RedisError

START_TIMEOUT_S = 10.0
FREE_PORT_LOW = 20000
START_ATTEMPTS = 2
FREE_PORT_ATTEMPTS = 200
ROOT = Path(__file__).resolve().parents[2]


def run_server_to_exit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m server` until it exits, with PYTHONPATH and `env` only."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    """Return a port that is free on 127.0.0.1 for both UDP and TCP, below
    the kernel's ephemeral range, for a server that a test starts later.

    Every socket bound to port 0 gets an ephemeral port: servers under test,
    aioice's candidates and outgoing connections. So none of them can take
    this port before the server binds it. That matters most for coturn,
    which retries a taken port without end instead of exiting.
    """
    try:
        low_text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        ephemeral_start = int(low_text.split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    generator = random.Random()
    for _ in range(FREE_PORT_ATTEMPTS):
        port = generator.randrange(FREE_PORT_LOW, ephemeral_start)
        if _bindable(port):
            return port
    raise RuntimeError(
        f"no free port between {FREE_PORT_LOW} and {ephemeral_start} "
        f"after {FREE_PORT_ATTEMPTS} tries"
    )


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class _Process:
    """A server process that a test starts and stops."""

    _process: asyncio.subprocess.Process | None = None

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._process.wait()
            self._process = None


class RedisServer(_Process):
    """A throwaway `redis-server` on 127.0.0.1 with persistence turned off."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed; .ci/run installs it with apt-get"
            )
        self._executable = executable
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            self._executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    try:
                        await client.ping()
                        return
                    except (RedisError, OSError):
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()


class TurnServer(_Process):
    """A throwaway coturn `turnserver` on 127.0.0.1 with time-limited users.

    It accepts credentials signed with `secret` (coturn's REST-API scheme),
    relays from 127.0.0.1 and allows loopback peers, which coturn refuses by
    default, because every peer of a test lives on loopback.
    """

    secret = "turn-test-secret-0123456789"

    def __init__(
        self, folder: Path, *, certificate: tuple[Path, Path] | None = None
    ) -> None:
        """Listen for UDP and TCP on `port`, and for TLS on `tls_port` when
        `certificate` (certificate file, key file) is given."""
        executable = shutil.which("turnserver")
        if executable is None:
            raise RuntimeError(
                "turnserver is not installed; .ci/run installs coturn with apt-get"
            )
        self._executable = executable
        self._folder = folder
        self.certificate = certificate
        self.port = 0
        self.tls_port: int | None = None
        self._choose_ports()
        self.log_file = folder / "turnserver.log"

    def _choose_ports(self) -> None:
        # While a port is taken, coturn retries the bind without end
        # ("Trying to bind ... again" in its log): see free_port.
        self.port = free_port()
        self.tls_port = free_port() if self.certificate else None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    @property
    def tcp_url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=tcp"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError(
                "no turns: URL: this TURN server was started without a certificate"
            )
        return f"turns:127.0.0.1:{self.tls_port}?transport=tcp"

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self) -> None:
        """Start coturn and wait for its response to a STUN binding request.

        A start without a response within START_TIMEOUT_S is tried once more
        on new ports. After that, RuntimeError carries the end of its log.
        """
        log = ""
        for attempt in range(START_ATTEMPTS):
            if attempt:
                self._choose_ports()
            await self._launch()
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    while not await self._answers_binding():
                        process = self._process
                        if process is None or process.returncode is not None:
                            raise RuntimeError(f"turnserver exited:\n{self.log()}")
                        await asyncio.sleep(0.05)
                return
            except TimeoutError:
                log = self.log()
                await self.stop()
        raise RuntimeError(
            f"turnserver start timed out {START_ATTEMPTS} times: no response on "
            f"127.0.0.1:{self.port} within {START_TIMEOUT_S:.0f} s; end of its log:\n"
            f"{log[-2000:]}"
        )

    async def _launch(self) -> None:
        if self.certificate is None:
            tls = ["--no-tls"]
        else:
            cert_file, key_file = self.certificate
            tls = [
                f"--tls-listening-port={self.tls_port}",
                f"--cert={cert_file}",
                f"--pkey={key_file}",
            ]
        self._process = await asyncio.create_subprocess_exec(
            self._executable,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            "--realm=callbridge.test",
            "--allow-loopback-peers",
            "--fingerprint",
            "--no-cli",
            *tls,
            "--no-dtls",
            f"--log-file={self.log_file}",
            "--simple-log",
            "--no-stdout-log",
            # Log each allocation with its user name, for the tests to check.
            "--verbose",
            f"--pidfile={self._folder / 'turnserver.pid'}",
            f"--userdb={self._folder / 'turndb'}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def allocate(self, username: str, password: str) -> None:
        """Allocate a relay with these credentials, then free the socket.

        Raises aioice's `stun.TransactionFailed` (401) when coturn rejects them.
        """
        transport, _ = await asyncio.wait_for(
            turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=("127.0.0.1", self.port),
                username=username,
                password=password,
            ),
            START_TIMEOUT_S,
        )
        transport.close()

    async def _answers_binding(self) -> bool:
        """Send one STUN binding request and return whether a response came."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setblocking(False)
            probe.connect(("127.0.0.1", self.port))
            request = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.REQUEST,
            )
            try:
                await loop.sock_sendall(probe, bytes(request))
                async with asyncio.timeout(0.2):
                    reply = await loop.sock_recv(probe, 2048)
            except (OSError, TimeoutError):
                return False
        return stun.parse_message(reply).transaction_id == request.transaction_id
