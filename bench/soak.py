"""Soak: many short calls one after another, watching the server's memory,
threads and open descriptors come back to where they started.

Asyncio tasks inside the server are not counted: that would need code in the
server that exposes them, and the benchmark changes nothing in the product.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from bench import progress
from bench.peers import BenchPeer, close_call, open_call
from bench.procstat import ProcSample, sample_process
from bench.services import Service
from bench.steps import CLOSE_TIMEOUT_S, LANGUAGES, Kind, Plans, StepOptions

logger = logging.getLogger(__name__)

SETTLE_S = 5.0
# The second "after" sample waits past the server's default resume grace
# period (RESUME_GRACE_S, 30 s), so per-participant state that the server
# keeps for that long has been released.
LATE_SETTLE_S = 40.0
SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    calls: int
    lanes: int
    """Calls in progress at once; each lane runs its calls one after another."""
    budget_s: float
    call_s: float
    """Seconds of speech in each call."""


@dataclass
class SoakResult:
    calls_planned: int
    lanes: int
    budget_s: float
    call_s: float
    calls_done: int = 0
    failures: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    """SETTLE_S after the last call."""
    after_late: dict[str, float] = field(default_factory=dict)
    """LATE_SETTLE_S after the last call."""
    timeline: list[tuple[float, int, float, int, int]] = field(default_factory=list)
    """(seconds since start, calls done, RSS MB, threads, fds), once a second."""
    status_after: dict[str, Any] = field(default_factory=dict)
    rss_slope_mb_per_100_calls: float = float("nan")
    """Growth of RSS over the second half of the soak, by least squares."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(sample: ProcSample) -> dict[str, float]:
    return {"rss_mb": sample.rss_mb, "threads": sample.threads, "fds": sample.fds}


async def _server_status(target: Service) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{target.http_url}/api/status") as response,
    ):
        status: dict[str, Any] = await response.json()
    return {key: status.get(key) for key in ("connections", "waiting", "calls")}


async def run_soak(
    target: Service, *, plans: Plans, step_options: StepOptions, options: SoakOptions
) -> SoakResult:
    """Run up to `options.calls` short calls within `options.budget_s`.

    Calls alternate between translated and same-language. The server should
    be freshly started and warmed up by one call.
    """
    result = SoakResult(
        calls_planned=options.calls,
        lanes=options.lanes,
        budget_s=options.budget_s,
        call_s=options.call_s,
    )
    loop = asyncio.get_running_loop()
    await asyncio.sleep(SETTLE_S)
    before = sample_process(target.pid)
    result.before = _describe(before)
    peak = before
    started = loop.time()
    deadline = started + options.budget_s
    next_index = 0
    rng = random.Random(step_options.seed)
    max_frames = round(options.call_s / 0.02) + 50

    async def lane() -> None:
        nonlocal next_index
        while next_index < options.calls and loop.time() < deadline:
            index = next_index
            next_index += 1
            kind: Kind = "translated" if index % 2 == 0 else "same"
            peers = (
                BenchPeer(
                    plans.first,
                    first_frame=rng.randrange(plans.first.frames),
                    max_frames=max_frames,
                ),
                BenchPeer(
                    plans.second,
                    first_frame=rng.randrange(plans.second.frames),
                    max_frames=max_frames,
                ),
            )
            try:
                call = await open_call(
                    target.ws_url,
                    room=f"soak-{index}",
                    languages=LANGUAGES[kind],
                    peers=peers,
                    wait_translation=True,
                    timeout_s=step_options.connect_timeout_s,
                )
            except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:
                result.failures.append(f"call {index}: {exc!r}")
                continue
            for side in call.sides:
                side.peer.track.play()
            await asyncio.sleep(options.call_s)
            await close_call(call, CLOSE_TIMEOUT_S)
            result.calls_done += 1
            if result.calls_done % 50 == 0:
                rss = sample_process(target.pid).rss_mb
                progress.report(
                    f"  soak: {result.calls_done} calls, server RSS {rss:.1f} MB"
                )

    async def watch() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            current = sample_process(target.pid)
            if current.rss_bytes > peak.rss_bytes:
                peak = current
            result.timeline.append(
                (
                    current.at - started,
                    result.calls_done,
                    current.rss_mb,
                    current.threads,
                    current.fds,
                )
            )

    watcher = asyncio.create_task(watch())
    try:
        # A lane may be mid-call at the deadline; it ends that call first.
        async with asyncio.timeout(options.budget_s + 60):
            await asyncio.gather(*(lane() for _ in range(options.lanes)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    result.elapsed_s = loop.time() - started
    await asyncio.sleep(SETTLE_S)
    result.after = _describe(sample_process(target.pid))
    result.status_after = await _server_status(target)
    progress.report(f"  waiting {LATE_SETTLE_S - SETTLE_S:.0f} s more for late state")
    await asyncio.sleep(LATE_SETTLE_S - SETTLE_S)
    result.after_late = _describe(sample_process(target.pid))
    result.peak = _describe(peak)
    result.rss_slope_mb_per_100_calls = _second_half_slope(result.timeline)
    return result


def _second_half_slope(timeline: list[tuple[float, int, float, int, int]]) -> float:
    half = [(calls, rss) for _, calls, rss, _, _ in timeline[len(timeline) // 2 :]]
    if len(half) < 3 or half[-1][0] == half[0][0]:
        return float("nan")
    calls = np.array([c for c, _ in half], dtype=np.float64)
    rss = np.array([r for _, r in half], dtype=np.float64)
    slope = float(np.polyfit(calls, rss, 1)[0])
    return 100.0 * slope
