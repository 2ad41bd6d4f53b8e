"""Logging set-up for the server process."""

from __future__ import annotations

import logging

from media.logcontext import ContextFilter


def configure_logging(level: str) -> None:
    """Install the root handler with call and participant ids on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
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
