"""A call between two participants: their directions and captions."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from media.direction import Direction
from media.engines.base import Engine, SessionLabels, State, TranscriptKind
from media.logcontext import call_id_var
from signaling import messages
from signaling.captions import CaptionAssembler
from signaling.participant import Participant

logger = logging.getLogger(__name__)


class _DirectionEvents:
    """Relay one direction's captions and state to the two participants."""

    def __init__(self, captions: CaptionAssembler, listener: Participant) -> None:
        self._captions = captions
        self._listener = listener

    def on_caption(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        self._captions.add(kind, delta)
        if final:
            self._captions.finish()

    def on_translation_state(self, state: State, engine: str, reason: str) -> None:
        logger.info(
            "translation for %s: state=%s engine=%s reason=%s",
            self._listener.id,
            state,
            engine,
            reason or "-",
        )
        self._listener.send(messages.translation(state, engine, reason))

    def on_translation_failed(self, message: str) -> None:
        self._listener.send(messages.error("translation_failed", message))


class Call:
    """Own both directions of a call and tear them down in one place."""

    def __init__(
        self,
        *,
        a: Participant,
        b: Participant,
        engine: Engine | None,
        unavailable_reason: str | None,
        caption_final_s: float,
    ) -> None:
        self.id = "c_" + secrets.token_hex(8)
        self.a = a
        self.b = b
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.translated = engine is not None and a.language != b.language
        self.ended = False
        self._captions: list[CaptionAssembler] = []
        self._directions = [
            self._direction(
                speaker, listener, engine, unavailable_reason, caption_final_s
            )
            for speaker, listener in ((a, b), (b, a))
        ]

    def partner_of(self, participant: Participant) -> Participant:
        return self.b if participant is self.a else self.a

    def direction_to(self, listener: Participant) -> Direction:
        return self._directions[0] if listener is self.b else self._directions[1]

    async def start(self) -> None:
        call_id_var.set(self.id)
        logger.info(
            "call started: %s (%s) with %s (%s)",
            self.a.id,
            self.a.language,
            self.b.id,
            self.b.language,
        )
        self.a.tap.consumer = self._directions[0].on_frame
        self.b.tap.consumer = self._directions[1].on_frame
        for direction in self._directions:
            await direction.start()

    async def end(self) -> None:
        """Stop both directions and close their engine sessions."""
        if self.ended:
            return
        self.ended = True
        for participant in (self.a, self.b):
            participant.tap.consumer = None
        for captions in self._captions:
            captions.finish()
        await asyncio.gather(*(d.close() for d in self._directions))
        logger.info("call ended after %.1f s", time.time() - self.started_at)

    def _direction(
        self,
        speaker: Participant,
        listener: Participant,
        engine: Engine | None,
        unavailable_reason: str | None,
        caption_final_s: float,
    ) -> Direction:
        captions = CaptionAssembler(
            call_id=self.id,
            languages={"original": speaker.language, "translation": listener.language},
            send_to_speaker=speaker.send,
            send_to_listener=listener.send,
            final_after_s=caption_final_s,
        )
        self._captions.append(captions)
        same_language = speaker.language == listener.language
        return Direction(
            engine=None if same_language else engine,
            target_language=listener.language,
            mixer=listener.mixer,
            listener=_DirectionEvents(captions, listener),
            labels=SessionLabels(call_id=self.id, participant_id=speaker.id),
            hear_original=listener.hear_original,
            unavailable_reason=None if same_language else unavailable_reason,
            source_language=speaker.language,
        )
