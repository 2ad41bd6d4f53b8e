"""Start and stop the processes under test: the call server, the baseline relay
and the fake OpenAI, each pinned to one core with taskset."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
HEALTH_POLL_S = 0.1
BENCH_API_KEY = "sk-bench"
# Settings of the server under test, besides its address and the fake OpenAI.
# Every benchmark client connects from 127.0.0.1, so the per-IP limit on new
# WebSockets is raised to its maximum. The engine is named instead of "auto",
# so that a change of the default cannot change what is measured.
SERVER_SETTINGS = {
    "TRANSLATION_ENGINE": "realtime",
    "WS_CONNECTS_PER_MIN": "100000",
}


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _base_environment() -> dict[str, str]:
    """Return a minimal environment, so no OPENAI_* variable of the caller leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }


async def _spawn(
    name: str,
    core: int,
    arguments: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    stdout_pipe: bool = False,
) -> asyncio.subprocess.Process:
    command = ["taskset", "--cpu-list", str(core), sys.executable, *arguments]
    logger.debug("starting %s: %s", name, " ".join(command))
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
            stderr=log,
        )


async def read_counters(service: Service) -> dict[str, float]:
    """Return the server's Prometheus counters without labels, by sample name."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{service.http_url}/metrics") as response,
    ):
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def _wait_healthy(service: Service) -> None:
    url = f"{service.http_url}/api/health"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if service.process.returncode is not None:
                raise RuntimeError(
                    f"{service.name} exited with status "
                    f"{service.process.returncode} while starting; see "
                    f"{service.log_path}"
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(HEALTH_POLL_S)
    raise TimeoutError(
        f"{service.name} did not return 200 from {url} within {START_TIMEOUT_S} s; "
        f"see {service.log_path}"
    )


async def start_server(
    *,
    core: int,
    fake_base_url: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """Start `python -m server` in `workdir`, which has no .env file.

    `extra_env` adds or overrides environment variables of the server.
    """
    port = free_port()
    env = _base_environment() | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPENAI_BASE_URL": fake_base_url,
        "OPENAI_API_KEY": BENCH_API_KEY,
        **SERVER_SETTINGS,
        **(extra_env or {}),
    }
    log_path = workdir / "server.log"
    process = await _spawn(
        "server", core, ["-m", "server"], env=env, cwd=workdir, log_path=log_path
    )
    service = Service("server", process, log_path, port)
    try:
        await _wait_healthy(service)
    except BaseException:
        await stop(service)
        raise
    return service


async def start_relay(*, core: int, workdir: Path) -> Service:
    """Start the baseline relay, `python -m bench.relay`."""
    port = free_port()
    log_path = workdir / "relay.log"
    process = await _spawn(
        "relay",
        core,
        ["-m", "bench.relay", "--port", str(port)],
        env=_base_environment(),
        cwd=workdir,
        log_path=log_path,
    )
    service = Service("relay", process, log_path, port)
    try:
        await _wait_healthy(service)
    except BaseException:
        await stop(service)
        raise
    return service


async def start_fake(*, core: int, workdir: Path) -> tuple[Service, str]:
    """Start the fake OpenAI with no added delay; return it and its base URL."""
    log_path = workdir / "fake_openai.log"
    process = await _spawn(
        "fake OpenAI",
        core,
        [
            "-m",
            "tests.fake_openai",
            "--port",
            "0",
            "--lag-ms",
            "0",
            "--pacing",
            "realtime",
            "--log-level",
            "WARNING",
        ],
        env=_base_environment(),
        cwd=REPO_ROOT,
        log_path=log_path,
        stdout_pipe=True,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            line = (await process.stdout.readline()).decode()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    marker = "base_url="
    if marker not in line:
        process.kill()
        await process.wait()
        raise RuntimeError(
            f"the fake OpenAI printed {line!r} instead of its base URL; see {log_path}"
        )
    base_url = line.split(marker, 1)[1].strip()
    port = int(base_url.rsplit(":", 1)[1].split("/", 1)[0])
    return Service("fake OpenAI", process, log_path, port), base_url


async def stop(service: Service) -> int | None:
    """Stop with SIGINT (graceful shutdown), then SIGKILL after a timeout."""
    process = service.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            logger.warning(
                "%s did not stop within %s s; killing it", service.name, STOP_TIMEOUT_S
            )
            process.kill()
            await process.wait()
    return process.returncode


def count_log_problems(log_path: Path) -> dict[str, int]:
    """Count ERROR lines and tracebacks in a service's log."""
    errors = 0
    tracebacks = 0
    if log_path.is_file():
        for line in log_path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line:
                errors += 1
            if line.startswith("Traceback"):
                tracebacks += 1
    return {"error_lines": errors, "tracebacks": tracebacks}
