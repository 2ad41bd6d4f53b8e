"""Sample the server with py-spy while it carries calls, and summarize where
its CPU time goes."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 100
TOP = 15
# "function (path/to/file.py:123)", as py-spy writes each frame in raw format.
FRAME_PATTERN = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
# Innermost functions that wait: in this VM py-spy reports such threads as
# active, so the summary leaves them out itself.
WAITING_FUNCTIONS = frozenset(
    {
        "EpollSelector.select",
        "_worker",
        "Condition.wait",
        "Event.wait",
        "Thread._wait_for_tstate_lock",
    }
)
AREAS: tuple[tuple[str, str], ...] = (
    ("/media/", "product: media/"),
    ("/signaling/", "product: signaling/"),
    ("/server/", "product: server/"),
    ("/bench/", "benchmark relay"),
    ("aiortc/codecs/", "aiortc: Opus codec calls"),
    ("aiortc/", "aiortc: RTP, SRTP, DTLS, jitter buffer"),
    ("aioice/", "aioice: ICE"),
    ("pylibsrtp/", "SRTP (pylibsrtp)"),
    ("av/", "PyAV"),
    ("prometheus_client/", "prometheus-client"),
    ("openai/", "openai SDK"),
    ("websockets/", "websockets"),
    ("aiohttp/", "aiohttp"),
    ("numpy/", "numpy"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("concurrent/futures/", "thread pool"),
    ("threading.py", "threads"),
)


def py_spy_path() -> str | None:
    """Return the py-spy next to this interpreter, or one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


async def record(pid: int, duration_s: float, output: Path) -> None:
    """Run `py-spy record` on `pid` for `duration_s` into a raw stack file.

    --nonblocking samples without pausing the process, so the profile does not
    slow the calls it observes; a sample may then show a torn stack, rarely.
    """
    executable = py_spy_path()
    if executable is None:
        raise RuntimeError(
            "py-spy is not installed; run .venv/bin/pip install -e '.[bench]'"
        )
    process = await asyncio.create_subprocess_exec(
        executable,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(duration_s)),
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(duration_s + 30):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            f"py-spy exited with status {process.returncode}: "
            f"{stderr.decode(errors='replace').strip()[-500:]}"
        )


@dataclass
class ProfileSummary:
    samples: int = 0
    """Samples of threads that were running, not waiting."""
    waiting_samples: int = 0
    areas: Counter[str] = field(default_factory=Counter)
    """Samples by the area of the innermost frame."""
    self_functions: Counter[str] = field(default_factory=Counter)
    inclusive_functions: Counter[str] = field(default_factory=Counter)

    def share(self, count: int) -> float:
        return 100.0 * count / self.samples if self.samples else 0.0


def _area(path: str) -> str:
    # py-spy prints paths relative to the sys.path entry they came from
    # ("media/outbound.py"), so a leading slash makes "/media/" match them.
    rooted = "/" + path
    for fragment, area in AREAS:
        if fragment in rooted:
            return area
    return "other"


def _short(function: str, path: str) -> str:
    for anchor in ("site-packages/", "/lib/python3"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    else:
        path = path.rsplit("/main/", 1)[-1]
    return f"{function} ({path})"


def summarize(raw: Path) -> ProfileSummary:
    """Read py-spy raw output: one `frame;frame;... count` line per stack."""
    summary = ProfileSummary()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames: list[tuple[str, str]] = []
        for text in stack.split(";"):
            match = FRAME_PATTERN.match(text)
            if match is None:
                frames.append((text, ""))
            else:
                frames.append((match["function"], match["file"]))
        function, path = frames[-1]
        if function in WAITING_FUNCTIONS:
            summary.waiting_samples += count
            continue
        summary.samples += count
        summary.areas[_area(path)] += count
        summary.self_functions[_short(function, path)] += count
        for name in {_short(function, path) for function, path in frames}:
            summary.inclusive_functions[name] += count
    return summary


def format_summary(title: str, summary: ProfileSummary) -> str:
    """Render a summary as Markdown: areas, then the top functions."""
    lines = [
        f"#### {title}",
        "",
        f"{summary.samples} samples at {SAMPLE_RATE_HZ} Hz of running threads; "
        f"{summary.waiting_samples} samples of threads waiting in epoll, a lock "
        "or the thread pool's queue are left out.",
        "",
        "| area of the innermost frame | share |",
        "| --- | ---: |",
    ]
    for area, count in summary.areas.most_common():
        lines.append(f"| {area} | {summary.share(count):.1f} % |")
    lines += ["", "| innermost function (self time) | share |", "| --- | ---: |"]
    for name, count in summary.self_functions.most_common(TOP):
        lines.append(f"| `{name}` | {summary.share(count):.1f} % |")
    lines += [
        "",
        "| function on the stack (inclusive time) | share |",
        "| --- | ---: |",
    ]
    for name, count in summary.inclusive_functions.most_common(TOP + 10):
        lines.append(f"| `{name}` | {summary.share(count):.1f} % |")
    return "\n".join(lines) + "\n"
