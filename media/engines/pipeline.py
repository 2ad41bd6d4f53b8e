"""The chained engine: voice activity detection, then transcription,
translation and speech through three OpenAI REST endpoints.

Per direction, two tasks run in order of utterances:
- the text worker transcribes an utterance (WAV upload), sends the original
  caption, translates it with a chat completion and sends the translation
  caption, both final;
- the speech worker streams the translation's speech as 24 kHz PCM16 and
  hands each chunk to the listener as it arrives.
So the next utterance is transcribed while the previous one still speaks, and
utterances of one speaker play in order without overlapping, because the
listener's queue is first in, first out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from media import metrics
from media.audio import Pcm, pcm16_bytes_to_array
from media.engines.base import (
    Engine,
    EngineSession,
    SessionLabels,
    SessionListener,
    State,
    UpstreamFailure,
)
from media.engines.upstream import (
    UPSTREAM_EXCEPTIONS,
    RetryPolicy,
    UpstreamError,
    call_with_retries,
    classify,
    record_request,
)
from media.languages import LANGUAGES
from media.logcontext import call_id_var, participant_id_var
from media.vad import VAD_RATE, Utterance, UtteranceDetector, VadConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENGINE_NAME = "pipeline"
# `audio.speech` with response_format "pcm" returns 24 kHz mono PCM16.
SPEECH_RATE = 24_000
SPEECH_CHUNK_BYTES = SPEECH_RATE // 25 * 2  # 40 ms
# Utterances waiting for the text worker, and translations waiting for the
# speech worker. When full, the oldest is dropped and counted: a listener is
# better served by recent speech than by a growing backlog.
MAX_QUEUED_UTTERANCES = 8
MAX_QUEUED_SPEECH = 8


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Models, voice, glossary and limits of the chained engine."""

    transcription_model: str = "gpt-4o-mini-transcribe"
    chat_model: str = "gpt-4o-mini"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "alloy"
    # Term translations that the chat model must use, as written in the
    # glossary file; empty for none.
    glossary: str = ""
    vad: VadConfig = field(default_factory=VadConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class PipelineEngine(Engine):
    name = ENGINE_NAME

    def __init__(self, *, client: AsyncOpenAI, config: PipelineConfig) -> None:
        self._client = client
        self._config = config

    def open_session(
        self,
        *,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
        source_language: str | None = None,
    ) -> PipelineSession:
        return PipelineSession(
            client=self._client,
            config=self._config,
            source_language=source_language,
            target_language=target_language,
            listener=listener,
            labels=labels,
        )


@dataclass
class _Job:
    """An utterance on its way through the pipeline."""

    number: int
    utterance: Utterance
    # time.monotonic() at the end of its speech, the start of its latency.
    speech_ended_at: float
    # time.monotonic() when the detector emitted it.
    detected_at: float


class PipelineSession(EngineSession):
    """One direction of the chained engine."""

    input_rate = VAD_RATE

    def __init__(
        self,
        *,
        client: AsyncOpenAI,
        config: PipelineConfig,
        source_language: str | None,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
    ) -> None:
        self._client = client
        self._config = config
        self._source_language = source_language
        self._target_language = target_language
        self._listener = listener
        self._labels = labels
        self._detector = UtteranceDetector(config.vad)
        self._system_prompt = system_prompt(
            source_language, target_language, config.glossary
        )
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue(MAX_QUEUED_UTTERANCES)
        self._speech: asyncio.Queue[tuple[_Job, str]] = asyncio.Queue(MAX_QUEUED_SPEECH)
        self._tasks: list[asyncio.Task[None]] = []
        self._state: State | None = None
        self._closing = False
        self._next_number = 1
        # Jobs that a worker has taken from its queue and not finished.
        self._working = 0
        self.utterances = 0
        self.dropped_utterances = 0
        self.failed_utterances = 0
        self.spoken_utterances = 0
        # Per spoken utterance: end of speech, and detection, to its first
        # translated audio.
        self.latencies_s: list[float] = []
        self.processing_s: list[float] = []

    async def start(self) -> None:
        call_id_var.set(self._labels.call_id)
        participant_id_var.set(self._labels.participant_id)
        self._tasks = [
            asyncio.create_task(self._text_worker(), name="pipeline-text"),
            asyncio.create_task(self._speech_worker(), name="pipeline-speech"),
        ]
        self._set_state("ready", "")

    def push(self, pcm: Pcm) -> None:
        if self._closing:
            return
        now = time.monotonic()
        for utterance in self._detector.push(pcm):
            job = _Job(self._next_number, utterance, now - utterance.end_lag_s, now)
            self._next_number += 1
            self.utterances += 1
            _put_dropping_oldest(self._jobs, job, self._count_dropped)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        logger.info(
            "pipeline session closed: utterances=%d spoken=%d failed=%d dropped=%d "
            "rejected_by_vad=%d",
            self.utterances,
            self.spoken_utterances,
            self.failed_utterances,
            self.dropped_utterances,
            self._detector.rejected,
        )

    @property
    def busy(self) -> bool:
        return (
            self._detector.in_speech
            or self._working > 0
            or not self._jobs.empty()
            or not self._speech.empty()
        )

    # Text worker: transcription and translation.

    async def _text_worker(self) -> None:
        while True:
            job = await self._jobs.get()
            self._working += 1
            try:
                await self._process_text(job)
            except UpstreamError as exc:
                self._fail(job, exc.failure)
            except Exception:
                logger.exception("utterance %d failed unexpectedly", job.number)
                self.failed_utterances += 1
            finally:
                self._working -= 1

    async def _process_text(self, job: _Job) -> None:
        original = await self._transcribe(job.utterance)
        if not original:
            logger.info("utterance %d has no text; skipped", job.number)
            return
        self._listener.on_transcript("original", original)
        translation = await self._translate(original)
        if not translation:
            logger.info("utterance %d has no translation; skipped", job.number)
            return
        self._listener.on_transcript("translation", translation, final=True)
        _put_dropping_oldest(self._speech, (job, translation), self._count_dropped)

    async def _transcribe(self, utterance: Utterance) -> str:
        audio = wav_bytes(utterance.pcm, VAD_RATE)
        model = self._config.transcription_model

        async def request() -> str:
            if self._source_language is None:
                result = await self._client.audio.transcriptions.create(
                    model=model,
                    file=("utterance.wav", audio, "audio/wav"),
                    response_format="json",
                    timeout=self._config.retry.timeout_s,
                )
            else:
                result = await self._client.audio.transcriptions.create(
                    model=model,
                    file=("utterance.wav", audio, "audio/wav"),
                    language=self._source_language,
                    response_format="json",
                    timeout=self._config.retry.timeout_s,
                )
            return result.text.strip()

        return await self._call(request, "audio.transcriptions", model)

    async def _translate(self, text: str) -> str:
        model = self._config.chat_model
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": self._system_prompt},
            {"role": "user", "content": text},
        ]

        async def request() -> str:
            completion = await self._client.chat.completions.create(
                model=model,
                messages=messages,
                timeout=self._config.retry.timeout_s,
            )
            if not completion.choices:
                return ""
            return (completion.choices[0].message.content or "").strip()

        return await self._call(request, "chat.completions", model)

    # Speech worker.

    async def _speech_worker(self) -> None:
        while True:
            job, text = await self._speech.get()
            self._working += 1
            try:
                await self._speak(job, text)
            except UpstreamError as exc:
                self._fail(job, exc.failure)
            except Exception:
                logger.exception("speech of utterance %d failed", job.number)
                self.failed_utterances += 1
            finally:
                self._working -= 1

    async def _speak(self, job: _Job, text: str) -> None:
        model = self._config.tts_model
        async with contextlib.AsyncExitStack() as stack:

            async def open_stream() -> tuple[AsyncIterator[bytes], bytes]:
                # Retried only until the first bytes arrive: after that the
                # listener has heard part of it, and a retry would repeat it.
                response = await stack.enter_async_context(
                    self._client.audio.speech.with_streaming_response.create(
                        model=model,
                        voice=self._config.tts_voice,
                        input=text,
                        response_format="pcm",
                        timeout=self._config.retry.timeout_s,
                    )
                )
                chunks = response.iter_bytes(SPEECH_CHUNK_BYTES)
                first = await anext(chunks, b"")
                return chunks, first

            chunks, first = await self._call(open_stream, "audio.speech", model)
            started = time.monotonic()
            total = await self._play(job, first, chunks, started, model)
        self.spoken_utterances += 1
        seconds = total / 2 / SPEECH_RATE
        metrics.translated_audio.labels(ENGINE_NAME).inc(seconds)
        self._set_state("ready", "")

    async def _play(
        self,
        job: _Job,
        first: bytes,
        chunks: AsyncIterator[bytes],
        started: float,
        model: str,
    ) -> int:
        """Hand the stream to the listener; return how many bytes it had."""
        carry = b""
        total = 0
        chunk = first
        try:
            while chunk:
                data = carry + chunk
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if usable:
                    if total == 0:
                        self._record_latency(job)
                    total += usable
                    self._listener.on_audio(
                        pcm16_bytes_to_array(data[:usable]), SPEECH_RATE
                    )
                chunk = await anext(chunks, b"")
        except UPSTREAM_EXCEPTIONS as exc:
            failure = classify(exc)
            record_request(
                engine=ENGINE_NAME,
                endpoint="audio.speech",
                model=model,
                started=started,
                outcome=failure.outcome,
                detail=f"stream broke after {total} bytes: {failure.message}",
            )
        return total

    def _record_latency(self, job: _Job) -> None:
        now = time.monotonic()
        latency = now - job.speech_ended_at
        self.latencies_s.append(latency)
        self.processing_s.append(now - job.detected_at)
        metrics.latency.observe(latency)
        logger.info(
            "utterance %d: %.2f s of audio, first translated audio %.0f ms after "
            "the end of speech",
            job.number,
            job.utterance.duration_s,
            latency * 1000,
        )

    # Shared helpers.

    async def _call(
        self, request: Callable[[], Awaitable[T]], endpoint: str, model: str
    ) -> T:
        return await call_with_retries(
            request,
            policy=self._config.retry,
            engine=ENGINE_NAME,
            endpoint=endpoint,
            model=model,
        )

    def _fail(self, job: _Job, failure: UpstreamFailure) -> None:
        self.failed_utterances += 1
        logger.warning("utterance %d not translated: %s", job.number, failure.message)
        self._listener.on_failure(failure)
        self._set_state(
            "unavailable",
            f"The translation service failed ({failure.message}), so you hear "
            "the original voice.",
        )

    def _set_state(self, state: State, reason: str) -> None:
        if state == self._state:
            return
        self._state = state
        self._listener.on_state(state, reason)

    def _count_dropped(self) -> None:
        self.dropped_utterances += 1
        metrics.input_dropped.inc()
        logger.warning(
            "pipeline backlog full: dropped the oldest utterance (%d so far)",
            self.dropped_utterances,
        )


def system_prompt(source: str | None, target: str, glossary: str) -> str:
    """Build the chat instructions that translate into `target` and nothing else."""
    target_name = _language_name(target)
    source_part = f" from {_language_name(source)}" if source else ""
    prompt = (
        "You are an interpreter in a spoken conversation. Translate the user's "
        f"message{source_part} into {target_name} (language code {target}). "
        "Reply with the translation only, without quotes, notes or "
        "explanations. If the message is already in "
        f"{target_name}, reply with it unchanged."
    )
    if glossary.strip():
        prompt += (
            "\n\nUse these translations of terms wherever they occur:\n"
            + glossary.strip()
        )
    return prompt


def wav_bytes(pcm: Pcm, rate: int) -> bytes:
    """Encode mono int16 samples as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buffer.getvalue()


def _language_name(code: str) -> str:
    language = LANGUAGES.get(code)
    return language.name if language else code


def _put_dropping_oldest(
    queue: asyncio.Queue[T], item: T, on_drop: Callable[[], None]
) -> None:
    if queue.full():
        queue.get_nowait()
        on_drop()
    queue.put_nowait(item)
