"""Process and core usage read from /proc, with no help from the process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    at: float
    """time.monotonic() of the sample."""
    cpu_s: float
    """User plus system CPU time of all threads so far."""
    rss_bytes: int
    threads: int
    fds: int

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / 2**20


def sample_process(pid: int) -> ProcSample:
    """Read CPU time, resident memory, threads and open descriptors of `pid`."""
    proc = Path("/proc") / str(pid)
    stat = (proc / "stat").read_text()
    # The command name in brackets may contain spaces, so split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of proc(5), 12 and 13 after the name.
    cpu_ticks = int(fields[11]) + int(fields[12])
    rss_kb = 0
    threads = 0
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ProcSample(
        at=time.monotonic(),
        cpu_s=cpu_ticks / CLOCK_TICKS_PER_S,
        rss_bytes=rss_kb * 1024,
        threads=threads,
        fds=len(os.listdir(proc / "fd")),
    )


def cpu_percent(first: ProcSample, last: ProcSample) -> float:
    """Return CPU use between two samples, in percent of one core."""
    elapsed = last.at - first.at
    if elapsed <= 0:
        return float("nan")
    return 100.0 * (last.cpu_s - first.cpu_s) / elapsed


@dataclass(frozen=True)
class CoreSample:
    busy_ticks: dict[int, int]
    total_ticks: dict[int, int]


def sample_cores() -> CoreSample:
    """Read busy and total ticks of every core from /proc/stat."""
    busy: dict[int, int] = {}
    total: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(value) for value in values]
        # user nice system idle iowait irq softirq steal ...; idle and iowait
        # are the not-busy ones, guest time is already inside user.
        core = int(name[3:])
        total[core] = sum(ticks[:8])
        busy[core] = total[core] - ticks[3] - ticks[4]
    return CoreSample(busy_ticks=busy, total_ticks=total)


def core_busy_percent(first: CoreSample, last: CoreSample, core: int) -> float:
    """Return how busy `core` was between two samples, by every process."""
    total = last.total_ticks[core] - first.total_ticks[core]
    if total <= 0:
        return float("nan")
    return 100.0 * (last.busy_ticks[core] - first.busy_ticks[core]) / total
