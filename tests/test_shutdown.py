"""`python -m server` as a process: start-up without a key, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fake_openai import FakeOpenAI
from tests.support.peer import SignalingClient
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0

Launch = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]


async def health(url: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/api/health") as response,
        ):
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def wait_for_health(url: str, status: int) -> None:
    """Poll /api/health until it returns `status`; a child process sets no event."""
    for _ in range(int(TIMEOUT / 0.1)):
        if await health(url) == status:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"/api/health did not answer {status} in {TIMEOUT} s")


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start `python -m server` in an empty folder, so no `.env` is read."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(**env: str) -> tuple[asyncio.subprocess.Process, str]:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            cwd=tmp_path,
            env={
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": str(ROOT),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                **env,
            },
            stderr=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        await wait_for_health(url, 200)
        return process, url

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def stderr_of(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    async with asyncio.timeout(TIMEOUT):
        return (await process.stderr.read()).decode()


async def test_starts_without_key_and_says_why(launch: Launch) -> None:
    process, url = await launch()
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/status") as response,
    ):
        status = await response.json()
    assert status["engine"] == "off"
    process.send_signal(signal.SIGTERM)
    log = await stderr_of(process)
    assert await process.wait() == 0
    assert "OPENAI_API_KEY is not set: translation is off" in log
    assert "Traceback" not in log


async def test_sigterm_drains_then_ends_calls(
    launch: Launch, fake_openai: FakeOpenAI
) -> None:
    process, url = await launch(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test-secret-value",
        SHUTDOWN_GRACE_S="2",
    )
    ws_url = url.replace("http", "ws") + "/ws"
    first = await SignalingClient.connect(ws_url)
    second = await SignalingClient.connect(ws_url)
    late = await SignalingClient.connect(ws_url)
    try:
        await first.send({"type": "join", "language": "en"})
        await second.send({"type": "join", "language": "fr"})
        await first.expect("paired", TIMEOUT)
        await fake_openai.wait_for(
            lambda: sum(s.configured for s in fake_openai.sessions) == 2, TIMEOUT
        )
        process.send_signal(signal.SIGTERM)
        await wait_for_health(url, 503)
        await late.send({"type": "join", "language": "en"})
        assert (await late.expect("error", TIMEOUT))["code"] == "server_busy"
        for client in (first, second):
            left = await client.expect("partner_left", TIMEOUT)
            assert left["reason"] == "server_shutdown"
        log = await stderr_of(process)
        async with asyncio.timeout(TIMEOUT):
            assert await process.wait() == 0
        await fake_openai.wait_for(
            lambda: all(s.closed for s in fake_openai.sessions), TIMEOUT
        )
        assert "Traceback" not in log
        assert "sk-test-secret-value" not in log
    finally:
        for client in (first, second, late):
            await client.close()
