"""Fake OpenAI REST endpoints of the chained pipeline: transcription, chat and
speech.

Requests are validated with the installed SDK's own parameter types
(`openai.types.audio`, `openai.types.chat`) through pydantic, and rejected
with the API's HTTP 400 JSON error when a field is missing, mistyped,
unknown, or names a model of another kind. Responses are built from the SDK's
response models. The responses are deterministic, so tests can trace an
utterance through all three steps:
- a transcription returns "utterance N lasting D s", N counting uploads from
  1 and D the WAV's duration, and keeps the uploaded audio;
- a chat completion returns "[xx] " and the last user message, where xx is
  the language code after "language code " in the system message ("??"
  when there is none);
- speech for a text that names "utterance N" streams upload N's own audio as
  24 kHz PCM16, so the listener hears the speaker; any other text, or any
  text when `speech_echo` is False, streams a 440 Hz tone of
  `speech_s_per_char` seconds per character.

Limits of the fake, not of the API: transcription reads only PCM WAV files
and answers only `json` and `text`; speech writes only `pcm` and `wav`, and
nothing is streamed as server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import re
import secrets
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args, get_type_hints

import numpy as np
import numpy.typing as npt
import pydantic
import typing_extensions
from aiohttp import BodyPartReader, web
from openai.types import CompletionUsage
from openai.types.audio import speech_create_params, transcription_create_params
from openai.types.audio.speech_model import SpeechModel
from openai.types.audio.transcription import Transcription, UsageDuration
from openai.types.audio_model import AudioModel
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    completion_create_params,
)
from openai.types.chat.chat_completion import Choice
from openai.types.shared.chat_model import ChatModel

from ..support.speech import resample

Endpoint = Literal["transcriptions", "chat", "speech"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("transcriptions", "chat", "speech")
PATHS: Final[dict[Endpoint, str]] = {
    "transcriptions": "/v1/audio/transcriptions",
    "chat": "/v1/chat/completions",
    "speech": "/v1/audio/speech",
}

SPEECH_RATE: Final = 24_000
# Speech is streamed in 100 ms chunks.
SPEECH_CHUNK_BYTES: Final = SPEECH_RATE // 10 * 2
SPEECH_S_PER_CHAR: Final = 0.06
TONE_HZ: Final = 440.0
# The API takes files up to 25 MB.
MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024
# A hung request gets no response for this long, or until the server stops.
HANG_MAX_S: Final = 60.0
UPLOADS_KEPT: Final = 256

TRANSCRIPTION_MODELS: Final = frozenset(get_args(AudioModel))
SPEECH_MODELS: Final = frozenset(get_args(SpeechModel))
CHAT_MODELS: Final = frozenset(get_args(ChatModel))
UTTERANCE_PATTERN: Final = re.compile(r"utterance (\d+)")
LANGUAGE_PATTERN: Final = re.compile(r"language code ([a-z]{2,3})")

Samples = npt.NDArray[np.int16]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """Audio received by the transcription endpoint."""

    number: int
    samples: Samples
    rate: int
    model: str
    language: str | None
    prompt: str | None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class RestRecord:
    """One request to a REST endpoint and the status it got."""

    endpoint: Endpoint
    status: int
    # Event loop time when the request arrived.
    received_at: float
    model: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """An injected failure: an HTTP error, or a request that gets no response."""

    kind: Literal["status", "hang"]
    status: int = 500
    retry_after_s: float | None = None
    code: str | None = None


class ApiError(Exception):
    """A request the API rejects with an HTTP error and a JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        body = {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }
        return web.json_response(body, status=self.status, headers=headers)


def _without_file(typed_dict: type) -> Any:
    """Copy a TypedDict without its `file` key, which pydantic cannot validate
    (the SDK types it as `IO[bytes]` among others); the fake reads it itself."""
    hints = get_type_hints(typed_dict, include_extras=True)
    del hints["file"]
    return typing_extensions.TypedDict(  # type: ignore[operator]
        f"{typed_dict.__name__}WithoutFile", hints, total=False
    )


_TRANSCRIPTION_PARAMS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    _without_file(transcription_create_params.TranscriptionCreateParamsNonStreaming)
)
_CHAT_PARAMS = pydantic.TypeAdapter(
    completion_create_params.CompletionCreateParamsNonStreaming
)
_SPEECH_PARAMS = pydantic.TypeAdapter(speech_create_params.SpeechCreateParams)


def _known_keys(typed_dict: type) -> frozenset[str]:
    return frozenset(get_type_hints(typed_dict))


_TRANSCRIPTION_KEYS = _known_keys(
    transcription_create_params.TranscriptionCreateParamsNonStreaming
)
_CHAT_KEYS = _known_keys(completion_create_params.CompletionCreateParamsNonStreaming)
_SPEECH_KEYS = _known_keys(speech_create_params.SpeechCreateParams)


class FakeRest:
    """The three REST endpoints, their records and their injected faults."""

    def __init__(
        self, api_keys: Callable[[], frozenset[str] | None] = lambda: None
    ) -> None:
        # Returns the accepted keys, read at each request; None accepts any.
        self._api_keys = api_keys
        self.uploads: deque[Upload] = deque(maxlen=UPLOADS_KEPT)
        self.records: list[RestRecord] = []
        # Seconds between the chunks of a speech stream.
        self.speech_chunk_delay_s = 0.0
        # False speaks every text as a tone, even one that names an upload.
        self.speech_echo = True
        self.speech_s_per_char = SPEECH_S_PER_CHAR
        self._upload_numbers = itertools.count(1)
        self._faults: dict[Endpoint, deque[Fault]] = {e: deque() for e in ENDPOINTS}
        self._lasting: dict[Endpoint, Fault | None] = dict.fromkeys(ENDPOINTS)
        self._stopping = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATHS["transcriptions"], self._handle_transcription)
        app.router.add_post(PATHS["chat"], self._handle_chat)
        app.router.add_post(PATHS["speech"], self._handle_speech)

    def stop(self) -> None:
        """Release hung requests."""
        self._stopping.set()

    def fail(
        self,
        endpoint: Endpoint,
        status: int,
        *,
        count: int = 1,
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next `count` requests to `endpoint` with HTTP `status`."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be from 400 to 599, got {status!r}")
        fault = Fault("status", status, retry_after_s, code)
        self._faults[endpoint].extend([fault] * count)

    def fail_always(
        self, endpoint: Endpoint, status: int, *, code: str | None = None
    ) -> None:
        """Answer every request to `endpoint` with `status` until `clear()`."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be from 400 to 599, got {status!r}")
        self._lasting[endpoint] = Fault("status", status, None, code)

    def hang(self, endpoint: Endpoint, *, count: int = 1) -> None:
        """Let the next `count` requests to `endpoint` wait without an answer."""
        self._faults[endpoint].extend([Fault("hang")] * count)

    def clear(self) -> None:
        for queue in self._faults.values():
            queue.clear()
        self._lasting = dict.fromkeys(ENDPOINTS)

    def records_of(self, endpoint: Endpoint) -> list[RestRecord]:
        return [r for r in self.records if r.endpoint == endpoint]

    def upload(self, number: int) -> Upload | None:
        for upload in self.uploads:
            if upload.number == number:
                return upload
        return None

    # Handlers

    async def _handle_transcription(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("transcriptions", request, self._transcribe)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("chat", request, self._complete)

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("speech", request, self._speak)

    async def _serve(
        self,
        endpoint: Endpoint,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[_Handled]],
    ) -> web.StreamResponse:
        received_at = asyncio.get_running_loop().time()
        fault = self._next_fault(endpoint)
        if fault is not None and fault.kind == "hang":
            self.records.append(RestRecord(endpoint, 0, received_at))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HANG_MAX_S)
            raise web.HTTPServiceUnavailable()
        try:
            self._check_auth(request)
            if fault is not None:
                raise _fault_error(fault)
            model, body, response = await handler(request)
        except ApiError as exc:
            self.records.append(RestRecord(endpoint, exc.status, received_at))
            headers = {}
            if fault is not None and fault.retry_after_s is not None:
                headers["retry-after-ms"] = str(round(fault.retry_after_s * 1000))
                headers["retry-after"] = str(max(1, round(fault.retry_after_s)))
            return exc.response(headers)
        self.records.append(RestRecord(endpoint, 200, received_at, model, body))
        if isinstance(response, _SpeechStream):
            return await response.send(request)
        return response

    def _next_fault(self, endpoint: Endpoint) -> Fault | None:
        queue = self._faults[endpoint]
        if queue:
            return queue.popleft()
        return self._lasting[endpoint]

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key. Send it in an Authorization "
                "header with Bearer auth (Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        api_keys = self._api_keys()
        if api_keys is not None and token not in api_keys:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _transcribe(self, request: web.Request) -> _Handled:
        fields, file_bytes = await _read_multipart(request)
        params = _validate(
            _TRANSCRIPTION_PARAMS, _TRANSCRIPTION_KEYS - {"file"}, fields
        )
        model = str(params["model"])
        _check_model(model, TRANSCRIPTION_MODELS, "audio transcriptions")
        response_format = params.get("response_format", "json")
        if response_format not in ("json", "text"):
            raise ApiError(
                400,
                f"response_format '{response_format}' is not compatible with "
                f"model '{model}'. Use 'json' or 'text'.",
                code="unsupported_value",
                param="response_format",
            )
        samples, rate = _decode_wav(file_bytes)
        upload = Upload(
            number=next(self._upload_numbers),
            samples=samples,
            rate=rate,
            model=model,
            language=params.get("language"),
            prompt=params.get("prompt"),
        )
        self.uploads.append(upload)
        text = f"utterance {upload.number} lasting {upload.duration_s:.2f} s"
        if response_format == "text":
            return model, fields, web.Response(text=text + "\n")
        result = Transcription(
            text=text,
            usage=UsageDuration(seconds=round(upload.duration_s, 3), type="duration"),
        )
        return model, fields, web.json_response(result.model_dump(mode="json"))

    async def _complete(self, request: web.Request) -> _Handled:
        body = await _read_json(request)
        params = _validate(_CHAT_PARAMS, _CHAT_KEYS, body)
        model = str(params["model"])
        _check_model(model, CHAT_MODELS, "chat completions")
        messages = body["messages"]
        if not messages:
            raise ApiError(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum "
                "length 1.",
                code="empty_array",
                param="messages",
            )
        system = " ".join(
            _text_of(m) for m in messages if m.get("role") in ("system", "developer")
        )
        users = [_text_of(m) for m in messages if m.get("role") == "user"]
        match = LANGUAGE_PATTERN.search(system)
        language = match.group(1) if match else "??"
        text = f"[{language}] {users[-1] if users else ''}"
        words = len(text.split())
        completion = ChatCompletion(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            object="chat.completion",
            created=int(time.time()),
            model=model,
            choices=[
                Choice(
                    index=0,
                    finish_reason="stop",
                    logprobs=None,
                    message=ChatCompletionMessage(role="assistant", content=text),
                )
            ],
            usage=CompletionUsage(
                prompt_tokens=len(system.split()) + words,
                completion_tokens=words,
                total_tokens=len(system.split()) + 2 * words,
            ),
        )
        return model, body, web.json_response(completion.model_dump(mode="json"))

    async def _speak(self, request: web.Request) -> _Handled:
        body = await _read_json(request)
        params = _validate(_SPEECH_PARAMS, _SPEECH_KEYS, body)
        model = str(params["model"])
        _check_model(model, SPEECH_MODELS, "speech")
        response_format = params.get("response_format", "mp3")
        if response_format not in ("pcm", "wav"):
            raise ApiError(
                400,
                f"This fake writes only 'pcm' and 'wav', not '{response_format}'.",
                code="unsupported_value",
                param="response_format",
            )
        if params.get("stream_format", "audio") != "audio":
            raise ApiError(
                400,
                "This fake streams only raw audio: stream_format must be 'audio'.",
                code="unsupported_value",
                param="stream_format",
            )
        text = str(params["input"])
        if not text.strip():
            raise ApiError(
                400,
                "Invalid 'input': empty string.",
                code="empty_string",
                param="input",
            )
        pcm = self._speech_for(text)
        return (
            model,
            body,
            _SpeechStream(pcm, response_format, self.speech_chunk_delay_s),
        )

    def _speech_for(self, text: str) -> bytes:
        match = UTTERANCE_PATTERN.search(text)
        upload = self.upload(int(match.group(1))) if match else None
        if upload is not None and self.speech_echo:
            samples = resample(upload.samples, upload.rate, SPEECH_RATE)
        else:
            count = int(len(text) * self.speech_s_per_char * SPEECH_RATE)
            t = np.arange(count) / SPEECH_RATE
            samples = (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        return samples.astype("<i2").tobytes()


class _SpeechStream:
    """A speech response sent in chunks, as the API streams it."""

    def __init__(self, pcm: bytes, response_format: str, delay_s: float) -> None:
        self._pcm = pcm
        self._format = response_format
        self._delay_s = delay_s

    async def send(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": f"audio/{self._format}"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = self._pcm
        if self._format == "wav":
            data = _wav_bytes(self._pcm, SPEECH_RATE)
        try:
            for start in range(0, len(data), SPEECH_CHUNK_BYTES):
                if start and self._delay_s:
                    await asyncio.sleep(self._delay_s)
                await response.write(data[start : start + SPEECH_CHUNK_BYTES])
            await response.write_eof()
        except ConnectionResetError:
            # The client stopped reading, as a closed session does.
            logger.debug("speech stream closed by the client")
        return response


# What a handler returns: the model, the request body and the response.
_Handled = tuple[str, dict[str, Any], web.Response | _SpeechStream]


def _fault_error(fault: Fault) -> ApiError:
    if fault.status == 429:
        code = fault.code or "rate_limit_exceeded"
        if code == "insufficient_quota":
            message = (
                "You exceeded your current quota, please check your plan and "
                "billing details."
            )
            return ApiError(429, message, error_type=code, code=code)
        return ApiError(
            429,
            "Rate limit reached for requests. Retry after a short delay.",
            error_type="requests",
            code=code,
        )
    if fault.status >= 500:
        return ApiError(
            fault.status,
            "The server had an error while processing your request.",
            error_type="server_error",
            code=fault.code,
        )
    if fault.status == 401:
        return ApiError(
            401,
            "Incorrect API key provided.",
            code=fault.code or "invalid_api_key",
        )
    return ApiError(fault.status, f"Request rejected with HTTP {fault.status}.")


def _validate(
    adapter: pydantic.TypeAdapter[Any], known: frozenset[str], data: dict[str, Any]
) -> dict[str, Any]:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ApiError(
            400,
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    try:
        params = dict(adapter.validate_python(data))
    except pydantic.ValidationError as exc:
        raise _validation_error(exc, prefix="") from exc
    # Iterable fields validate lazily; read them to validate every item.
    for key, value in params.items():
        if isinstance(value, str | bytes | dict | list) or not hasattr(
            value, "__iter__"
        ):
            continue
        try:
            params[key] = list(value)
        except pydantic.ValidationError as exc:
            raise _validation_error(exc, prefix=key) from exc
    return params


def _validation_error(exc: pydantic.ValidationError, *, prefix: str) -> ApiError:
    error = exc.errors()[0]
    param = prefix
    for part in error["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not part[:1].isupper():
            # Names of union members, such as ChatCompletionUserMessageParam,
            # are pydantic's, not the API's.
            param += f".{part}" if param else part
    if error["type"] == "missing":
        return ApiError(
            400,
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    kind = "type" if error["type"].endswith("_type") else "value"
    return ApiError(
        400,
        f"Invalid {kind} for '{param}': {error['msg']}.",
        code=f"invalid_{kind}",
        param=param,
    )


def _check_model(model: str, allowed: frozenset[str], purpose: str) -> None:
    if model in allowed:
        return
    if model in TRANSCRIPTION_MODELS | SPEECH_MODELS | CHAT_MODELS:
        raise ApiError(
            400,
            f"The model '{model}' does not support {purpose}.",
            code="invalid_value",
            param="model",
        )
    raise ApiError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
    )


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. Send valid JSON.",
            code="invalid_json",
        ) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


async def _read_multipart(request: web.Request) -> tuple[dict[str, Any], bytes]:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(
            400,
            "Invalid Content-Type header; expected multipart/form-data.",
            code="invalid_content_type",
        )
    fields: dict[str, Any] = {}
    file_bytes: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "Nested multipart bodies are not supported.")
        data = await part.read(decode=True)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(
                413, f"The file exceeds the maximum of {MAX_UPLOAD_BYTES} bytes."
            )
        name = part.name or ""
        if name == "file":
            file_bytes = bytes(data)
        elif name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(data.decode())
        else:
            fields[name] = data.decode()
    if file_bytes is None:
        raise ApiError(
            400,
            "Missing required parameter: 'file'.",
            code="missing_required_parameter",
            param="file",
        )
    return fields, file_bytes


def _decode_wav(data: bytes) -> tuple[Samples, int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            if reader.getsampwidth() != 2:
                raise ApiError(400, "This fake reads only 16-bit PCM WAV files.")
            rate = reader.getframerate()
            channels = reader.getnchannels()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ApiError(
            400,
            "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', "
            "'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            param="file",
        ) from exc
    samples = np.frombuffer(frames, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0].copy()
    if samples.size < rate // 10:
        raise ApiError(
            400,
            "Audio file is too short. Minimum audio length is 0.1 seconds.",
            code="audio_too_short",
            param="file",
        )
    return samples, rate


def _wav_bytes(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return ""
