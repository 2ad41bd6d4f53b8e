"""One load step: N concurrent calls against a running target, measured."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bench import progress
from bench.detect import find_marker
from bench.health import audio_health, concatenate, speech_ratio
from bench.peers import BenchCall, BenchPeer, close_call, open_call
from bench.plan import SendPlan
from bench.procstat import (
    ProcSample,
    core_busy_percent,
    cpu_percent,
    sample_cores,
    sample_process,
)
from bench.services import Service

logger = logging.getLogger(__name__)

Kind = Literal["baseline", "same", "translated"]
KINDS: tuple[Kind, ...] = ("baseline", "same", "translated")
KIND_TITLES: dict[Kind, str] = {
    "baseline": "aiortc relay (baseline)",
    "same": "server, same language",
    "translated": "server, translated",
}
LANGUAGES: dict[Kind, tuple[str, str]] = {
    "baseline": ("en", "en"),
    "same": ("en", "en"),
    "translated": ("en", "ru"),
}
FRAME_S = 0.02
CLOSE_TIMEOUT_S = 10.0
# Frames kept per receiver beyond the step's own length.
SPARE_RECORDING_S = 10.0
TOLERATED_UNDERRUN_RATE = 0.001
"""Late or missing frames per frame that still count as a usable step."""


@dataclass(frozen=True, kw_only=True)
class StepOptions:
    duration_s: float
    """Seconds of speech each peer sends."""
    tail_s: float
    """Seconds of recording after the speech stops, for the last markers."""
    settle_s: float
    """Seconds after the speech starts before CPU is measured."""
    setup_concurrency: int
    connect_timeout_s: float
    seed: int
    server_core: int
    load_core: int


@dataclass(frozen=True)
class Plans:
    """The send plans of the two peers of every call (English, Russian speech)."""

    first: SendPlan
    second: SendPlan


@dataclass
class StepResult:
    kind: Kind
    calls: int
    calls_opened: int = 0
    setup_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    markers_sent: int = 0
    markers_found: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    latency_growth_ms: list[float] = field(default_factory=list)
    """Per direction: latency of its last marker minus that of its first."""
    lowest_marker_score: float = float("nan")
    """The weakest correlation of a found marker with its template."""
    frames: int = 0
    late_frames: int = 0
    missing_frames: int = 0
    timestamp_jumps: int = 0
    frames_over: int = 0
    speech_ratios: list[float] = field(default_factory=list)
    server_cpu_percent: float = float("nan")
    server_setup_cpu_ms_per_call: float = float("nan")
    server_rss_idle_mb: float = float("nan")
    server_rss_peak_mb: float = float("nan")
    server_threads: int = 0
    server_fds: int = 0
    generator_cpu_percent: float = float("nan")
    fake_cpu_percent: float = float("nan")
    server_core_busy_percent: float = float("nan")
    load_core_busy_percent: float = float("nan")
    loop_lag_p99_ms: float = float("nan")
    loop_lag_max_ms: float = float("nan")
    saturated: str | None = None
    background_busy_percent: list[float] = field(default_factory=list)
    """Busy percent of the server's and the load's core just before the step."""
    log_problems: dict[str, int] = field(default_factory=dict)
    server_frames_sent: int = 0
    server_gap_frames: int = 0
    """Frames the server sent short because translated speech came late."""

    @property
    def underruns(self) -> int:
        return self.late_frames + self.missing_frames

    @property
    def clean(self) -> bool:
        """Whether every call opened, every marker arrived and no frame underran."""
        return self.usable and self.underruns == 0

    @property
    def usable(self) -> bool:
        """Whether every call opened and every marker arrived, with at most
        TOLERATED_UNDERRUN_RATE of the frames late or missing, below saturation."""
        return (
            self.calls_opened == self.calls
            and self.markers_found == self.markers_sent
            and self.underruns <= TOLERATED_UNDERRUN_RATE * self.frames
            and self.saturated is None
        )

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return float(np.quantile(self.latencies_ms, quantile))

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["latency_p50_ms"] = self.latency_ms(0.5)
        data["latency_p95_ms"] = self.latency_ms(0.95)
        data["latency_max_ms"] = self.latency_ms(1.0)
        data["underruns"] = self.underruns
        data["clean"] = self.clean
        data["usable"] = self.usable
        return data

    def latency_growth(self, quantile: float) -> float:
        if not self.latency_growth_ms:
            return float("nan")
        return float(np.quantile(self.latency_growth_ms, quantile))


def _make_peers(
    plans: Plans, rng: random.Random, max_frames: int
) -> tuple[BenchPeer, BenchPeer]:
    # Each peer starts at a random frame of its cycle, so markers of different
    # calls do not all fall on the same instant.
    return (
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


async def open_calls(
    target: Service,
    kind: Kind,
    count: int,
    *,
    plans: Plans,
    options: StepOptions,
    room_prefix: str,
    max_frames: int,
) -> tuple[list[BenchCall], list[str]]:
    """Open `count` calls, at most `setup_concurrency` at a time."""
    rng = random.Random(options.seed * 1_000 + count)
    limit = asyncio.Semaphore(options.setup_concurrency)
    calls: list[BenchCall] = []
    failures: list[str] = []

    async def open_one(index: int) -> None:
        async with limit:
            peers = _make_peers(plans, rng, max_frames)
            try:
                call = await open_call(
                    target.ws_url,
                    room=f"{room_prefix}-{index}",
                    languages=LANGUAGES[kind],
                    peers=peers,
                    wait_translation=kind != "baseline",
                    timeout_s=options.connect_timeout_s,
                )
            except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:
                failures.append(f"call {index}: {exc!r}")
                return
            calls.append(call)
            if len(calls) % 10 == 0 or len(calls) == count:
                progress.report(f"  {len(calls)}/{count} calls connected")

    await asyncio.gather(*(open_one(index) for index in range(count)))
    return calls, failures


async def close_calls(calls: list[BenchCall]) -> None:
    await asyncio.gather(*(close_call(call, CLOSE_TIMEOUT_S) for call in calls))


async def warm_up(
    target: Service, kind: Kind, plans: Plans, options: StepOptions
) -> None:
    """Run one short call, so lazy imports and first-use costs are paid first."""
    calls, failures = await open_calls(
        target,
        kind,
        1,
        plans=plans,
        options=options,
        room_prefix="warm-up",
        max_frames=1,
    )
    if failures:
        raise RuntimeError(f"warm-up call failed: {failures[0]}")
    for side in calls[0].sides:
        side.peer.track.play()
    await asyncio.sleep(2.0)
    await close_calls(calls)


async def run_step(
    target: Service,
    kind: Kind,
    count: int,
    *,
    plans: Plans,
    options: StepOptions,
    fake_pid: int | None,
    during_window: Callable[[], Coroutine[Any, Any, Any]] | None = None,
) -> StepResult:
    """Open `count` calls, send speech for `duration_s`, then measure everything.

    `during_window`, if given, runs while CPU is measured (a profiler).
    """
    result = StepResult(kind=kind, calls=count)
    max_frames = round(
        (options.duration_s + options.tail_s + SPARE_RECORDING_S) / FRAME_S
    )
    loop = asyncio.get_running_loop()
    idle = sample_process(target.pid)
    result.server_rss_idle_mb = idle.rss_mb

    started = loop.time()
    calls, failures = await open_calls(
        target,
        kind,
        count,
        plans=plans,
        options=options,
        room_prefix=f"{kind}-{count}",
        max_frames=max_frames,
    )
    result.setup_s = loop.time() - started
    result.calls_opened = len(calls)
    result.failures = failures
    after_setup = sample_process(target.pid)
    if calls:
        result.server_setup_cpu_ms_per_call = (
            1000 * (after_setup.cpu_s - idle.cpu_s) / len(calls)
        )
    try:
        await _send_and_measure(calls, result, target, options, fake_pid, during_window)
    finally:
        await close_calls(calls)
    _analyze(calls, result)
    return result


async def _send_and_measure(
    calls: list[BenchCall],
    result: StepResult,
    target: Service,
    options: StepOptions,
    fake_pid: int | None,
    during_window: Callable[[], Coroutine[Any, Any, Any]] | None,
) -> None:
    lag = progress.LoopLag()
    lag.start()
    for call in calls:
        for side in call.sides:
            assert side.peer.log is not None
            side.peer.log.recording = True
            side.peer.track.play()
    progress.report(f"  sending speech for {options.duration_s:.0f} s")
    await asyncio.sleep(options.settle_s)

    first = _sample_all(target.pid, fake_pid)
    hook = asyncio.create_task(during_window()) if during_window else None
    peak = first[0]
    elapsed = options.settle_s
    while elapsed < options.duration_s:
        await asyncio.sleep(min(1.0, options.duration_s - elapsed))
        elapsed += 1.0
        current = sample_process(target.pid)
        if current.rss_bytes > peak.rss_bytes:
            peak = current
        if int(elapsed) % 5 == 0:
            progress.report(
                f"  {elapsed:.0f}/{options.duration_s:.0f} s, server RSS "
                f"{current.rss_mb:.0f} MB"
            )
    last = _sample_all(target.pid, fake_pid)

    for call in calls:
        for side in call.sides:
            side.peer.track.pause()
    await asyncio.sleep(options.tail_s)
    for call in calls:
        for side in call.sides:
            assert side.peer.log is not None
            side.peer.log.recording = False
    if hook is not None:
        await hook

    lags = await lag.stop()
    if lags:
        result.loop_lag_p99_ms = 1000 * float(np.quantile(lags, 0.99))
        result.loop_lag_max_ms = 1000 * max(lags)
    server_first, generator_first, fake_first, cores_first = first
    server_last, generator_last, fake_last, cores_last = last
    result.server_cpu_percent = cpu_percent(server_first, server_last)
    result.generator_cpu_percent = cpu_percent(generator_first, generator_last)
    if fake_first is not None and fake_last is not None:
        result.fake_cpu_percent = cpu_percent(fake_first, fake_last)
    result.server_core_busy_percent = core_busy_percent(
        cores_first, cores_last, options.server_core
    )
    result.load_core_busy_percent = core_busy_percent(
        cores_first, cores_last, options.load_core
    )
    result.server_rss_peak_mb = peak.rss_mb
    result.server_threads = server_last.threads
    result.server_fds = server_last.fds


def _sample_all(
    server_pid: int, fake_pid: int | None
) -> tuple[ProcSample, ProcSample, ProcSample | None, Any]:
    return (
        sample_process(server_pid),
        sample_process(os.getpid()),
        sample_process(fake_pid) if fake_pid is not None else None,
        sample_cores(),
    )


def _analyze(calls: list[BenchCall], result: StepResult) -> None:
    """Time every marker and check the audio of every direction of every call."""
    for call in calls:
        for sender, receiver in (
            (call.first, call.second),
            (call.second, call.first),
        ):
            log = receiver.peer.log
            assert log is not None
            reception = log.reception()
            result.frames_over += log.frames_over
            plan = sender.peer.plan
            direction_ms: list[float] = []
            for marker, sent_at in sender.peer.track.marker_sends:
                result.markers_sent += 1
                found = find_marker(reception, plan.templates[marker], sent_at)
                if found is not None:
                    play_time, score = found
                    result.markers_found += 1
                    direction_ms.append(1000 * (play_time - sent_at))
                    result.lowest_marker_score = min(
                        score, np.nan_to_num(result.lowest_marker_score, nan=1.0)
                    )
            result.latencies_ms += direction_ms
            if len(direction_ms) >= 2:
                result.latency_growth_ms.append(direction_ms[-1] - direction_ms[0])
            health = audio_health(reception)
            result.frames += health.frames
            result.late_frames += health.late_frames
            result.missing_frames += health.missing_frames
            result.timestamp_jumps += health.timestamp_jumps
            sent = concatenate(sender.peer.track.sent_chunks)
            result.speech_ratios.append(speech_ratio(sent, reception.samples))
