"""OpenAI Realtime Translation: one WebSocket session per direction.

Facts about the API that shape this module (OpenAI API reference and the
`openai` SDK's types, checked against openai 3.60):
- input is base64 24 kHz mono PCM16, consumed in 200 ms engine frames, and
  gaps in the input are treated as contiguous, so silence is sent too;
- a new session translates into Spanish until `session.update` lands, so no
  audio is appended before `session.updated` arrives;
- sessions expire after about 60 minutes with an `error` event
  (`session_expired`) and a close with code 1001, which ends the SDK's
  iteration quietly. The SDK's own reconnect does not resend
  `session.update`, so this module owns reconnects and reconfigures every
  new connection before sending audio.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import deque
from typing import Any

import numpy as np
import openai
import websockets.exceptions
from openai import AsyncOpenAI
from openai.types.realtime.realtime_translation_session_update_request_param import (
    Audio,
    RealtimeTranslationSessionUpdateRequestParam,
)

from media import metrics
from media.audio import Pcm, pcm16_bytes_to_array
from media.engines.base import (
    Engine,
    EngineSession,
    SessionLabels,
    SessionListener,
    UpstreamFailure,
)
from media.engines.upstream import classify, record_request
from media.logcontext import call_id_var, participant_id_var

logger = logging.getLogger(__name__)

INPUT_RATE = 24_000
CHUNK_SAMPLES = INPUT_RATE // 5  # 200 ms, one engine frame
# Input waiting for a configured session; older chunks are dropped, because
# the listener hears the original voice while the session is not ready.
MAX_PENDING_CHUNKS = 10
CONFIGURE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.5
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 10.0

# Errors that mean the connection is gone or could not be made.
CONNECTION_ERRORS = (
    websockets.exceptions.WebSocketException,
    openai.OpenAIError,
    OSError,
    TimeoutError,
)


class RealtimeEngine(Engine):
    name = "realtime"

    def __init__(
        self, *, client: AsyncOpenAI, model: str, transcription_model: str | None
    ) -> None:
        self._client = client
        self._model = model
        self._transcription_model = transcription_model

    def open_session(
        self,
        *,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
        source_language: str | None = None,
    ) -> RealtimeSession:
        return RealtimeSession(
            client=self._client,
            model=self._model,
            transcription_model=self._transcription_model,
            target_language=target_language,
            listener=listener,
            labels=labels,
        )


class RealtimeSession(EngineSession):
    """A Realtime Translation connection that reconnects until closed."""

    input_rate = INPUT_RATE

    def __init__(
        self,
        *,
        client: AsyncOpenAI,
        model: str,
        transcription_model: str | None,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
    ) -> None:
        self._client = client
        self._model = model
        self._transcription_model = transcription_model
        self._target_language = target_language
        self._listener = listener
        self._labels = labels
        self._partial = np.zeros(0, dtype=np.int16)
        self._pending: deque[bytes] = deque(maxlen=MAX_PENDING_CHUNKS)
        self._pending_ready = asyncio.Event()
        self._connection: Any = None
        self._configured = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.dropped_chunks = 0
        self.sent_chunks = 0
        self.connects = 0
        self.errors = 0
        self.connect_failures = 0

    async def start(self) -> None:
        call_id_var.set(self._labels.call_id)
        participant_id_var.set(self._labels.participant_id)
        self._task = asyncio.create_task(self._run(), name="realtime-session")

    def push(self, pcm: Pcm) -> None:
        self._partial = np.concatenate((self._partial, pcm))
        while self._partial.size >= CHUNK_SAMPLES:
            chunk = self._partial[:CHUNK_SAMPLES]
            self._partial = self._partial[CHUNK_SAMPLES:]
            if not self._configured:
                self.dropped_chunks += 1
                metrics.input_dropped.inc()
                continue
            if len(self._pending) == self._pending.maxlen:
                self.dropped_chunks += 1
                metrics.input_dropped.inc()
            self._pending.append(chunk.astype("<i2").tobytes())
            self._pending_ready.set()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is None:
            return
        connection = self._connection
        if connection is None:
            # Waiting to connect or to retry: nothing to close politely.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        if self._configured:
            try:
                await connection.session.close()
            except CONNECTION_ERRORS as exc:
                logger.debug("session.close was not sent: %r", exc)
        # asyncio.wait neither raises the task's own error or cancellation
        # nor cancels it, so a session that died while closing ends quietly.
        await asyncio.wait([task], timeout=CLOSE_TIMEOUT_S)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            started = time.monotonic()
            failure: UpstreamFailure | None = None
            outcome = "closed"
            try:
                configured = await self._connect_once(started)
            except CONNECTION_ERRORS as exc:
                configured = self._configured
                failure = classify(exc)
            except Exception:
                logger.exception("realtime session failed unexpectedly")
                configured = self._configured
                failure = UpstreamFailure("unexpected error", True, "error")
            finally:
                self._configured = False
                self._connection = None
                self._pending.clear()
            if configured:
                attempt = 0
            elif failure is None:
                outcome = "not_configured"
                failure = UpstreamFailure(
                    "the session closed before it was configured",
                    True,
                    "connection_error",
                )
            if failure is not None and outcome == "closed":
                outcome = "failed"
            metrics.upstream_sessions.labels(engine="realtime", outcome=outcome).inc()
            logger.info(
                "realtime session ended: model=%s language=%s duration_s=%.1f "
                "outcome=%s %s",
                self._model,
                self._target_language,
                time.monotonic() - started,
                outcome,
                failure.message if failure is not None else "",
            )
            if self._closing:
                break
            if not configured and failure is not None:
                self._report_connect_failure(failure, started)
                if not failure.retryable:
                    self._listener.on_state(
                        "unavailable",
                        "The translation service rejected the connection "
                        f"({failure.message}), so you hear the original voice.",
                    )
                    return
            self._listener.on_state(
                "degraded", "reconnecting to the translation service"
            )
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**attempt)
            delay *= random.uniform(0.8, 1.2)
            if failure is not None and failure.retry_after_s is not None:
                delay = max(delay, failure.retry_after_s)
            attempt += 1
            await asyncio.sleep(delay)

    def _report_connect_failure(self, failure: UpstreamFailure, started: float) -> None:
        self.connect_failures += 1
        record_request(
            engine=RealtimeEngine.name,
            endpoint="realtime.connect",
            model=self._model,
            started=started,
            outcome=failure.outcome,
            detail=failure.message,
        )
        self._listener.on_failure(failure)

    async def _connect_once(self, started: float) -> bool:
        """Run one connection until it ends; return whether it got configured."""
        self.connects += 1
        manager = self._client.realtime.translations.connect(model=self._model)
        async with asyncio.timeout(CONFIGURE_TIMEOUT_S):
            connection = await manager.enter()
        self._connection = connection
        sender: asyncio.Task[None] | None = None
        try:
            await connection.session.update(session=self._session_config())
            async with asyncio.timeout(CONFIGURE_TIMEOUT_S) as deadline:
                async for event in connection:
                    if event.type == "session.updated" and not self._configured:
                        deadline.reschedule(None)
                        self._configured = True
                        record_request(
                            engine=RealtimeEngine.name,
                            endpoint="realtime.connect",
                            model=self._model,
                            started=started,
                            outcome="ok",
                            detail="",
                        )
                        self._pending.clear()
                        sender = asyncio.create_task(self._send_audio(connection))
                        logger.info(
                            "realtime session configured: model=%s language=%s",
                            self._model,
                            self._target_language,
                        )
                        self._listener.on_state("ready", "")
                    elif event.type == "session.closed":
                        break
                    else:
                        self._handle_event(event)
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await connection.close()
        return self._configured

    def _session_config(self) -> RealtimeTranslationSessionUpdateRequestParam:
        audio: Audio = {"output": {"language": self._target_language}}
        if self._transcription_model:
            audio["input"] = {"transcription": {"model": self._transcription_model}}
        return {"audio": audio}

    def _handle_event(self, event: Any) -> None:
        if event.type == "session.output_audio.delta":
            rate = event.sample_rate or INPUT_RATE
            pcm = pcm16_bytes_to_array(base64.b64decode(event.delta))
            seconds = pcm.size / rate
            metrics.translated_audio.labels(engine="realtime").inc(seconds)
            metrics.estimated_cost.labels(engine="realtime").inc(
                seconds / 60 * metrics.ESTIMATED_USD_PER_REALTIME_MIN
            )
            self._listener.on_audio(pcm, rate)
        elif event.type == "session.input_transcript.delta":
            self._listener.on_transcript("original", event.delta)
        elif event.type == "session.output_transcript.delta":
            self._listener.on_transcript("translation", event.delta)
        elif event.type == "error":
            self.errors += 1
            error = event.error
            metrics.upstream_errors.labels(
                engine="realtime", code=str(error.code or error.type)
            ).inc()
            level = logging.INFO if error.code == "session_expired" else logging.WARNING
            logger.log(
                level,
                "realtime error event: type=%s code=%s param=%s message=%s",
                error.type,
                error.code,
                error.param,
                error.message,
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("realtime event ignored: %s", event.type)

    async def _send_audio(self, connection: Any) -> None:
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            while self._pending:
                chunk = self._pending.popleft()
                await connection.session.input_audio_buffer.append(
                    audio=base64.b64encode(chunk).decode("ascii")
                )
                self.sent_chunks += 1
