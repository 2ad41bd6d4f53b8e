"""The pipeline engine against the fake OpenAI REST endpoints.

Audio is pushed faster than real time straight into a session; the listener
records what the session reports. The fake "translates" deterministically, so
each test can tell which upload a caption or a stretch of speech came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from openai import AsyncOpenAI

from media.audio import Pcm
from media.engines.base import SessionLabels, State, TranscriptKind, UpstreamFailure
from media.engines.pipeline import (
    SPEECH_RATE,
    PipelineConfig,
    PipelineEngine,
    PipelineSession,
    system_prompt,
)
from media.engines.upstream import RetryPolicy
from media.vad import VAD_RATE
from tests.fake_openai import FakeOpenAI
from tests.support.speech import best_alignment, resample
from tests.support.speech_cases import (
    click,
    monologue,
    room_noise,
    sentence,
    short_word,
    silence,
)

TIMEOUT_S = 10.0
FAST_RETRY = RetryPolicy(max_retries=2, timeout_s=2.0, backoff_initial_s=0.05)


@dataclass
class Recorder:
    """A SessionListener that keeps everything a session reports."""

    audio: list[tuple[float, Pcm]] = field(default_factory=list)
    transcripts: list[tuple[TranscriptKind, str, bool]] = field(default_factory=list)
    states: list[tuple[State, str, str | None]] = field(default_factory=list)
    failures: list[UpstreamFailure] = field(default_factory=list)

    def on_audio(self, pcm: Pcm, rate: int) -> None:
        assert rate == SPEECH_RATE
        self.audio.append((asyncio.get_running_loop().time(), pcm))

    def on_transcript(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        self.transcripts.append((kind, delta, final))

    def on_state(self, state: State, reason: str, *, engine: str | None = None) -> None:
        self.states.append((state, reason, engine))

    def on_failure(self, failure: UpstreamFailure) -> None:
        self.failures.append(failure)

    def samples(self) -> Pcm:
        if not self.audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([pcm for _, pcm in self.audio])

    def texts(self, kind: TranscriptKind) -> list[str]:
        return [text for k, text, _ in self.transcripts if k == kind]


@dataclass
class Harness:
    fake: FakeOpenAI
    client: AsyncOpenAI
    sessions: list[PipelineSession] = field(default_factory=list)

    async def open(
        self, config: PipelineConfig | None = None, target: str = "ru"
    ) -> tuple[PipelineSession, Recorder]:
        recorder = Recorder()
        engine = PipelineEngine(
            client=self.client, config=config or PipelineConfig(retry=FAST_RETRY)
        )
        session = engine.open_session(
            target_language=target,
            listener=recorder,
            labels=SessionLabels(call_id="c_test", participant_id="p_test"),
            source_language="en",
        )
        self.sessions.append(session)
        await session.start()
        return session, recorder

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await self.fake.wait_for(predicate, timeout=TIMEOUT_S)


@pytest.fixture
async def harness(fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    client = AsyncOpenAI(
        base_url=fake_openai.base_url, api_key="sk-test", max_retries=0
    )
    harness = Harness(fake_openai, client)
    yield harness
    for session in harness.sessions:
        await session.close()
    await client.close()


async def feed(session: PipelineSession, *parts: Pcm) -> None:
    """Push the parts and 1 s of silence in 20 ms pieces, faster than real time."""
    audio = np.concatenate([*parts, silence(1.0, VAD_RATE)])
    step = VAD_RATE // 50
    for index, start in enumerate(range(0, audio.size, step)):
        session.push(audio[start : start + step])
        if index % 25 == 0:
            await asyncio.sleep(0)


async def test_sentence_is_one_upload_with_onset(harness: Harness) -> None:
    session, _ = await harness.open()
    speech = sentence(VAD_RATE)
    await feed(session, silence(1.0, VAD_RATE), speech)
    await harness.wait_until(lambda: session.spoken_utterances == 1)

    uploads = list(harness.fake.rest.uploads)
    assert len(uploads) == 1
    upload = uploads[0]
    assert upload.rate == VAD_RATE
    assert upload.language == "en"
    assert upload.model == "gpt-4o-mini-transcribe"
    lag_s, peak = best_alignment(speech, upload.samples, VAD_RATE)
    assert peak > 0.99, f"correlation {peak:.3f} with the sentence"
    assert lag_s >= 0.2, f"the upload starts only {lag_s:.3f} s before the speech"


async def test_sentence_captions_and_speech(harness: Harness) -> None:
    session, recorder = await harness.open()
    await feed(session, silence(0.5, VAD_RATE), sentence(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)

    upload = harness.fake.rest.uploads[0]
    original = f"utterance 1 lasting {upload.duration_s:.2f} s"
    assert recorder.transcripts == [
        ("original", original, False),
        ("translation", f"[ru] {original}", True),
    ]
    heard = recorder.samples()
    expected = resample(upload.samples, VAD_RATE, SPEECH_RATE)
    assert abs(heard.size - expected.size) <= 1
    assert recorder.states == [("ready", "", None)]
    assert len(session.latencies_s) == 1


async def test_short_word_is_sent(harness: Harness) -> None:
    session, _ = await harness.open()
    await feed(session, silence(0.5, VAD_RATE), short_word(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)
    assert len(harness.fake.rest.uploads) == 1


async def test_click_and_room_noise_are_not_sent(harness: Harness) -> None:
    session, recorder = await harness.open()
    await feed(
        session,
        silence(0.5, VAD_RATE),
        click(VAD_RATE),
        silence(0.5, VAD_RATE),
        room_noise(2.0, VAD_RATE),
    )
    await asyncio.sleep(0.2)
    assert harness.fake.rest.records == []
    assert recorder.transcripts == []


async def test_monologue_is_split_into_uploads(harness: Harness) -> None:
    session, _ = await harness.open()
    speech = monologue(VAD_RATE)
    await feed(session, speech)
    await harness.wait_until(
        lambda: session.spoken_utterances == session.utterances >= 3
    )
    uploads = list(harness.fake.rest.uploads)
    assert len(uploads) >= 3
    assert all(u.duration_s <= 15.0 for u in uploads)
    sent = sum(u.samples.size for u in uploads)
    assert sent >= 0.98 * speech.size


async def test_utterances_play_in_order(harness: Harness) -> None:
    harness.fake.rest.speech_chunk_delay_s = 0.05
    session, recorder = await harness.open()
    word = short_word(VAD_RATE)
    await feed(session, sentence(VAD_RATE), silence(0.8, VAD_RATE), word)
    await harness.wait_until(lambda: session.spoken_utterances == 2)

    first, second = harness.fake.rest.uploads
    expected = np.concatenate(
        [
            resample(first.samples, VAD_RATE, SPEECH_RATE),
            resample(second.samples, VAD_RATE, SPEECH_RATE),
        ]
    )
    heard = recorder.samples()
    assert abs(heard.size - expected.size) <= 2
    split = resample(first.samples, VAD_RATE, SPEECH_RATE).size
    _, peak = best_alignment(expected[split:], heard[split - 4 :], SPEECH_RATE)
    assert peak > 0.95, f"the second utterance correlates {peak:.2f}"


async def test_next_utterance_transcribed_while_speaking(harness: Harness) -> None:
    harness.fake.rest.speech_chunk_delay_s = 0.05
    session, recorder = await harness.open()
    await feed(session, sentence(VAD_RATE), silence(0.2, VAD_RATE))
    await harness.wait_until(lambda: len(recorder.audio) > 0)
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(
        lambda: len(harness.fake.rest.records_of("transcriptions")) == 2
    )
    # The first utterance's speech (about 40 chunks, 50 ms apart) is still
    # streaming when the second one is transcribed.
    assert session.spoken_utterances == 0


async def test_rate_limit_retried_after_retry_after(harness: Harness) -> None:
    harness.fake.rest.fail("transcriptions", 429, retry_after_s=0.4)
    session, recorder = await harness.open()
    await feed(session, sentence(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)

    first, second = harness.fake.rest.records_of("transcriptions")
    assert first.status == 429
    assert second.status == 200
    assert second.received_at - first.received_at >= 0.4
    assert recorder.failures == []


async def test_server_errors_retried_then_give_up(harness: Harness) -> None:
    harness.fake.rest.fail("chat", 500, count=3)
    session, recorder = await harness.open()
    await feed(session, sentence(VAD_RATE))
    await harness.wait_until(lambda: session.failed_utterances == 1)

    chats = harness.fake.rest.records_of("chat")
    assert [r.status for r in chats] == [500, 500, 500]
    assert len(recorder.failures) == 1
    assert recorder.failures[0].retryable is True
    assert recorder.states[-1][0] == "unavailable"
    assert "HTTP 500" in recorder.states[-1][1]


async def test_recovers_after_failed_utterance(harness: Harness) -> None:
    harness.fake.rest.fail("speech", 500, count=3)
    session, recorder = await harness.open()
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.failed_utterances == 1)
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)
    assert [s for s, _, _ in recorder.states] == ["ready", "unavailable", "ready"]


async def test_hung_request_times_out_and_retries(harness: Harness) -> None:
    harness.fake.rest.hang("speech")
    config = PipelineConfig(
        retry=RetryPolicy(max_retries=1, timeout_s=0.3, backoff_initial_s=0.05)
    )
    session, _ = await harness.open(config)
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)
    speech = harness.fake.rest.records_of("speech")
    assert [r.status for r in speech] == [0, 200]
    assert speech[1].received_at - speech[0].received_at >= 0.3


async def test_exhausted_quota_is_not_retried(harness: Harness) -> None:
    harness.fake.rest.fail("transcriptions", 429, code="insufficient_quota")
    session, recorder = await harness.open()
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.failed_utterances == 1)

    assert len(harness.fake.rest.records_of("transcriptions")) == 1
    (failure,) = recorder.failures
    assert failure.retryable is False
    assert failure.code == "insufficient_quota"


async def test_glossary_and_language_in_prompt(harness: Harness) -> None:
    config = PipelineConfig(retry=FAST_RETRY, glossary="call bridge = мост звонков")
    session, recorder = await harness.open(config)
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)

    (chat,) = harness.fake.rest.records_of("chat")
    messages = chat.body["messages"]
    assert messages[0]["role"] == "system"
    assert "call bridge = мост звонков" in messages[0]["content"]
    assert "Russian (language code ru)" in messages[0]["content"]
    assert recorder.texts("translation")[0].startswith("[ru] ")


async def test_speech_request_shape(harness: Harness) -> None:
    session, _ = await harness.open()
    await feed(session, short_word(VAD_RATE))
    await harness.wait_until(lambda: session.spoken_utterances == 1)
    (speech,) = harness.fake.rest.records_of("speech")
    assert speech.body["response_format"] == "pcm"
    assert speech.body["model"] == "gpt-4o-mini-tts"
    assert speech.body["voice"] == "alloy"


def test_system_prompt_without_source() -> None:
    prompt = system_prompt(None, "de", "")
    assert "into German (language code de)" in prompt
    assert "Use these translations" not in prompt
