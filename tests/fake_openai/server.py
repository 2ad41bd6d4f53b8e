"""A local aiohttp server that fakes the OpenAI Realtime Translation API.

The official `openai` SDK connects to it unmodified with
`AsyncOpenAI(base_url=fake.base_url, api_key=...)` and
`client.realtime.translations.connect(model=...)`. Tests run it in their own
event loop and inject failures with `drop_sessions`, `expire_sessions`,
`send_error` and `reject_connects`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from openai.types.realtime import (
    RealtimeTranslationInputAudioBufferAppendEvent,
    RealtimeTranslationSessionUpdateEvent,
)

from .realtime import (
    FRAME_BYTES,
    SESSION_EXPIRED_MESSAGE,
    SESSION_MAX_DURATION_S,
    AudioChunk,
    ClientEventError,
    EchoTranslator,
    FakeSession,
    PhraseEnd,
    PhraseStart,
    ServerEvent,
    TranslatorOutput,
    decode_audio,
    decode_event_object,
    encode_event,
    error_event,
    input_transcript_events,
    new_session_id,
    output_audio_event,
    output_transcript_events,
    session_closed_event,
    session_created_event,
    session_updated_event,
    validate_client_event,
)
from .rest import MAX_UPLOAD_BYTES, FakeRest

logger = logging.getLogger(__name__)

TRANSLATIONS_PATH: Final = "/v1/realtime/translations"
DEFAULT_MODEL: Final = "gpt-realtime-translate"
# Maximum wait for the client's reply to a close frame, and for open
# connections when the server stops.
CLOSE_TIMEOUT_S: Final = 5.0
# Maximum number of output items waiting for their release time. When the
# outbox is full, the session stops reading client events until the sender
# catches up, so a client that does not read gets TCP backpressure.
OUTBOX_MAX_ITEMS: Final = 1000
# Burst pacing holds at most this many frames (5 s) of one phrase, then
# releases them, so that an endless phrase still produces output.
BURST_MAX_HELD_FRAMES: Final = 25
WAIT_POLL_INTERVAL_S: Final = 0.01


@dataclass
class FakeOptions:
    """Behaviour of a FakeOpenAI server. Tests may change it between calls.

    Options are read when they are used: `models` and `api_keys` at each
    upgrade, `expire_after_s` when a session opens, and the pacing options
    whenever output is scheduled.
    """

    # Delay in ms between the arrival of input audio and the release of its
    # translated output.
    lag_ms: int = 0
    # "realtime" releases each delta as soon as its input has arrived, plus
    # the lag. "burst" holds a phrase until it ends, then releases its deltas
    # `burst_speedup` times faster than real time.
    pacing: Literal["realtime", "burst"] = "realtime"
    burst_speedup: float = 8.0
    # Seconds after which each session receives `session_expired` and is
    # closed with 1001. None keeps sessions open.
    expire_after_s: float | None = None
    # Model names accepted in the `model` query parameter.
    models: frozenset[str] = frozenset({DEFAULT_MODEL})
    # Accepted API keys. None accepts any non-empty bearer token.
    api_keys: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.lag_ms < 0:
            raise ValueError(f"lag_ms must be 0 or more, got {self.lag_ms!r}")
        if self.pacing not in ("realtime", "burst"):
            raise ValueError(
                f"pacing must be 'realtime' or 'burst', got {self.pacing!r}"
            )
        if not self.burst_speedup > 0:
            raise ValueError(
                f"burst_speedup must be positive, got {self.burst_speedup!r}"
            )
        if self.expire_after_s is not None and not self.expire_after_s > 0:
            raise ValueError(
                f"expire_after_s must be positive or None, got {self.expire_after_s!r}"
            )


@dataclass(frozen=True)
class _Outgoing:
    """Server events released together at `release_at` (event loop time)."""

    release_at: float
    events: tuple[ServerEvent, ...]
    audio_bytes: int


class _SessionConnection:
    """One WebSocket connection: reads client events and paces the output."""

    def __init__(
        self,
        *,
        session: FakeSession,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        options: FakeOptions,
    ) -> None:
        self.session = session
        self._ws = ws
        self._transport = transport
        self._options = options
        self._translator = EchoTranslator()
        # A None item makes the sender close the session once the items
        # queued before it are sent.
        self._outbox: asyncio.Queue[_Outgoing | None] = asyncio.Queue(
            maxsize=OUTBOX_MAX_ITEMS
        )
        self._burst_chunks: list[tuple[tuple[ServerEvent, ...], AudioChunk]] = []
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._close_requested = False
        self._close_code_sent: int | None = None

    async def serve(self) -> None:
        """Serve the session until either side closes the socket."""
        await self._send(session_created_event(self.session))
        self._sender = asyncio.create_task(
            self._send_output(), name=f"fake-openai-output-{self.session.id}"
        )
        expire_after_s = self._options.expire_after_s
        if expire_after_s is not None:
            self._expiry = asyncio.create_task(
                self._expire_later(expire_after_s),
                name=f"fake-openai-expiry-{self.session.id}",
            )
        try:
            async for message in self._ws:
                if message.type is WSMsgType.ERROR:
                    logger.warning(
                        "session %s: WebSocket error: %r",
                        self.session.id,
                        self._ws.exception(),
                    )
                    break
                await self._handle_message(message.type, message.data)
        finally:
            await self._cancel_background()
            if self._closer is not None:
                await asyncio.wait({self._closer})
            self._record_close()

    async def close(
        self,
        code: int,
        *,
        events: Sequence[ServerEvent] = (),
        abort: bool = False,
    ) -> None:
        """Send `events`, then close with `code`, or abort the TCP connection.

        Only the first close of a connection takes effect. Later calls wait
        for it to finish.
        """
        await asyncio.shield(self._start_close(code, events=events, abort=abort))

    async def send_error(self, code: str, message: str, error_type: str) -> None:
        await self._send(error_event(code, message, error_type=error_type))

    async def _handle_message(self, kind: WSMsgType, data: Any) -> None:
        if kind is WSMsgType.BINARY:
            await self._send_client_error(
                ClientEventError(
                    "invalid_event",
                    "Binary WebSocket messages are not supported. Send each "
                    "client event as a JSON text message.",
                )
            )
            return
        if kind is not WSMsgType.TEXT:
            logger.debug("session %s: ignoring %s message", self.session.id, kind)
            return
        try:
            event_object = decode_event_object(data)
            event_type = event_object.get("type")
            if isinstance(event_type, str):
                self.session.event_types.append(event_type)
            if self._close_requested:
                # NOTE: what the real API does with events after session.close
                # is not documented in the SDK. The fake ignores them.
                logger.debug(
                    "session %s: ignoring %r after session.close",
                    self.session.id,
                    event_type,
                )
                return
            event = validate_client_event(event_object)
            if isinstance(event, RealtimeTranslationSessionUpdateEvent):
                self.session.apply_update(event.session, event.event_id)
                await self._send(session_updated_event(self.session))
            elif isinstance(event, RealtimeTranslationInputAudioBufferAppendEvent):
                await self._append(event)
            else:
                await self._finish_input()
        except ClientEventError as exc:
            await self._send_client_error(exc)

    async def _append(
        self, event: RealtimeTranslationInputAudioBufferAppendEvent
    ) -> None:
        if not self.session.configured:
            self.session.audio_before_configured += 1
        pcm = decode_audio(event.audio, event.event_id)
        self.session.input_bytes += len(pcm)
        await self._route(self._translator.feed(pcm))

    async def _finish_input(self) -> None:
        # session.close: flush what is buffered, then the sender sends
        # session.closed after the last output and closes with 1000.
        self._close_requested = True
        await self._route(self._translator.flush())
        await self._release_burst()
        await self._enqueue(None)

    async def _route(self, outputs: Iterable[TranslatorOutput]) -> None:
        for output in outputs:
            if isinstance(output, PhraseStart):
                # Input transcripts are sent only when transcription is
                # configured (SDK docs), and without the output lag.
                if self.session.transcription_model is not None:
                    for event in input_transcript_events(
                        output.number, output.elapsed_ms
                    ):
                        await self._send(event)
            elif isinstance(output, PhraseEnd):
                await self._release_burst()
            else:
                await self._schedule_chunk(output)

    async def _schedule_chunk(self, chunk: AudioChunk) -> None:
        events: list[ServerEvent] = []
        if chunk.starts_phrase is not None:
            events.extend(
                output_transcript_events(
                    chunk.starts_phrase, self.session.output_language, chunk.elapsed_ms
                )
            )
        events.append(output_audio_event(chunk.pcm, chunk.elapsed_ms))
        if self._options.pacing == "burst" and chunk.speech:
            self._burst_chunks.append((tuple(events), chunk))
            held_bytes = sum(len(held.pcm) for _, held in self._burst_chunks)
            if held_bytes >= BURST_MAX_HELD_FRAMES * FRAME_BYTES:
                await self._release_burst()
            return
        release_at = self._now() + self._options.lag_ms / 1000
        await self._enqueue(_Outgoing(release_at, tuple(events), len(chunk.pcm)))

    async def _release_burst(self) -> None:
        release_at = self._now() + self._options.lag_ms / 1000
        chunks, self._burst_chunks = self._burst_chunks, []
        for events, chunk in chunks:
            await self._enqueue(_Outgoing(release_at, events, len(chunk.pcm)))
            release_at += chunk.duration_s / self._options.burst_speedup

    async def _enqueue(self, item: _Outgoing | None) -> None:
        if self._closer is not None:
            return
        await self._outbox.put(item)

    async def _send_output(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if item is None:
                    self._start_close(WSCloseCode.OK, events=[session_closed_event()])
                    return
                delay = item.release_at - self._now()
                if delay > 0:
                    await asyncio.sleep(delay)
                for event in item.events:
                    await self._send(event)
                self.session.output_bytes += item.audio_bytes
        except Exception:
            logger.exception("session %s: output sender failed", self.session.id)
            self._start_close(WSCloseCode.INTERNAL_ERROR)

    async def _expire_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        logger.info("session %s: expiring after %.3f s", self.session.id, delay_s)
        self._start_close(
            WSCloseCode.GOING_AWAY,
            events=[error_event("session_expired", SESSION_EXPIRED_MESSAGE)],
        )

    def _start_close(
        self, code: int, *, events: Sequence[ServerEvent] = (), abort: bool = False
    ) -> asyncio.Task[None]:
        if self._closer is None:
            self._closer = asyncio.create_task(
                self._close_now(code, tuple(events), abort),
                name=f"fake-openai-close-{self.session.id}",
            )
        return self._closer

    async def _close_now(
        self, code: int, events: tuple[ServerEvent, ...], abort: bool
    ) -> None:
        await self._cancel_background()
        # A reader blocked on a full outbox must not wait for a sender that
        # is gone. `_enqueue` drops everything once the closer exists.
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if abort:
            self._close_code_sent = WSCloseCode.ABNORMAL_CLOSURE
            if self._transport is not None:
                self._transport.abort()
            return
        for event in events:
            await self._send(event)
        self._close_code_sent = code
        await self._ws.close(code=code)

    async def _cancel_background(self) -> None:
        current = asyncio.current_task()
        tasks = [
            task
            for task in (self._sender, self._expiry)
            if task is not None and task is not current
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _send_client_error(self, exc: ClientEventError) -> None:
        logger.info(
            "session %s: rejected client event %s: %s",
            self.session.id,
            exc.event_id,
            exc.message,
        )
        await self._send(
            error_event(exc.code, exc.message, param=exc.param, event_id=exc.event_id)
        )

    async def _send(self, event: ServerEvent) -> None:
        if self._ws.closed:
            logger.debug(
                "session %s: not sending %s, socket closed", self.session.id, event.type
            )
            return
        text = encode_event(event)
        async with self._send_lock:
            try:
                await self._ws.send_str(text)
            except ConnectionResetError as exc:
                logger.debug(
                    "session %s: sending %s failed: %s",
                    self.session.id,
                    event.type,
                    exc,
                )
                return
        if event.type == "error":
            self.session.errors_sent.append(event.error.code or "")

    def _record_close(self) -> None:
        code = self._close_code_sent
        if code is None:
            code = self._ws.close_code
        if code is None:
            code = WSCloseCode.ABNORMAL_CLOSURE
        self.session.close_code = int(code)
        self.session.closed = True
        self.session.closed_at = time.monotonic()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _api_error_response(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    body = {
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }
    return web.json_response(body, status=status)


def _rejection_response(status: int) -> web.Response:
    if status == 429:
        return _api_error_response(
            status,
            "Rate limit reached for requests. Retry after a short delay.",
            error_type="requests",
            code="rate_limit_exceeded",
        )
    if status >= 500:
        return _api_error_response(
            status,
            "The server had an error while processing your request.",
            error_type="server_error",
        )
    return _api_error_response(status, f"Connection rejected with HTTP {status}.")


def _bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _url_host(host: str) -> str:
    if host == "localhost":
        return host
    expected = f"host must be a loopback address such as 127.0.0.1 or ::1, got {host!r}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(expected) from exc
    if not address.is_loopback:
        raise ValueError(expected)
    return f"[{host}]" if address.version == 6 else host


class FakeOpenAI:
    """A Realtime Translation API on a loopback port, with failure injection.

    Use `await start()` and `await stop()`, or `async with FakeOpenAI() as
    fake:`. `sessions` lists every session ever opened, in order.
    """

    def __init__(self, options: FakeOptions | None = None) -> None:
        self.options = options if options is not None else FakeOptions()
        self.sessions: list[FakeSession] = []
        self._connections: set[_SessionConnection] = set()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._rejections_left = 0
        self._rejection_status = 500
        self._rejection_retry_after_s: float | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self.rest = FakeRest(lambda: self.options.api_keys)

    @property
    def base_url(self) -> str:
        """The SDK `base_url`, such as "http://127.0.0.1:PORT/v1"."""
        if self._base_url is None:
            raise RuntimeError("FakeOpenAI is not started: call start() first")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on a loopback `host` and `port` (0 picks a free port)."""
        url_host = _url_host(host)
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI is already started")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_get(TRANSLATIONS_PATH, self._handle_translations)
        self.rest.add_routes(app)
        app.router.add_route("*", "/{path:.*}", self._handle_unknown_path)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._base_url = f"http://{url_host}:{bound_port}/v1"
        logger.info("fake OpenAI listening on %s", self._base_url)

    async def stop(self) -> None:
        """Close every open session with 1001 and stop listening."""
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        self.rest.stop()
        connections = list(self._connections)
        await asyncio.gather(
            *(connection.close(WSCloseCode.GOING_AWAY) for connection in connections)
        )
        if self._actions:
            await asyncio.wait(self._actions)
        await runner.cleanup()
        logger.info("fake OpenAI at %s stopped", self._base_url)

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def open_sessions(self) -> list[FakeSession]:
        return [session for session in self.sessions if not session.closed]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        # A plain argument, not asyncio.timeout, because tests code against it.
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        """Poll `predicate` until it returns True.

        Raises TimeoutError, naming the predicate and the sessions, when it is
        still False after `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                name = getattr(predicate, "__qualname__", repr(predicate))
                raise TimeoutError(
                    f"Timed out after {timeout} s waiting for {name}. "
                    f"Sessions: {self._describe_sessions()}"
                )
            await asyncio.sleep(WAIT_POLL_INTERVAL_S)

    def drop_sessions(self, *, abort: bool = False) -> asyncio.Task[None]:
        """Close every open session abruptly, with 1011 or by a TCP abort.

        Pending output is discarded. The returned task finishes when the
        sockets are closed. Awaiting it is optional.
        """
        code = WSCloseCode.INTERNAL_ERROR
        return self._spawn(
            [connection.close(code, abort=abort) for connection in self._connections],
            "drop_sessions",
        )

    def expire_sessions(self) -> asyncio.Task[None]:
        """Send `session_expired` to every open session and close it with 1001.

        The returned task finishes when the sockets are closed. Awaiting it
        is optional.
        """
        return self._spawn(
            [
                connection.close(
                    WSCloseCode.GOING_AWAY,
                    events=[error_event("session_expired", SESSION_EXPIRED_MESSAGE)],
                )
                for connection in self._connections
            ],
            "expire_sessions",
        )

    def send_error(
        self, code: str, message: str, *, error_type: str = "invalid_request_error"
    ) -> asyncio.Task[None]:
        """Send an `error` event to every open session and leave it open.

        The returned task finishes when the events are sent. Awaiting it is
        optional.
        """
        return self._spawn(
            [
                connection.send_error(code, message, error_type)
                for connection in self._connections
            ],
            "send_error",
        )

    def reject_connects(
        self, count: int, status: int = 500, *, retry_after_s: float | None = None
    ) -> None:
        """Fail the next `count` upgrade requests with HTTP `status`.

        `retry_after_s` adds `retry-after-ms` and `retry-after` headers.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count!r}")
        if not 400 <= status <= 599:
            raise ValueError(
                f"status must be an HTTP error from 400 to 599, got {status!r}"
            )
        self._rejections_left = count
        self._rejection_status = status
        self._rejection_retry_after_s = retry_after_s

    def _spawn(self, calls: list[Awaitable[None]], name: str) -> asyncio.Task[None]:
        async def run_all() -> None:
            await asyncio.gather(*calls)

        task = asyncio.create_task(run_all(), name=f"fake-openai-{name}")
        self._actions.add(task)
        task.add_done_callback(self._action_done)
        return task

    def _action_done(self, task: asyncio.Task[None]) -> None:
        self._actions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    def _describe_sessions(self) -> str:
        if not self.sessions:
            return "none opened"
        return "; ".join(
            f"{session.id} configured={session.configured} "
            f"input_bytes={session.input_bytes} output_bytes={session.output_bytes} "
            f"closed={session.closed} close_code={session.close_code} "
            f"errors={session.errors_sent}"
            for session in self.sessions
        )

    def _check_upgrade(self, request: web.Request) -> web.Response | None:
        if self._rejections_left > 0:
            self._rejections_left -= 1
            response = _rejection_response(self._rejection_status)
            retry_after_s = self._rejection_retry_after_s
            if retry_after_s is not None:
                response.headers["retry-after-ms"] = str(round(retry_after_s * 1000))
                response.headers["retry-after"] = str(max(1, round(retry_after_s)))
            return response
        token = _bearer_token(request.headers.get("Authorization"))
        if token is None:
            return _api_error_response(
                401,
                "You didn't provide an API key. Send it in an Authorization "
                "header with Bearer auth (Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if self.options.api_keys is not None and token not in self.options.api_keys:
            return _api_error_response(
                401, "Incorrect API key provided.", code="invalid_api_key"
            )
        model = request.query.get("model")
        if not model:
            return _api_error_response(
                400,
                "Missing required parameter: 'model'.",
                code="missing_required_parameter",
                param="model",
            )
        if model not in self.options.models:
            return _api_error_response(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    async def _handle_translations(self, request: web.Request) -> web.StreamResponse:
        rejection = self._check_upgrade(request)
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT_S)
        if rejection is None and not ws.can_prepare(request).ok:
            rejection = _api_error_response(
                400,
                f"{TRANSLATIONS_PATH} requires a WebSocket upgrade request.",
            )
        if rejection is not None:
            logger.info(
                "rejected upgrade with HTTP %d: %s", rejection.status, rejection.text
            )
            return rejection

        await ws.prepare(request)
        expire_after_s = self.options.expire_after_s
        duration_s = (
            SESSION_MAX_DURATION_S if expire_after_s is None else expire_after_s
        )
        session = FakeSession(
            id=new_session_id(),
            model=request.query["model"],
            expires_at=math.ceil(time.time() + duration_s),
        )
        self.sessions.append(session)

        connection = _SessionConnection(
            session=session, ws=ws, transport=request.transport, options=self.options
        )
        self._connections.add(connection)
        logger.info("session %s: opened, model=%s", session.id, session.model)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)
            logger.info(
                "session %s: closed with %s, input_bytes=%d output_bytes=%d",
                session.id,
                session.close_code,
                session.input_bytes,
                session.output_bytes,
            )
        return ws

    async def _handle_unknown_path(self, request: web.Request) -> web.Response:
        return _api_error_response(
            404, f"Invalid URL ({request.method} {request.path})."
        )
