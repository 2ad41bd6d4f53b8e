"""Progress lines on stderr while the benchmark runs, and an event-loop lag probe."""

from __future__ import annotations

import asyncio
import sys
import time

_started = time.monotonic()


def report(message: str) -> None:
    """Print one progress line, prefixed with the minutes and seconds elapsed."""
    elapsed = int(time.monotonic() - _started)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr)


class LoopLag:
    """Measure how late this event loop wakes a task that sleeps `interval_s`.

    A saturated load generator wakes late, and then its own timing, not the
    server's, shows up in the latency figures.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.lags_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-loop-lag")

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.lags_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, loop.time() - expected))
