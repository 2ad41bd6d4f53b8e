"""Fixtures shared by the suite: a clean environment, the fake OpenAI, the
server under test on a free localhost port, and a watch on its log."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from server.app import create_app, make_runner
from server.config import Settings
from server.keys import HUB
from signaling.hub import Hub
from tests.support.peer import SignalingClient
from tests.support.services import TurnServer

if TYPE_CHECKING:
    from tests.fake_openai import FakeOpenAI


@pytest.fixture(autouse=True)
def clean_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's OPENAI_* variables (and real key) out of every test."""
    for name in list(os.environ):
        if name.startswith("OPENAI_"):
            monkeypatch.delenv(name)


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def server_log() -> Iterator[list[logging.LogRecord]]:
    """Collect every log record; a test fails if one carries a traceback."""
    recorder = _Recorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.INFO)
    try:
        yield recorder.records
    finally:
        root.removeHandler(recorder)
        root.setLevel(old_level)
    tracebacks = [f"{r.name}: {r.getMessage()}" for r in recorder.records if r.exc_info]
    assert not tracebacks, f"the log has tracebacks: {tracebacks}"


@dataclass
class RunningServer:
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def hub(self) -> Hub:
        return self.app[HUB]


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    """Start the real application on 127.0.0.1 with settings from keywords.

    Keywords are environment variable names (`OPENAI_BASE_URL=...`); nothing
    is read from the process environment or a `.env` file. Without PORT the
    server takes a free port.
    """
    runners: list[web.AppRunner] = []

    async def start(**env: str) -> RunningServer:
        settings = Settings.from_env({"LOG_LEVEL": "INFO", **env})
        app = create_app(settings)
        runner = make_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", int(env.get("PORT", "0")))
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return RunningServer(app=app, port=port)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def turn_server(tmp_path: Path) -> AsyncIterator[TurnServer]:
    """A coturn server on loopback; request it before `start_server`.

    Then it stops after the call server, which frees its relays on the way.
    """
    server = TurnServer(tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[SignalingClient]]:
    """Signaling clients a test opens; each is closed at the end."""
    opened: list[SignalingClient] = []
    yield opened
    for client in opened:
        await client.close()
