"""Fallback from the realtime engine to the pipeline and back, at the engine
level against the fake OpenAI, without WebRTC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from media.engines.base import SessionLabels, State, UpstreamFailure
from media.engines.fallback import FallbackEngine, FallbackPolicy, FallbackSession
from media.engines.pipeline import (
    SPEECH_RATE,
    PipelineConfig,
    PipelineEngine,
    PipelineSession,
)
from media.engines.realtime import RealtimeEngine
from media.engines.upstream import RetryPolicy
from media.vad import VAD_RATE
from tests.fake_openai import FakeOpenAI
from tests.support.speech import resample
from tests.support.speech_cases import short_word, silence
from tests.test_pipeline import Recorder

TIMEOUT_S = 10.0


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


async def open_session(
    client: AsyncOpenAI, policy: FallbackPolicy
) -> tuple[FallbackSession, Recorder]:
    engine = FallbackEngine(
        primary=RealtimeEngine(
            client=client, model="gpt-realtime-translate", transcription_model=None
        ),
        secondary=PipelineEngine(
            client=client,
            config=PipelineConfig(retry=RetryPolicy(backoff_initial_s=0.05)),
        ),
        policy=policy,
    )
    recorder = Recorder()
    session = engine.open_session(
        target_language="ru",
        listener=recorder,
        labels=SessionLabels(call_id="c_test", participant_id="p_test"),
        source_language="en",
    )
    await session.start()
    return session, recorder


def engines_named(recorder: Recorder) -> list[tuple[str, str | None]]:
    return [(state, engine) for state, _, engine in recorder.states]


async def test_connect_failures_move_to_pipeline(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(3, 500)
    session, recorder = await open_session(
        client, FallbackPolicy(connect_failures=3, after_s=60, retry_primary_s=60)
    )
    try:
        await fake_openai.wait_for(lambda: session.fallbacks == 1, timeout=TIMEOUT_S)
        await fake_openai.wait_for(
            lambda: ("degraded", "pipeline") in engines_named(recorder),
            timeout=TIMEOUT_S,
        )
        # Audio goes to the pipeline at the realtime engine's 24 kHz input rate.
        word = resample(short_word(VAD_RATE), VAD_RATE, session.input_rate)
        session.push(silence(0.3, session.input_rate))
        session.push(word)
        session.push(silence(1.0, session.input_rate))
        await fake_openai.wait_for(lambda: len(recorder.audio) > 0, timeout=TIMEOUT_S)
    finally:
        await session.close()
    assert len(fake_openai.rest.uploads) == 1
    assert recorder.failures == []


async def test_no_working_session_moves_to_pipeline(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(1000, 503)
    session, recorder = await open_session(
        client, FallbackPolicy(connect_failures=100, after_s=1.0, retry_primary_s=60)
    )
    try:
        # The pipeline reports its state once it has started, a little after
        # the move itself.
        await fake_openai.wait_for(
            lambda: ("degraded", "pipeline") in engines_named(recorder),
            timeout=TIMEOUT_S,
        )
    finally:
        await session.close()
    assert session.fallbacks == 1


async def test_rejected_key_moves_to_pipeline_at_once(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(1, 401)
    session, _ = await open_session(
        client, FallbackPolicy(connect_failures=3, after_s=60, retry_primary_s=60)
    )
    try:
        await fake_openai.wait_for(lambda: session.fallbacks == 1, timeout=TIMEOUT_S)
    finally:
        await session.close()
    assert fake_openai.sessions == []


async def test_realtime_tried_again_and_taken_back(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(2, 500)
    session, recorder = await open_session(
        client, FallbackPolicy(connect_failures=2, after_s=60, retry_primary_s=0.5)
    )
    try:
        await fake_openai.wait_for(lambda: session.recoveries == 1, timeout=TIMEOUT_S)
    finally:
        await session.close()
    assert engines_named(recorder)[-1] == ("ready", None)
    assert ("degraded", "pipeline") in engines_named(recorder)
    assert len(fake_openai.sessions) == 1


async def test_failed_probe_waits_for_next_try(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(3, 500)
    session, _ = await open_session(
        client, FallbackPolicy(connect_failures=2, after_s=60, retry_primary_s=0.5)
    )
    try:
        await fake_openai.wait_for(lambda: session.recoveries == 1, timeout=TIMEOUT_S)
    finally:
        await session.close()
    # Two connects failed before the fallback, one probe failed, and the
    # second probe, at least 0.5 s later, succeeded.
    assert session.fallbacks == 1
    assert len(fake_openai.sessions) == 1


async def recover_after_utterance(
    fake_openai: FakeOpenAI, client: AsyncOpenAI, policy: FallbackPolicy
) -> tuple[Recorder, PipelineSession]:
    """Move a session to the pipeline, give it one utterance to translate, and
    wait until the realtime engine has taken over again."""
    fake_openai.reject_connects(policy.connect_failures, 500)
    session, recorder = await open_session(client, policy)
    try:
        await fake_openai.wait_for(lambda: session.fallbacks == 1, timeout=TIMEOUT_S)
        assert session.secondary is not None
        pipeline = session.secondary.session
        assert isinstance(pipeline, PipelineSession)
        word = resample(short_word(VAD_RATE), VAD_RATE, session.input_rate)
        session.push(silence(0.3, session.input_rate))
        session.push(word)
        session.push(silence(1.0, session.input_rate))
        assert pipeline.busy
        await fake_openai.wait_for(lambda: session.recoveries == 1, timeout=TIMEOUT_S)
    finally:
        await session.close()
    return recorder, pipeline


async def test_switch_back_waits_for_speech_in_flight(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    # Speech chunks 50 ms apart make the pipeline speak slower than real time,
    # so the probe, tried 0.3 s after the move, is ready while it still works.
    fake_openai.rest.speech_chunk_delay_s = 0.05
    policy = FallbackPolicy(connect_failures=2, after_s=60, retry_primary_s=0.3)
    recorder, pipeline = await recover_after_utterance(fake_openai, client, policy)
    assert pipeline.spoken_utterances == 1
    assert pipeline.failed_utterances == 0
    upload = fake_openai.rest.upload(1)
    assert upload is not None
    spoken = resample(upload.samples, upload.rate, SPEECH_RATE)
    assert len(recorder.samples()) == len(spoken)
    assert engines_named(recorder)[-1] == ("ready", None)


async def test_switch_back_waits_at_most_handover_wait(
    fake_openai: FakeOpenAI, client: AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.rest.hang("speech")
    policy = FallbackPolicy(
        connect_failures=2, after_s=60, retry_primary_s=0.3, handover_wait_s=0.5
    )
    recorder, pipeline = await recover_after_utterance(fake_openai, client, policy)
    assert pipeline.spoken_utterances == 0
    assert recorder.samples().size == 0
    assert "its speech in flight is dropped" in caplog.text


class TimedStates(Recorder):
    """A Recorder that also notes the loop time of each failure and state."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[str, float]] = []

    def on_state(self, state: State, reason: str, *, engine: str | None = None) -> None:
        super().on_state(state, reason, engine=engine)
        self.times.append((state, asyncio.get_running_loop().time()))

    def on_failure(self, failure: UpstreamFailure) -> None:
        super().on_failure(failure)
        self.times.append(("failure", asyncio.get_running_loop().time()))


async def test_realtime_connect_honours_retry_after(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.reject_connects(1, 429, retry_after_s=1.0)
    engine = RealtimeEngine(
        client=client, model="gpt-realtime-translate", transcription_model=None
    )
    recorder = TimedStates()
    session = engine.open_session(
        target_language="ru",
        listener=recorder,
        labels=SessionLabels(call_id="c_test", participant_id="p_test"),
    )
    await session.start()
    try:
        await fake_openai.wait_for(
            lambda: ("ready", "", None) in recorder.states, timeout=TIMEOUT_S
        )
    finally:
        await session.close()
    times = dict(recorder.times)
    assert recorder.failures[0].outcome == "rate_limited"
    assert times["ready"] - times["failure"] >= 1.0
