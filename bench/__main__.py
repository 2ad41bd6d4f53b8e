"""Run the benchmark: `tests/run-in-netns .venv/bin/python -m bench`."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import progress
from bench.profile import py_spy_path
from bench.report import (
    RunReport,
    machine_description,
    render,
    write_json,
    write_markdown,
    write_plot,
    write_soak_plot,
)
from bench.runner import run
from bench.steps import KINDS, Kind
from tests.support.netns import assert_loopback_only

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PLOT_NAME = "latency-cpu.png"
SOAK_PLOT_NAME = "soak-rss.png"


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: expected comma-separated integers like 1,5,10"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected N >= 1")
    return sorted(set(values))


def _kinds(text: str) -> list[Kind]:
    kinds = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: expected some of {', '.join(KINDS)}"
        )
    return [kind for kind in KINDS if kind in kinds]


def _add_step_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load steps")
    group.add_argument(
        "--calls",
        type=_positive_ints,
        default=[1, 5, 10, 25, 50],
        help="comma-separated numbers of concurrent calls (default 1,5,10,25,50)",
    )
    group.add_argument(
        "--kinds",
        type=_kinds,
        default=list(KINDS),
        help="comma-separated: baseline, same, translated (default all)",
    )
    group.add_argument(
        "--duration-s", type=float, default=20.0, help="seconds of speech per step"
    )
    group.add_argument(
        "--tail-s", type=float, default=2.0, help="seconds recorded after the speech"
    )
    group.add_argument(
        "--settle-s",
        type=float,
        default=2.0,
        help="seconds after the speech starts before CPU is measured",
    )
    group.add_argument(
        "--refine-steps",
        type=int,
        default=2,
        help=(
            "extra steps per kind that bisect between the largest usable N and "
            "the next one measured; 0 skips them"
        ),
    )


def _add_soak_and_profile_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("soak and profile")
    group.add_argument(
        "--soak-calls", type=int, default=1000, help="calls in the soak; 0 skips it"
    )
    group.add_argument(
        "--soak-lanes", type=int, default=4, help="soak calls in progress at once"
    )
    group.add_argument(
        "--soak-budget-s", type=float, default=330.0, help="time limit of the soak"
    )
    group.add_argument(
        "--soak-call-s", type=float, default=1.0, help="seconds of speech per soak call"
    )
    group.add_argument(
        "--profile-calls",
        type=int,
        default=10,
        help="calls while py-spy samples the server; 0 skips profiling",
    )
    group.add_argument(
        "--profile-s", type=float, default=15.0, help="seconds of py-spy sampling"
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("machine and output")
    group.add_argument("--server-core", type=int, default=0, help="core of the server")
    group.add_argument(
        "--load-core", type=int, default=1, help="core of the load generator and fake"
    )
    group.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment variable of the server; repeat for more",
    )
    group.add_argument("--seed", type=int, default=1, help="seed of the call phases")
    group.add_argument(
        "--max-total-s",
        type=float,
        default=2400.0,
        help="stop everything after this many seconds",
    )
    group.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "BENCHMARKS.md",
        help="Markdown file whose generated block is rewritten",
    )
    group.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder for the JSON results, the plot and the logs",
    )


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through `parser.error` on a value the run cannot use."""
    if args.duration_s <= args.settle_s + 1:
        parser.error("--duration-s must be at least --settle-s + 1")
    if args.tail_s < 0 or args.settle_s < 0:
        parser.error("--tail-s and --settle-s must be 0 or more")
    for name in ("refine_steps", "soak_calls", "profile_calls"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.soak_lanes < 1:
        parser.error("--soak-lanes must be 1 or more")
    for name in ("soak_budget_s", "soak_call_s", "profile_s", "max_total_s"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.server_core == args.load_core:
        parser.error("--server-core and --load-core must differ")
    invalid = [item for item in args.server_env if "=" not in item]
    if invalid:
        parser.error(f"--server-env {invalid[0]!r} is invalid: expected NAME=VALUE")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure latency, audio health, CPU and memory of the call server "
            "under N concurrent calls, beside a plain aiortc relay, then soak it "
            "and profile it. Run it inside tests/run-in-netns."
        ),
    )
    _add_step_options(parser)
    _add_soak_and_profile_options(parser)
    _add_run_options(parser)
    args = parser.parse_args(argv)
    _validate(parser, args)
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    return args


def check_environment(args: argparse.Namespace) -> None:
    """Exit with a clear message when the run would be invalid or unsafe."""
    try:
        assert_loopback_only()
    except AssertionError as exc:
        sys.exit(f"error: {exc}")
    if shutil.which("taskset") is None:
        sys.exit("error: taskset not found; install util-linux")
    cores = os.sched_getaffinity(0)
    for core in (args.server_core, args.load_core):
        if core not in cores:
            sys.exit(f"error: core {core} is not available; usable cores: {cores}")
    if args.profile_calls and py_spy_path() is None:
        sys.exit(
            "error: py-spy not found; run .venv/bin/pip install -e '.[bench]' or "
            "pass --profile-calls 0"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    check_environment(args)
    os.sched_setaffinity(0, {args.load_core})
    args.results_dir.mkdir(parents=True, exist_ok=True)
    command = "tests/run-in-netns .venv/bin/python -m bench"
    if argv is None and sys.argv[1:]:
        command += " " + shlex.join(sys.argv[1:])
    report = RunReport(
        command=command,
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-bench-"))
    status = 0
    try:
        asyncio.run(asyncio.wait_for(run(args, report, workdir), args.max_total_s))
    except TimeoutError:
        report.notes.append(
            f"The run hit its time limit of {args.max_total_s:.0f} s and stopped."
        )
        status = 1
    except KeyboardInterrupt:
        report.notes.append("The run was interrupted.")
        status = 130
    finally:
        report.wall_s = time.monotonic() - started
        logs = args.results_dir / "raw" / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        shutil.copytree(workdir, logs, ignore=shutil.ignore_patterns("*.wav"))
        shutil.rmtree(workdir, ignore_errors=True)
    machine = machine_description()
    write_json(args.results_dir / "latest.json", report, machine)
    if report.steps:
        write_plot(args.results_dir / PLOT_NAME, report.steps)
    if report.soak is not None and report.soak["timeline"]:
        write_soak_plot(args.results_dir / SOAK_PLOT_NAME, report.soak)
    links = [
        os.path.relpath(args.results_dir / name, args.output.parent)
        for name in (PLOT_NAME, SOAK_PLOT_NAME)
    ]
    write_markdown(args.output, render(report, machine, *links))
    progress.report(f"wrote {args.output} and {args.results_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
