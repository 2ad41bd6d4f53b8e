"""Logging set-up for the server process: text or JSON, with repeats limited."""

from __future__ import annotations

import json
import logging
import time

from media.logcontext import ContextFilter

# Each distinct warning or error (same logger and message template) is logged
# at most this many times per window. The rest are counted, and the count is
# reported with the next one that gets through.
REPEATS_PER_WINDOW = 5
REPEAT_WINDOW_S = 60.0


class RepeatFilter(logging.Filter):
    """Drop repeats of the same warning or error beyond a rate."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        start, count, suppressed = self._seen.get(key, (now, 0, 0))
        if now - start >= REPEAT_WINDOW_S:
            start, count = now, 0
        if count >= REPEATS_PER_WINDOW:
            self._seen[key] = (start, count, suppressed + 1)
            return False
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} similar messages suppressed)"
        self._seen[key] = (start, count + 1, 0)
        if len(self._seen) > 10_000:
            self._seen.clear()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "context": getattr(record, "context", ""),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Install the root handler with call and participant ids on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.addFilter(RepeatFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(context)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aioice and aiortc log every candidate pair and packet at INFO and DEBUG.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
