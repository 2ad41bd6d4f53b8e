"""Fake OpenAI Realtime Translation API for tests and benchmarks.

`FakeOpenAI` is a real aiohttp server on a loopback port that speaks the
WebSocket protocol of the official `openai` SDK. Run it standalone with
`python -m tests.fake_openai --port 8765`.
"""

from .realtime import (
    DEFAULT_OUTPUT_LANGUAGE,
    FRAME_BYTES,
    FRAME_MS,
    OUTPUT_LANGUAGES,
    SAMPLE_RATE,
    SESSION_EXPIRED_MESSAGE,
    SILENCE_RMS,
    FakeSession,
)
from .server import DEFAULT_MODEL, FakeOpenAI, FakeOptions

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_OUTPUT_LANGUAGE",
    "FRAME_BYTES",
    "FRAME_MS",
    "OUTPUT_LANGUAGES",
    "SAMPLE_RATE",
    "SESSION_EXPIRED_MESSAGE",
    "SILENCE_RMS",
    "FakeOpenAI",
    "FakeOptions",
    "FakeSession",
]
