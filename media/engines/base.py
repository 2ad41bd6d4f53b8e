"""The interface every translation engine implements.

An engine opens one session per direction of a call. The direction pushes the
speaker's audio into the session; the session reports translated audio,
transcript deltas and its state to a listener through plain callbacks, which
must not block.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, Protocol

from media.audio import Pcm

TranscriptKind = Literal["original", "translation"]
State = Literal["ready", "degraded", "unavailable"]


@dataclass(frozen=True)
class SessionLabels:
    """Ids that a session puts on its log lines."""

    call_id: str
    participant_id: str


class SessionListener(Protocol):
    def on_audio(self, pcm: Pcm, rate: int) -> None:
        """Translated speech, mono int16 at `rate`."""

    def on_transcript(self, kind: TranscriptKind, delta: str) -> None:
        """An append-only piece of the original or translated transcript."""

    def on_state(self, state: State, reason: str) -> None:
        """The session became usable (`ready`) or stopped translating."""


class EngineSession(abc.ABC):
    """One direction's connection to a translation service."""

    input_rate: int

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""

    @abc.abstractmethod
    def push(self, pcm: Pcm) -> None:
        """Queue the speaker's mono int16 audio at `input_rate`; never blocks."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the upstream connection and wait for its tasks to end."""


class Engine(abc.ABC):
    """A factory of sessions, one per direction of a call."""

    name: str

    @abc.abstractmethod
    def open_session(
        self,
        *,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
    ) -> EngineSession:
        """Create a session that translates into `target_language`."""
