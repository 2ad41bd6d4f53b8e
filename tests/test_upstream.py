"""Failure classes and retry delays of requests to the OpenAI API."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai
import pytest

from media.engines.base import UpstreamFailure
from media.engines.upstream import RetryPolicy, classify, parse_retry_after


def status_error(
    status: int, code: str | None = None, headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    body = {"message": "failed", "type": "error", "param": None, "code": code}
    return openai.APIStatusError("failed", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "code", "retryable", "outcome"),
    [
        (429, "rate_limit_exceeded", True, "rate_limited"),
        (429, "insufficient_quota", False, "rejected"),
        (500, None, True, "server_error"),
        (503, None, True, "server_error"),
        (408, None, True, "client_error"),
        (400, "invalid_value", False, "rejected"),
        (401, "invalid_api_key", False, "rejected"),
        (404, "model_not_found", False, "rejected"),
    ],
)
def test_classify_status(
    status: int, code: str | None, retryable: bool, outcome: str
) -> None:
    failure = classify(status_error(status, code))
    assert failure.retryable is retryable
    assert failure.outcome == outcome
    assert failure.status == status
    assert failure.code == code


def test_classify_timeout_is_retryable() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/audio/speech")
    failure = classify(openai.APITimeoutError(request=request))
    assert failure.retryable is True
    assert failure.outcome == "timeout"


def test_classify_message_has_status_and_code() -> None:
    failure = classify(status_error(401, "invalid_api_key"))
    assert failure.message == "HTTP 401 invalid_api_key"


def test_retry_after_milliseconds_first() -> None:
    headers = {"retry-after-ms": "250", "retry-after": "3"}
    assert parse_retry_after(headers) == 0.25


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0


def test_retry_after_http_date() -> None:
    moment = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = parse_retry_after({"retry-after": moment})
    assert value is not None
    assert 25 <= value <= 31


def test_retry_after_garbage_is_ignored() -> None:
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_policy_honours_retry_after() -> None:
    failure = UpstreamFailure("HTTP 429", True, "rate_limited", retry_after_s=1.5)
    assert RetryPolicy().delay_s(failure, 0) == 1.5


def test_policy_gives_up_on_long_retry_after() -> None:
    failure = UpstreamFailure("HTTP 429", True, "rate_limited", retry_after_s=60)
    assert RetryPolicy(max_retry_after_s=20).delay_s(failure, 0) is None


def test_policy_stops_after_max_retries() -> None:
    failure = UpstreamFailure("HTTP 500", True, "server_error")
    policy = RetryPolicy(max_retries=2)
    assert policy.delay_s(failure, 1) is not None
    assert policy.delay_s(failure, 2) is None


def test_policy_never_retries_rejections() -> None:
    failure = UpstreamFailure("HTTP 401", False, "rejected")
    assert RetryPolicy().delay_s(failure, 0) is None


def test_policy_backoff_grows() -> None:
    failure = UpstreamFailure("timed out", True, "timeout")
    policy = RetryPolicy(max_retries=5, backoff_initial_s=1.0, backoff_max_s=100)
    first = policy.delay_s(failure, 0)
    third = policy.delay_s(failure, 2)
    assert first is not None
    assert third is not None
    assert third > first
