"""Local services for tests: free ports and a real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import socket

import redis.asyncio as redis
from redis.exceptions import RedisError

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A throwaway `redis-server` on 127.0.0.1 with persistence turned off."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed; .ci/run installs it with apt-get"
            )
        self._executable = executable
        self.port = free_port()
        self._process: asyncio.subprocess.Process | None = None

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

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._process.wait()
            self._process = None
