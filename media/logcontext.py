"""Call and participant ids carried into every log line of a task."""

from __future__ import annotations

import logging
from contextvars import ContextVar

call_id_var: ContextVar[str] = ContextVar("call_id", default="-")
participant_id_var: ContextVar[str] = ContextVar("participant_id", default="-")


class ContextFilter(logging.Filter):
    """Add `context` ("call=… participant=…") to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = (
            f"call={call_id_var.get()} participant={participant_id_var.get()}"
        )
        return True
