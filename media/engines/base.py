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
class UpstreamFailure:
    """A request to the translation service that failed.

    `retryable` is False for errors that the same request cannot fix, such
    as an invalid key or an exhausted quota. `message` names the HTTP status
    and error code, never the key.
    """

    message: str
    retryable: bool
    outcome: str
    status: int | None = None
    code: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class SessionLabels:
    """Ids that a session puts on its log lines."""

    call_id: str
    participant_id: str


class SessionListener(Protocol):
    def on_audio(self, pcm: Pcm, rate: int) -> None:
        """Translated speech, mono int16 at `rate`."""

    def on_transcript(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        """An append-only piece of the original or translated transcript.

        `final` marks the last piece of an utterance, both kinds included.
        """

    def on_state(self, state: State, reason: str, *, engine: str | None = None) -> None:
        """The session became usable (`ready`) or stopped translating.

        `engine` names a fallback engine that translates in place of the
        session's own; `degraded` with an engine still carries translated
        speech, `degraded` without one carries none.
        """

    def on_failure(self, failure: UpstreamFailure) -> None:
        """A request failed after the session's own retries."""


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

    @property
    def busy(self) -> bool:
        """Whether speech heard so far is still being translated or spoken.

        A session that streams without utterances has no such state and
        returns False.
        """
        return False


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
        source_language: str | None = None,
    ) -> EngineSession:
        """Create a session that translates into `target_language`.

        `source_language`, the speaker's language when known, is a hint.
        """
