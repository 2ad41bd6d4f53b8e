"""The phases of one benchmark run: sweep, refinement, profiles and soak."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import progress, services
from bench.calibrate import measure_fake_hold
from bench.costs import measure_frame_costs
from bench.plan import build_plan
from bench.procstat import core_busy_percent, sample_cores
from bench.profile import format_summary, record, summarize
from bench.report import SATURATED_PERCENT, RunReport
from bench.soak import SoakOptions, run_soak
from bench.steps import (
    KIND_TITLES,
    Kind,
    Plans,
    StepOptions,
    StepResult,
    run_step,
    warm_up,
)
from tests.support.speech import speech_sample

FAKE_CALIBRATION_MARKERS = 6
FRAMES_SENT = "callbridge_audio_frames_sent_total"
GAP_FRAMES = "callbridge_translated_gap_frames_total"
# Before each step, wait (up to QUIET_WAIT_S) until both cores are less busy
# than this, so other work on a shared machine disturbs fewer steps.
QUIET_BUSY_PERCENT = 30.0
QUIET_WAIT_S = 60.0
QUIET_PROBE_S = 2.0


@dataclass(frozen=True)
class Bench:
    """The state that every phase of a run shares: its arguments, speech
    plans, step options, the fake OpenAI and the run's folder."""

    args: argparse.Namespace
    plans: Plans
    options: StepOptions
    fake: services.Service
    fake_url: str
    workdir: Path


async def start_target(
    kind: Kind, args: argparse.Namespace, fake_url: str, workdir: Path
) -> services.Service:
    """Start the relay for the baseline, else the server, in a new `workdir`."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    if kind == "baseline":
        return await services.start_relay(core=args.server_core, workdir=workdir)
    return await services.start_server(
        core=args.server_core,
        fake_base_url=fake_url,
        workdir=workdir,
        extra_env=args.server_env,
    )


def saturation(step: StepResult) -> str | None:
    """Name what saturated in a step, or None."""
    reasons = []
    if step.server_cpu_percent >= SATURATED_PERCENT:
        reasons.append(f"server CPU {step.server_cpu_percent:.0f} % of its core")
    if step.generator_cpu_percent >= SATURATED_PERCENT:
        reasons.append(
            f"load generator CPU {step.generator_cpu_percent:.0f} % of its core"
        )
    if step.calls_opened < step.calls:
        reasons.append(f"only {step.calls_opened} of {step.calls} calls opened")
    return "; ".join(reasons) or None


async def wait_for_quiet_cores(args: argparse.Namespace) -> list[float]:
    """Wait until other processes leave both cores mostly idle, or time out.

    Returns the last busy percentages of the server's and the load's core.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIET_WAIT_S
    reported = False
    while True:
        first = sample_cores()
        await asyncio.sleep(QUIET_PROBE_S)
        last = sample_cores()
        busy = [
            core_busy_percent(first, last, core)
            for core in (args.server_core, args.load_core)
        ]
        if max(busy) < QUIET_BUSY_PERCENT or loop.time() >= deadline:
            if max(busy) >= QUIET_BUSY_PERCENT:
                progress.report(
                    f"  cores still busy after {QUIET_WAIT_S:.0f} s "
                    f"({busy[0]:.0f} % / {busy[1]:.0f} %); measuring anyway"
                )
            return busy
        if not reported:
            progress.report(
                f"  waiting for other work to leave the cores ({busy[0]:.0f} % / "
                f"{busy[1]:.0f} % busy)"
            )
            reported = True


async def measured_step(
    bench: Bench,
    kind: Kind,
    calls: int,
    *,
    workdir: Path,
    options: StepOptions | None = None,
    during_window: Callable[[services.Service], Awaitable[Any]] | None = None,
) -> StepResult:
    """Run one step against a fresh target in `workdir`, with bench.options
    unless `options` is given."""
    options = options or bench.options
    background = await wait_for_quiet_cores(bench.args)
    target = await start_target(kind, bench.args, bench.fake_url, workdir)
    try:
        await warm_up(target, kind, bench.plans, options)
        await asyncio.sleep(1.0)

        async def hook() -> Any:
            assert during_window is not None
            return await during_window(target)

        step = await run_step(
            target,
            kind,
            calls,
            plans=bench.plans,
            options=options,
            fake_pid=bench.fake.pid if kind != "baseline" else None,
            during_window=hook if during_window else None,
        )
        if kind != "baseline":
            counters = await services.read_counters(target)
            step.server_frames_sent = int(counters.get(FRAMES_SENT, 0))
            step.server_gap_frames = int(counters.get(GAP_FRAMES, 0))
    finally:
        status = await services.stop(target)
        if status not in (0, None):
            progress.report(f"  {target.name} exited with status {status}")
    step.log_problems = services.count_log_problems(target.log_path)
    step.background_busy_percent = background
    return step


def describe(step: StepResult) -> str:
    return (
        f"  done: latency p50 {step.latency_ms(0.5):.0f} ms, p95 "
        f"{step.latency_ms(0.95):.0f} ms, markers {step.markers_found}/"
        f"{step.markers_sent}, underruns {step.underruns}, server CPU "
        f"{step.server_cpu_percent:.0f} %, translated gap frames "
        f"{step.server_gap_frames}/{step.server_frames_sent}, "
        f"RSS {step.server_rss_idle_mb:.0f} → "
        f"{step.server_rss_peak_mb:.0f} MB, generator CPU "
        f"{step.generator_cpu_percent:.0f} %"
    )


def note_disturbances(report: RunReport, step: StepResult) -> None:
    """Add a note when other work or server errors may have skewed a step."""
    title = f"{KIND_TITLES[step.kind]}, {step.calls} calls"
    if step.background_busy_percent and (
        max(step.background_busy_percent) >= QUIET_BUSY_PERCENT
    ):
        busy = " / ".join(f"{value:.0f} %" for value in step.background_busy_percent)
        report.notes.append(
            f"{title}: started while other processes kept the cores busy ({busy})."
        )
    problems = {name: count for name, count in step.log_problems.items() if count}
    if problems:
        report.notes.append(f"{title}: the target's log has {problems}.")


async def run_and_record(
    bench: Bench, report: RunReport, kind: Kind, calls: int
) -> StepResult:
    """Run one step, add it to the report and mark it if something saturated."""
    progress.report(f"{KIND_TITLES[kind]}, {calls} calls")
    step = await measured_step(
        bench, kind, calls, workdir=bench.workdir / f"{kind}-{calls}"
    )
    step.saturated = saturation(step)
    report.steps.append(step)
    progress.report(describe(step))
    for failure in step.failures[:3]:
        progress.report(f"  failed: {failure}")
    note_disturbances(report, step)
    return step


async def sweep(bench: Bench, report: RunReport) -> None:
    for calls in bench.args.calls:
        for kind in bench.args.kinds:
            if kind in report.stopped:
                continue
            step = await run_and_record(bench, report, kind, calls)
            if step.saturated is not None:
                report.stopped[kind] = f"saturated at {calls} calls ({step.saturated})"
                progress.report(f"  stopping this kind: {step.saturated}")


async def refine(bench: Bench, report: RunReport) -> None:
    """Bisect, per kind, between the largest usable N and the next one measured."""
    for kind in bench.args.kinds:
        for _ in range(bench.args.refine_steps):
            steps = [step for step in report.steps if step.kind == kind]
            usable = [step.calls for step in steps if step.usable]
            if not usable:
                break
            low = max(usable)
            above = [step.calls for step in steps if step.calls > low]
            if not above:
                break
            middle = (low + min(above)) // 2
            if middle == low:
                break
            await run_and_record(bench, report, kind, middle)


async def profile_server(bench: Bench, report: RunReport) -> None:
    args = bench.args
    raw_dir = args.results_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        output = raw_dir / f"profile-{kind}-{args.profile_calls}.txt"
        progress.report(
            f"profiling {KIND_TITLES[kind]}, {args.profile_calls} calls, "
            f"{args.profile_s:.0f} s"
        )

        async def sample(target: services.Service, output: Path = output) -> None:
            await record(target.pid, args.profile_s, output)

        step = await measured_step(
            bench,
            kind,
            args.profile_calls,
            workdir=bench.workdir / f"profile-{kind}",
            options=replace(
                bench.options,
                duration_s=max(bench.options.duration_s, args.profile_s + 5),
            ),
            during_window=sample,
        )
        title = (
            f"{KIND_TITLES[kind]}, {args.profile_calls} calls (server CPU "
            f"{step.server_cpu_percent:.0f} % while sampled)"
        )
        report.profiles.append(format_summary(title, summarize(output)))


async def soak(bench: Bench, report: RunReport) -> None:
    args = bench.args
    folder = bench.workdir / "soak"
    progress.report(
        f"soak: up to {args.soak_calls} calls within {args.soak_budget_s:.0f} s"
    )
    await wait_for_quiet_cores(args)
    target = await start_target("translated", args, bench.fake_url, folder)
    try:
        await warm_up(target, "translated", bench.plans, bench.options)
        result = await run_soak(
            target,
            plans=bench.plans,
            step_options=bench.options,
            options=SoakOptions(
                calls=args.soak_calls,
                lanes=args.soak_lanes,
                budget_s=args.soak_budget_s,
                call_s=args.soak_call_s,
            ),
        )
    finally:
        await services.stop(target)
    report.soak = result.to_json()
    report.soak["log_problems"] = services.count_log_problems(folder / "server.log")
    progress.report(
        f"  soak done: {result.calls_done} calls, RSS {result.before['rss_mb']:.1f} "
        f"→ {result.after['rss_mb']:.1f} MB, fds {result.before['fds']:.0f} → "
        f"{result.after['fds']:.0f}, threads {result.before['threads']:.0f} → "
        f"{result.after['threads']:.0f}"
    )


async def run(args: argparse.Namespace, report: RunReport, workdir: Path) -> None:
    options = StepOptions(
        duration_s=args.duration_s,
        tail_s=args.tail_s,
        settle_s=args.settle_s,
        setup_concurrency=5,
        connect_timeout_s=30.0,
        seed=args.seed,
        server_core=args.server_core,
        load_core=args.load_core,
    )
    report.settings = {
        key: value for key, value in options.__dict__.items() if key != "seed"
    } | {
        "calls": args.calls,
        "kinds": args.kinds,
        "seed": args.seed,
        "refine_steps": args.refine_steps,
        "server_settings": services.SERVER_SETTINGS | args.server_env,
    }
    plans = Plans(
        first=build_plan(speech_sample("en").samples),
        second=build_plan(speech_sample("ru").samples),
    )
    progress.report("timing each media step on its own")
    report.frame_costs = measure_frame_costs(plans.first)
    fake, fake_url = await services.start_fake(core=args.load_core, workdir=workdir)
    try:
        progress.report("measuring the fake OpenAI's hold of a marker")
        holds = await measure_fake_hold(fake_url, FAKE_CALIBRATION_MARKERS)
        report.fake_hold_ms = [1000 * hold for hold in holds]
        progress.report(
            f"  fake hold: median {report.fake_hold_median_ms:.1f} ms "
            f"over {len(holds)} markers"
        )
        bench = Bench(args, plans, options, fake, fake_url, workdir)
        await sweep(bench, report)
        await refine(bench, report)
        if args.profile_calls:
            await profile_server(bench, report)
        if args.soak_calls:
            await soak(bench, report)
    finally:
        await services.stop(fake)
