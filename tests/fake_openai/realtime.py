"""Wire protocol of the fake Realtime Translation API.

Client events are validated with the `openai` SDK's own pydantic models, and
server events are built from them, so the shapes here follow the installed SDK.
`EchoTranslator` is the fake's "translation": it returns the input audio
unchanged, with silence replaced by exact zeros, and names every phrase in the
transcripts ("segment 1", "segment 2", ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, cast, get_args

import numpy as np
import pydantic
from openai.types.realtime import (
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeTranslationClientEvent,
    RealtimeTranslationInputAudioBufferAppendEvent,
    RealtimeTranslationInputTranscriptDeltaEvent,
    RealtimeTranslationOutputAudioDeltaEvent,
    RealtimeTranslationOutputTranscriptDeltaEvent,
    RealtimeTranslationSession,
    RealtimeTranslationSessionClosedEvent,
    RealtimeTranslationSessionCloseEvent,
    RealtimeTranslationSessionCreatedEvent,
    RealtimeTranslationSessionUpdatedEvent,
    RealtimeTranslationSessionUpdateEvent,
    RealtimeTranslationSessionUpdateRequest,
)
from openai.types.realtime import realtime_translation_session as session_types
from openai.types.realtime import (
    realtime_translation_session_update_request as update_types,
)

SAMPLE_RATE: Final = 24_000
BYTES_PER_SAMPLE: Final = 2
# The service consumes input in 200 ms engine frames (per the SDK docstring of
# `session.input_audio_buffer.append`).
FRAME_MS: Final = 200
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES: Final = FRAME_SAMPLES * BYTES_PER_SAMPLE
FRAMES_PER_DELTA: Final = 2

OUTPUT_LANGUAGES: Final = (
    "es",
    "pt",
    "fr",
    "ja",
    "ru",
    "zh",
    "de",
    "ko",
    "hi",
    "id",
    "vi",
    "it",
    "en",
)
DEFAULT_OUTPUT_LANGUAGE: Final = "es"
SESSION_MAX_DURATION_S: Final = 60 * 60
SESSION_EXPIRED_MESSAGE: Final = "Your session hit the maximum duration of 60 minutes."

# Frames with an RMS below this, in PCM16 units (about -50 dBFS), are silence.
SILENCE_RMS: Final = 100.0

ClientEvent: TypeAlias = (
    RealtimeTranslationSessionUpdateEvent
    | RealtimeTranslationInputAudioBufferAppendEvent
    | RealtimeTranslationSessionCloseEvent
)
ServerEvent: TypeAlias = (
    RealtimeErrorEvent
    | RealtimeTranslationSessionCreatedEvent
    | RealtimeTranslationSessionUpdatedEvent
    | RealtimeTranslationSessionClosedEvent
    | RealtimeTranslationInputTranscriptDeltaEvent
    | RealtimeTranslationOutputTranscriptDeltaEvent
    | RealtimeTranslationOutputAudioDeltaEvent
)


def _client_event_models() -> dict[str, type[ClientEvent]]:
    # The SDK alias is Annotated[Union[...], PropertyInfo(discriminator="type")],
    # and each member declares its tag as a one-value Literal.
    union = get_args(RealtimeTranslationClientEvent)[0]
    models: dict[str, type[ClientEvent]] = {}
    for model in get_args(union):
        (tag,) = get_args(model.model_fields["type"].annotation)
        models[cast(str, tag)] = cast("type[ClientEvent]", model)
    return models


CLIENT_EVENT_MODELS: Final = _client_event_models()


class ClientEventError(Exception):
    """A client event that the API rejects with an `error` server event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


def new_event_id() -> str:
    return f"event_{secrets.token_hex(10)}"


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(10)}"


def _quoted_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{value}'" for value in values]
    if len(quoted) < 2:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def decode_event_object(text: str | bytes) -> dict[str, Any]:
    """Parse one WebSocket text message into a JSON object.

    Raises ClientEventError with code `invalid_json` when the text is not
    JSON or not a JSON object.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ClientEventError(
            "invalid_json",
            f"Invalid JSON in client event: {exc}. "
            "Send each event as one JSON object in a text message.",
        ) from exc
    if not isinstance(data, dict):
        raise ClientEventError(
            "invalid_json",
            f"Invalid client event: expected a JSON object, got {type(data).__name__}.",
        )
    return data


def validate_client_event(data: dict[str, Any]) -> ClientEvent:
    """Validate a decoded client event with the SDK model for its `type`.

    Raises ClientEventError for an unknown type, a missing or mistyped field,
    an invalid value, and any field the SDK model does not declare.
    """
    raw_event_id = data.get("event_id")
    event_id = raw_event_id if isinstance(raw_event_id, str) else None
    event_type = data.get("type")
    if event_type is None:
        raise ClientEventError(
            "missing_required_parameter",
            "Missing required parameter: 'type'.",
            param="type",
            event_id=event_id,
        )
    if not isinstance(event_type, str):
        raise ClientEventError(
            "invalid_type",
            f"Invalid type for 'type': expected a string, got {event_type!r}.",
            param="type",
            event_id=event_id,
        )
    model = CLIENT_EVENT_MODELS.get(event_type)
    if model is None:
        supported = _quoted_list(list(CLIENT_EVENT_MODELS))
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: '{event_type}'. Supported values are: {supported}.",
            param="type",
            event_id=event_id,
        )
    try:
        event = model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _from_validation_error(exc, event_id) from exc
    unknown = _find_unknown_parameter(event, prefix="")
    if unknown is not None:
        raise _unknown_parameter_error(unknown, event_id)
    return event


def _from_validation_error(
    exc: pydantic.ValidationError, event_id: str | None
) -> ClientEventError:
    error = exc.errors()[0]
    param = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return ClientEventError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}'.",
            param=param,
            event_id=event_id,
        )
    # pydantic names type mismatches "string_type", "model_type", "int_type"...
    code = "invalid_type" if error["type"].endswith("_type") else "invalid_value"
    kind = "type" if code == "invalid_type" else "value"
    return ClientEventError(
        code,
        f"Invalid {kind} for '{param}': {error['msg']}.",
        param=param,
        event_id=event_id,
    )


def _find_unknown_parameter(model: pydantic.BaseModel, *, prefix: str) -> str | None:
    # The SDK models allow extra fields, so fields they do not declare end up
    # in `model_extra`. The real API rejects them.
    if model.model_extra:
        return prefix + sorted(model.model_extra)[0]
    for name in sorted(model.model_fields_set):
        value = getattr(model, name)
        if isinstance(value, pydantic.BaseModel):
            found = _find_unknown_parameter(value, prefix=f"{prefix}{name}.")
            if found is not None:
                return found
    return None


def _unknown_parameter_error(param: str, event_id: str | None) -> ClientEventError:
    message = f"Unknown parameter: '{param}'."
    if param in ("session.type", "session.model"):
        field_name = param.removeprefix("session.")
        message += (
            f" The session {field_name} is set when the session is created"
            " and cannot be changed with session.update."
        )
    return ClientEventError(
        "unknown_parameter", message, param=param, event_id=event_id
    )


def decode_audio(audio: str, event_id: str | None) -> bytes:
    """Decode the base64 `audio` of an append event into PCM16 bytes.

    Raises ClientEventError with code `invalid_value` unless the text is
    valid, non-empty base64 of an even number of bytes.
    """
    try:
        pcm = base64.b64decode(audio, validate=True)
    except binascii.Error as exc:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value for 'audio': not valid base64 ({exc}). Send "
            "base64-encoded 24 kHz PCM16 mono little-endian audio.",
            param="audio",
            event_id=event_id,
        ) from exc
    if not pcm:
        raise ClientEventError(
            "invalid_value",
            "Invalid value for 'audio': the audio is empty.",
            param="audio",
            event_id=event_id,
        )
    if len(pcm) % BYTES_PER_SAMPLE:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value for 'audio': {len(pcm)} bytes is not a whole number "
            "of PCM16 samples. Send 24 kHz PCM16 mono audio, 2 bytes per sample.",
            param="audio",
            event_id=event_id,
        )
    return pcm


@dataclass(eq=False)
class FakeSession:
    """Configuration, counters and close status of one translation session."""

    id: str
    model: str
    expires_at: int
    output_language: str = DEFAULT_OUTPUT_LANGUAGE
    transcription_model: str | None = None
    noise_reduction: session_types.AudioInputNoiseReduction | None = None
    # True once a session.update has been accepted.
    configured: bool = False
    # Append events received while `configured` was still False.
    audio_before_configured: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    # The `type` of every client event that was a JSON object with a string
    # `type`, including events that were then rejected.
    event_types: list[str] = field(default_factory=list)
    # The `code` of every error event sent to this session.
    errors_sent: list[str] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None

    def to_model(self) -> RealtimeTranslationSession:
        transcription = None
        if self.transcription_model is not None:
            transcription = session_types.AudioInputTranscription(
                model=self.transcription_model
            )
        return RealtimeTranslationSession(
            id=self.id,
            type="translation",
            model=self.model,
            expires_at=self.expires_at,
            audio=session_types.Audio(
                input=session_types.AudioInput(
                    transcription=transcription,
                    noise_reduction=self.noise_reduction,
                ),
                output=session_types.AudioOutput(language=self.output_language),
            ),
        )

    def apply_update(
        self, update: RealtimeTranslationSessionUpdateRequest, event_id: str | None
    ) -> None:
        """Apply a validated session.update, or change nothing and raise.

        Raises ClientEventError with code `invalid_value` for an unsupported
        output language or an empty transcription model.
        """
        language = self.output_language
        transcription_model = self.transcription_model
        noise_reduction = self.noise_reduction
        audio = update.audio
        output = audio.output if audio is not None else None
        if output is not None and "language" in output.model_fields_set:
            language = _validate_language(output.language, event_id)
        if audio is not None and audio.input is not None:
            requested = audio.input
            if "transcription" in requested.model_fields_set:
                transcription_model = _validate_transcription_model(
                    requested.transcription, event_id
                )
            if "noise_reduction" in requested.model_fields_set:
                noise_reduction = _merge_noise_reduction(
                    self.noise_reduction, requested.noise_reduction
                )
        self.output_language = language
        self.transcription_model = transcription_model
        self.noise_reduction = noise_reduction
        self.configured = True


def _validate_language(language: str | None, event_id: str | None) -> str:
    if language in OUTPUT_LANGUAGES:
        return language
    raise ClientEventError(
        "invalid_value",
        f"Invalid value: {language!r}. Supported values are: "
        f"{_quoted_list(OUTPUT_LANGUAGES)}.",
        param="session.audio.output.language",
        event_id=event_id,
    )


def _validate_transcription_model(
    transcription: update_types.AudioInputTranscription | None,
    event_id: str | None,
) -> str | None:
    if transcription is None:
        return None
    model = transcription.model
    if not model:
        raise ClientEventError(
            "invalid_value",
            "Invalid value for 'session.audio.input.transcription.model': "
            "the model name is empty.",
            param="session.audio.input.transcription.model",
            event_id=event_id,
        )
    return model


def _merge_noise_reduction(
    current: session_types.AudioInputNoiseReduction | None,
    requested: update_types.AudioInputNoiseReduction | None,
) -> session_types.AudioInputNoiseReduction | None:
    # Null disables noise reduction. An omitted strength keeps the current
    # strength, or starts at 1 when noise reduction is first enabled (SDK docs).
    if requested is None:
        return None
    strength = requested.strength
    if strength is None:
        strength = current.strength if current is not None else 1.0
    return session_types.AudioInputNoiseReduction(
        type=requested.type, strength=strength
    )


def encode_event(event: ServerEvent) -> str:
    """Serialise a server event as the API sends it.

    Unset optional fields are left out, except in error events, whose `param`
    and `event_id` the API sends as null.
    """
    if isinstance(event, RealtimeErrorEvent):
        return event.model_dump_json()
    return event.model_dump_json(exclude_none=True)


def session_created_event(
    session: FakeSession,
) -> RealtimeTranslationSessionCreatedEvent:
    return RealtimeTranslationSessionCreatedEvent(
        type="session.created", event_id=new_event_id(), session=session.to_model()
    )


def session_updated_event(
    session: FakeSession,
) -> RealtimeTranslationSessionUpdatedEvent:
    return RealtimeTranslationSessionUpdatedEvent(
        type="session.updated", event_id=new_event_id(), session=session.to_model()
    )


def session_closed_event() -> RealtimeTranslationSessionClosedEvent:
    return RealtimeTranslationSessionClosedEvent(
        type="session.closed", event_id=new_event_id()
    )


def error_event(
    code: str,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    event_id: str | None = None,
) -> RealtimeErrorEvent:
    return RealtimeErrorEvent(
        type="error",
        event_id=new_event_id(),
        error=RealtimeError(
            type=error_type,
            code=code,
            message=message,
            param=param,
            event_id=event_id,
        ),
    )


def input_transcript_events(
    phrase: int, elapsed_ms: int
) -> list[RealtimeTranslationInputTranscriptDeltaEvent]:
    return [
        RealtimeTranslationInputTranscriptDeltaEvent(
            type="session.input_transcript.delta",
            event_id=new_event_id(),
            delta=delta,
            elapsed_ms=elapsed_ms,
        )
        for delta in ("segment ", str(phrase))
    ]


def output_transcript_events(
    phrase: int, language: str, elapsed_ms: int
) -> list[RealtimeTranslationOutputTranscriptDeltaEvent]:
    return [
        RealtimeTranslationOutputTranscriptDeltaEvent(
            type="session.output_transcript.delta",
            event_id=new_event_id(),
            delta=delta,
            elapsed_ms=elapsed_ms,
        )
        for delta in (f"[{language}] ", "segment ", str(phrase))
    ]


def output_audio_event(
    pcm: bytes, elapsed_ms: int
) -> RealtimeTranslationOutputAudioDeltaEvent:
    return RealtimeTranslationOutputAudioDeltaEvent(
        type="session.output_audio.delta",
        event_id=new_event_id(),
        delta=base64.b64encode(pcm).decode("ascii"),
        format="pcm16",
        sample_rate=SAMPLE_RATE,
        channels=1,
        elapsed_ms=elapsed_ms,
    )


@dataclass(frozen=True)
class PhraseStart:
    """The first non-silent frame after silence (or at the start)."""

    number: int
    elapsed_ms: int


@dataclass(frozen=True)
class PhraseEnd:
    """The first silent frame after a phrase, or the end of input."""

    number: int


@dataclass(frozen=True)
class AudioChunk:
    """Translated audio for one output delta: all speech or all silence."""

    pcm: bytes
    elapsed_ms: int
    speech: bool
    # Number of the phrase whose first frame this chunk contains.
    starts_phrase: int | None

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (BYTES_PER_SAMPLE * SAMPLE_RATE)


TranslatorOutput: TypeAlias = PhraseStart | PhraseEnd | AudioChunk


def frame_rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples * samples)))


class EchoTranslator:
    """Split input into 200 ms frames and echo them back as translated audio.

    Silent frames come back as zeros. An output chunk holds up to
    FRAMES_PER_DELTA frames and never mixes speech with silence, so a phrase
    of an odd number of frames ends with a one-frame chunk. `elapsed_ms` is
    the input time at which a chunk's first frame starts.
    """

    def __init__(self, *, silence_rms: float = SILENCE_RMS) -> None:
        self._silence_rms = silence_rms
        self._buffer = bytearray()
        self._samples_done = 0
        self._phrases = 0
        self._in_phrase = False
        self._pending: list[bytes] = []
        self._pending_speech = False
        self._pending_elapsed_ms = 0
        self._pending_phrase: int | None = None

    def feed(self, pcm: bytes) -> list[TranslatorOutput]:
        """Buffer PCM16 input and translate every frame it completes."""
        self._buffer += pcm
        outputs: list[TranslatorOutput] = []
        while len(self._buffer) >= FRAME_BYTES:
            frame = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            outputs.extend(self._translate_frame(frame))
        return outputs

    def flush(self) -> list[TranslatorOutput]:
        """Translate the buffered partial frame and emit everything pending."""
        outputs: list[TranslatorOutput] = []
        if self._buffer:
            outputs.extend(self._translate_frame(bytes(self._buffer)))
            self._buffer.clear()
        outputs.extend(self._emit_pending())
        if self._in_phrase:
            self._in_phrase = False
            outputs.append(PhraseEnd(self._phrases))
        return outputs

    def _translate_frame(self, frame: bytes) -> list[TranslatorOutput]:
        elapsed_ms = self._samples_done * 1000 // SAMPLE_RATE
        self._samples_done += len(frame) // BYTES_PER_SAMPLE
        speech = frame_rms(frame) >= self._silence_rms
        outputs: list[TranslatorOutput] = []
        if self._pending and speech != self._pending_speech:
            outputs.extend(self._emit_pending())

        started: int | None = None
        if speech and not self._in_phrase:
            self._phrases += 1
            self._in_phrase = True
            started = self._phrases
            outputs.append(PhraseStart(self._phrases, elapsed_ms))
        elif not speech and self._in_phrase:
            self._in_phrase = False
            outputs.append(PhraseEnd(self._phrases))

        if not self._pending:
            self._pending_speech = speech
            self._pending_elapsed_ms = elapsed_ms
            self._pending_phrase = started
        self._pending.append(frame if speech else bytes(len(frame)))
        if len(self._pending) >= FRAMES_PER_DELTA:
            outputs.extend(self._emit_pending())
        return outputs

    def _emit_pending(self) -> list[TranslatorOutput]:
        if not self._pending:
            return []
        chunk = AudioChunk(
            pcm=b"".join(self._pending),
            elapsed_ms=self._pending_elapsed_ms,
            speech=self._pending_speech,
            starts_phrase=self._pending_phrase,
        )
        self._pending = []
        return [chunk]
