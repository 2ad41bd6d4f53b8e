"""Turn a direction's transcript deltas into `caption` messages."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, Literal

from media.engines.base import TranscriptKind
from signaling import messages

# A caption longer than this is made final and a new utterance begins, so one
# endless monologue cannot grow a message without bound.
MAX_CAPTION_CHARS = 2000

Send = Callable[[dict[str, Any]], None]

_utterance_numbers = itertools.count(1)


class CaptionAssembler:
    """Group one speaker's deltas into utterances and send them to both sides.

    The original and the translation of one phrase share an utterance id. An
    utterance becomes final when neither kind has new text for `final_after_s`.
    """

    def __init__(
        self,
        *,
        call_id: str,
        languages: dict[TranscriptKind, str],
        send_to_speaker: Send,
        send_to_listener: Send,
        final_after_s: float,
    ) -> None:
        self._call_id = call_id
        self._languages = languages
        self._send_to_speaker = send_to_speaker
        self._send_to_listener = send_to_listener
        self._final_after_s = final_after_s
        self._utterance_id: str | None = None
        self._texts: dict[TranscriptKind, str] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, kind: TranscriptKind, delta: str) -> None:
        if self._utterance_id is None:
            self._utterance_id = f"u{next(_utterance_numbers)}"
            self._texts = {}
        text = self._texts.get(kind, "") + delta
        if not text.strip():
            return
        self._texts[kind] = text.lstrip()
        self._emit(kind, final=False)
        if len(self._texts[kind]) > MAX_CAPTION_CHARS:
            self.finish()
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._final_after_s, self.finish)

    def finish(self) -> None:
        """Send the current utterance as final, if there is one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._utterance_id is None:
            return
        for kind in self._texts:
            self._emit(kind, final=True)
        self._utterance_id = None
        self._texts = {}

    def _emit(self, kind: TranscriptKind, *, final: bool) -> None:
        assert self._utterance_id is not None
        speakers: tuple[tuple[Literal["self", "partner"], Send], ...] = (
            ("self", self._send_to_speaker),
            ("partner", self._send_to_listener),
        )
        for speaker, send in speakers:
            send(
                messages.caption(
                    call_id=self._call_id,
                    speaker=speaker,
                    kind=kind,
                    language=self._languages[kind],
                    utterance_id=self._utterance_id,
                    text=self._texts[kind],
                    final=final,
                )
            )
