"""One direction of a call: a speaker's audio to a listener, translated or not."""

from __future__ import annotations

import logging
from typing import Protocol

import av

from media.audio import OUTPUT_RATE, Pcm, Resampler
from media.engines.base import (
    Engine,
    EngineSession,
    SessionLabels,
    State,
    TranscriptKind,
    UpstreamFailure,
)
from media.outbound import ListenerMixer

logger = logging.getLogger(__name__)


class DirectionListener(Protocol):
    def on_caption(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        """Take a transcript delta of this speaker; `final` ends the utterance."""

    def on_translation_state(self, state: State, engine: str, reason: str) -> None:
        """What the listener now hears; called only when it changes."""

    def on_translation_failed(self, message: str) -> None:
        """Report a request that the service rejected for good (an invalid key)."""


class Direction:
    """Route a speaker's frames to a listener's mixer.

    With an engine, the speaker's audio goes to an engine session and the
    translated speech to the mixer; while the session is not ready the
    listener hears the original voice, so nobody sits in silence. Without an
    engine (same language, or translation off) the original voice plays at
    full volume.
    """

    def __init__(
        self,
        *,
        engine: Engine | None,
        target_language: str,
        mixer: ListenerMixer,
        listener: DirectionListener,
        labels: SessionLabels,
        hear_original: bool,
        unavailable_reason: str | None = None,
        source_language: str | None = None,
    ) -> None:
        self._engine = engine
        self._mixer = mixer
        self._listener = listener
        self._hear_original = hear_original
        self._unavailable_reason = unavailable_reason
        self._to_listener = Resampler(OUTPUT_RATE)
        self._to_engine: Resampler | None = None
        self._to_mixer: Resampler | None = None
        self._mixer_input_rate: int | None = None
        self._session: EngineSession | None = None
        self._state: tuple[State, str, str] | None = None
        self._failure_reported = False
        if engine is not None:
            self._session = engine.open_session(
                target_language=target_language,
                listener=self,
                labels=labels,
                source_language=source_language,
            )
            self._to_engine = Resampler(self._session.input_rate)

    @property
    def state(self) -> tuple[State, str, str] | None:
        return self._state

    async def start(self) -> None:
        self._mixer.set_original_mode("full")
        if self._session is not None:
            await self._session.start()
        elif self._unavailable_reason is not None:
            self._report("unavailable", "off", self._unavailable_reason)
        else:
            self._report("ready", "direct", "")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def set_hear_original(self, enabled: bool) -> None:
        self._hear_original = enabled
        if self._mixer.original_mode != "full" and self._session:
            self._mixer.set_original_mode("ducked" if enabled else "off")

    def on_frame(self, frame: av.AudioFrame) -> None:
        """Take one decoded frame of the speaker's audio."""
        if self._mixer.original_mode != "off":
            self._mixer.push_original(self._to_listener.resample(frame))
        if self._session is not None and self._to_engine is not None:
            self._session.push(self._to_engine.resample(frame))

    # SessionListener

    def on_audio(self, pcm: Pcm, rate: int) -> None:
        if rate != OUTPUT_RATE:
            if self._to_mixer is None or self._mixer_input_rate != rate:
                self._to_mixer = Resampler(OUTPUT_RATE)
                self._mixer_input_rate = rate
            pcm = self._to_mixer.resample_pcm(pcm, rate)
        self._mixer.push_translated(pcm)

    def on_transcript(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        self._listener.on_caption(kind, delta, final=final)

    def on_state(self, state: State, reason: str, *, engine: str | None = None) -> None:
        # A fallback engine still translates, so its `degraded` mutes the
        # original voice as `ready` does.
        translating = state == "ready" or (state == "degraded" and engine is not None)
        if translating:
            self._mixer.set_original_mode("ducked" if self._hear_original else "off")
        else:
            self._mixer.set_original_mode("full")
        if translating:
            self._failure_reported = False
        assert self._engine is not None
        self._report(state, engine or self._engine.name, reason)

    def on_failure(self, failure: UpstreamFailure) -> None:
        if failure.retryable or self._failure_reported:
            return
        self._failure_reported = True
        self._listener.on_translation_failed(
            f"Translation failed because the service rejected the request "
            f"({failure.message}); you hear the original voice."
        )

    def _report(self, state: State, engine: str, reason: str) -> None:
        if self._state == (state, engine, reason):
            return
        self._state = (state, engine, reason)
        self._listener.on_translation_state(state, engine, reason)
