"""Requests to the OpenAI API: failure classes, retries, logs and metrics.

The SDK client is made with `max_retries=0`, so this module owns retries:
- 429 rate limits wait for `Retry-After` (or `retry-after-ms`) when the
  response has one, else for an exponential backoff;
- timeouts, connection errors, 408 and 5xx wait for the backoff;
- anything else (400, 401, 403, 404, and 429 with `insufficient_quota`) is
  not retried, because the same request would fail the same way.
All of them stop after `max_retries` retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import openai
import websockets.exceptions

from media import metrics
from media.engines.base import UpstreamFailure

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Error codes of a 429 that waiting does not fix.
NON_RETRYABLE_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})

# Everything a request to the service may raise when the service, not this
# code, is at fault.
UPSTREAM_EXCEPTIONS: tuple[type[BaseException], ...] = (
    openai.OpenAIError,
    httpx2.TransportError,
    websockets.exceptions.WebSocketException,
    OSError,
    TimeoutError,
)


class UpstreamError(Exception):
    """A request that failed for good, after the retries its failure allows."""

    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long one request may take, and how often and when it is retried."""

    max_retries: int = 2
    timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    # A Retry-After longer than this gives up at once: by then the utterance
    # is stale, and the caller's fallback does better than waiting.
    max_retry_after_s: float = 20.0

    def delay_s(self, failure: UpstreamFailure, retry: int) -> float | None:
        """Return the wait before retry number `retry` (from 0), or None to stop."""
        if not failure.retryable or retry >= self.max_retries:
            return None
        backoff = min(self.backoff_max_s, self.backoff_initial_s * 2.0**retry)
        backoff *= random.uniform(0.8, 1.2)
        if failure.retry_after_s is None:
            return backoff
        retry_after_s = failure.retry_after_s
        if retry_after_s > self.max_retry_after_s:
            return None
        return retry_after_s


def classify(exc: BaseException) -> UpstreamFailure:
    """Describe an exception from a request as a failure, retryable or not."""
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        return _status_failure(
            response.status_code, response.headers, exc.code, exc.body
        )
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        handshake = exc.response
        return _status_failure(
            handshake.status_code, handshake.headers, None, _json_body(handshake.body)
        )
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return UpstreamFailure("the request timed out", True, "timeout")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | OSError):
        return UpstreamFailure(
            f"the connection failed ({type(exc).__name__})", True, "connection_error"
        )
    return UpstreamFailure(
        f"the request failed ({type(exc).__name__})", True, "connection_error"
    )


async def call_with_retries(
    request: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    engine: str,
    endpoint: str,
    model: str,
) -> T:
    """Await `request()` until it succeeds or its failure allows no retry.

    Logs and counts every attempt. Raises UpstreamError with the last failure.
    """
    retry = 0
    while True:
        started = time.monotonic()
        try:
            result = await request()
        except UPSTREAM_EXCEPTIONS as exc:
            failure = classify(exc)
            record_request(
                engine=engine,
                endpoint=endpoint,
                model=model,
                started=started,
                outcome=failure.outcome,
                detail=failure.message,
            )
            delay = policy.delay_s(failure, retry)
            if delay is None:
                raise UpstreamError(failure) from exc
            logger.info(
                "retrying %s in %.2f s (retry %d of %d)",
                endpoint,
                delay,
                retry + 1,
                policy.max_retries,
            )
            retry += 1
            await asyncio.sleep(delay)
            continue
        record_request(
            engine=engine,
            endpoint=endpoint,
            model=model,
            started=started,
            outcome="ok",
            detail="",
        )
        return result


def record_request(
    *,
    engine: str,
    endpoint: str,
    model: str,
    started: float,
    outcome: str,
    detail: str,
) -> None:
    """Log one request with its model, duration and outcome, and count it."""
    duration_ms = (time.monotonic() - started) * 1000
    level = logging.INFO if outcome == "ok" else logging.WARNING
    logger.log(
        level,
        "upstream request: engine=%s endpoint=%s model=%s duration_ms=%.0f "
        "outcome=%s%s",
        engine,
        endpoint,
        model,
        duration_ms,
        outcome,
        f" ({detail})" if detail else "",
    )
    metrics.upstream_requests.labels(engine, endpoint, outcome).inc()


def _status_failure(
    status: int, headers: Mapping[str, str], code: str | None, body: object
) -> UpstreamFailure:
    if code is None:
        code = _error_code(body)
    if status == 429:
        outcome = "rate_limited"
    elif status >= 500:
        outcome = "server_error"
    else:
        outcome = "client_error"
    retryable = (status in RETRYABLE_STATUSES or status >= 500) and (
        code not in NON_RETRYABLE_CODES
    )
    if not retryable:
        outcome = "rejected"
    message = f"HTTP {status}" + (f" {code}" if code else "")
    return UpstreamFailure(
        message,
        retryable,
        outcome,
        status=status,
        code=code,
        retry_after_s=parse_retry_after(headers),
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Read `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = moment.timestamp() - time.time()
    if not math.isfinite(value):
        return None
    return max(0.0, value)


def _error_code(body: object) -> str | None:
    if isinstance(body, dict):
        error: Any = body.get("error", body)
        if isinstance(error, dict):
            code = error.get("code")
            return code if isinstance(code, str) else None
    return None


def _json_body(raw: bytes | bytearray | None) -> object:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
