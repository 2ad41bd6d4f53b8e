"""Tests of the fake Realtime Translation server, driven by the real SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.translations.translations import (
    AsyncTranslationsConnection,
)
from openai.types.realtime import (
    RealtimeErrorEvent,
    RealtimeTranslationInputTranscriptDeltaEvent,
    RealtimeTranslationOutputAudioDeltaEvent,
    RealtimeTranslationOutputTranscriptDeltaEvent,
    RealtimeTranslationServerEvent,
    RealtimeTranslationSessionClosedEvent,
    RealtimeTranslationSessionCreatedEvent,
    RealtimeTranslationSessionUpdatedEvent,
)
from openai.types.realtime import (
    realtime_translation_session_update_request_param as update_param,
)
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.fake_openai import (
    DEFAULT_MODEL,
    FRAME_BYTES,
    SAMPLE_RATE,
    SESSION_EXPIRED_MESSAGE,
    FakeOpenAI,
)

REPOSITORY = Path(__file__).resolve().parents[1]
API_KEY = "sk-test"
TRANSCRIPTION_MODEL = "gpt-realtime-whisper"
FRAME_S = 0.2
DELTA_BYTES = 2 * FRAME_BYTES


def tone(frames: float, frequency_hz: float = 440.0) -> bytes:
    samples = round(frames * FRAME_BYTES / 2)
    t = np.arange(samples) / SAMPLE_RATE
    wave = 8000 * np.sin(2 * np.pi * frequency_hz * t)
    return wave.astype("<i2").tobytes()


def quiet_noise(frames: int, seed: int = 1) -> bytes:
    """Noise of RMS about 18, well below the fake's silence threshold."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(-30, 31, size=frames * FRAME_BYTES // 2)
    return samples.astype("<i2").tobytes()


def encode(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


def decode(event: RealtimeTranslationOutputAudioDeltaEvent) -> bytes:
    return base64.b64decode(event.delta)


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key=API_KEY) as sdk:
        yield sdk


@pytest.fixture
async def connection(
    client: AsyncOpenAI,
) -> AsyncIterator[AsyncTranslationsConnection]:
    """A connection whose session.created event has been received."""
    manager = client.realtime.translations.connect(model=DEFAULT_MODEL)
    async with manager as opened:
        created = await receive(opened)
        assert isinstance(created, RealtimeTranslationSessionCreatedEvent)
        yield opened


async def receive(
    connection: AsyncTranslationsConnection, timeout_s: float = 2.0
) -> RealtimeTranslationServerEvent:
    async with asyncio.timeout(timeout_s):
        return await connection.recv()


async def receive_until(
    connection: AsyncTranslationsConnection,
    done: Callable[[list[RealtimeTranslationServerEvent]], bool],
    *,
    timeout_s: float = 3.0,
    max_events: int = 1000,
) -> list[RealtimeTranslationServerEvent]:
    events: list[RealtimeTranslationServerEvent] = []
    async with asyncio.timeout(timeout_s):
        while not done(events):
            assert len(events) < max_events, f"no end after {max_events} events"
            events.append(await connection.recv())
    return events


async def receive_error(connection: AsyncTranslationsConnection) -> RealtimeErrorEvent:
    event = await receive(connection)
    assert isinstance(event, RealtimeErrorEvent), f"expected an error, got {event}"
    return event


async def configure(
    connection: AsyncTranslationsConnection,
    language: str = "fr",
    transcription: bool = True,
) -> RealtimeTranslationSessionUpdatedEvent:
    audio: update_param.Audio = {"output": {"language": language}}
    if transcription:
        audio["input"] = {"transcription": {"model": TRANSCRIPTION_MODEL}}
    await connection.session.update(session={"audio": audio})
    event = await receive(connection)
    assert isinstance(event, RealtimeTranslationSessionUpdatedEvent), event
    return event


async def append_frames(connection: AsyncTranslationsConnection, pcm: bytes) -> None:
    for start in range(0, len(pcm), FRAME_BYTES):
        chunk = pcm[start : start + FRAME_BYTES]
        await connection.session.input_audio_buffer.append(audio=encode(chunk))


def audio_deltas(
    events: list[RealtimeTranslationServerEvent],
) -> list[RealtimeTranslationOutputAudioDeltaEvent]:
    return [
        e for e in events if isinstance(e, RealtimeTranslationOutputAudioDeltaEvent)
    ]


def output_bytes(events: list[RealtimeTranslationServerEvent]) -> int:
    return sum(len(decode(delta)) for delta in audio_deltas(events))


@dataclass
class EchoRun:
    """Input of one phrase between silences, and every event it produced."""

    silence_before: bytes
    phrase: bytes
    silence_after: bytes
    events: list[RealtimeTranslationServerEvent]


@pytest.fixture
async def echo_run(connection: AsyncTranslationsConnection) -> EchoRun:
    await configure(connection, language="fr")
    silence_before = quiet_noise(2)
    phrase = tone(4)
    silence_after = quiet_noise(4, seed=2)
    pcm = silence_before + phrase + silence_after
    await append_frames(connection, pcm)
    events = await receive_until(connection, lambda got: output_bytes(got) >= len(pcm))
    return EchoRun(silence_before, phrase, silence_after, events)


async def test_connect_sends_session_created(client: AsyncOpenAI) -> None:
    manager = client.realtime.translations.connect(model=DEFAULT_MODEL)
    async with manager as connection:
        event = await receive(connection)
    assert isinstance(event, RealtimeTranslationSessionCreatedEvent)
    assert event.session.id.startswith("sess_")
    assert event.session.type == "translation"
    assert event.session.model == DEFAULT_MODEL
    assert event.session.audio.output is not None
    assert event.session.audio.output.language == "es"
    assert event.session.expires_at > 0


async def test_update_returns_full_session(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    updated = await configure(connection, language="ja")
    session = fake_openai.sessions[0]
    assert updated.session.id == session.id
    assert updated.session.model == DEFAULT_MODEL
    assert updated.session.audio.output is not None
    assert updated.session.audio.output.language == "ja"
    assert updated.session.audio.input is not None
    assert updated.session.audio.input.transcription is not None
    assert updated.session.audio.input.transcription.model == TRANSCRIPTION_MODEL
    assert session.configured
    assert session.output_language == "ja"
    assert session.transcription_model == TRANSCRIPTION_MODEL


async def test_update_noise_reduction_defaults_strength(
    connection: AsyncTranslationsConnection,
) -> None:
    await connection.session.update(
        session={"audio": {"input": {"noise_reduction": {"type": "near_field"}}}}
    )
    event = await receive(connection)
    assert isinstance(event, RealtimeTranslationSessionUpdatedEvent), event
    assert event.session.audio.input is not None
    noise_reduction = event.session.audio.input.noise_reduction
    assert noise_reduction is not None
    assert noise_reduction.type == "near_field"
    assert noise_reduction.strength == 1.0


async def test_echo_audio_equals_input(echo_run: EchoRun) -> None:
    output = b"".join(decode(delta) for delta in audio_deltas(echo_run.events))
    expected_phrase_start = len(echo_run.silence_before)
    expected_phrase_end = expected_phrase_start + len(echo_run.phrase)
    assert output[expected_phrase_start:expected_phrase_end] == echo_run.phrase
    assert len(output) == len(
        echo_run.silence_before + echo_run.phrase + echo_run.silence_after
    )


async def test_echo_silence_is_all_zero(echo_run: EchoRun) -> None:
    deltas = audio_deltas(echo_run.events)
    first = decode(deltas[0])
    last = decode(deltas[-1])
    assert first == bytes(len(echo_run.silence_before))
    assert last == bytes(DELTA_BYTES)


async def test_echo_delta_format(echo_run: EchoRun) -> None:
    deltas = audio_deltas(echo_run.events)
    assert [len(decode(delta)) for delta in deltas] == [DELTA_BYTES] * 5
    assert [delta.elapsed_ms for delta in deltas] == [0, 400, 800, 1200, 1600]
    assert {delta.format for delta in deltas} == {"pcm16"}
    assert {delta.sample_rate for delta in deltas} == {SAMPLE_RATE}
    assert {delta.channels for delta in deltas} == {1}


async def test_echo_transcripts_name_phrase(echo_run: EchoRun) -> None:
    inputs = [
        e.delta
        for e in echo_run.events
        if isinstance(e, RealtimeTranslationInputTranscriptDeltaEvent)
    ]
    outputs = [
        e.delta
        for e in echo_run.events
        if isinstance(e, RealtimeTranslationOutputTranscriptDeltaEvent)
    ]
    assert "".join(inputs) == "segment 1"
    assert "".join(outputs) == "[fr] segment 1"
    assert len(outputs) >= 2


async def test_output_transcript_precedes_audio(echo_run: EchoRun) -> None:
    types = [event.type for event in echo_run.events]
    first_transcript = types.index("session.output_transcript.delta")
    deltas = audio_deltas(echo_run.events)
    phrase_delta = echo_run.events.index(deltas[1])
    assert first_transcript < phrase_delta


async def test_echo_numbers_each_phrase(
    connection: AsyncTranslationsConnection,
) -> None:
    await configure(connection, language="de")
    pcm = tone(2) + quiet_noise(2) + tone(2) + quiet_noise(2)
    await append_frames(connection, pcm)
    events = await receive_until(connection, lambda got: output_bytes(got) >= len(pcm))
    outputs = [
        e.delta
        for e in events
        if isinstance(e, RealtimeTranslationOutputTranscriptDeltaEvent)
    ]
    assert "".join(outputs) == "[de] segment 1[de] segment 2"


async def test_input_transcript_needs_transcription(
    connection: AsyncTranslationsConnection,
) -> None:
    await configure(connection, transcription=False)
    pcm = tone(2) + quiet_noise(2)
    await append_frames(connection, pcm)
    events = await receive_until(connection, lambda got: output_bytes(got) >= len(pcm))
    types = {event.type for event in events}
    assert "session.input_transcript.delta" not in types
    assert "session.output_transcript.delta" in types


async def test_lag_delays_output(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    fake_openai.options.lag_ms = 300
    await configure(connection)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await append_frames(connection, tone(2))
    events = await receive_until(connection, lambda got: output_bytes(got) > 0)
    waited_s = loop.time() - sent_at
    assert waited_s >= 0.29
    assert decode(audio_deltas(events)[0]) == tone(2)


@pytest.mark.parametrize("language", ["pt_BR", "pt-BR", "xx", "ES", ""])
async def test_update_rejects_bad_language(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection, language: str
) -> None:
    await connection.session.update(
        session={"audio": {"output": {"language": language}}}
    )
    error = await receive_error(connection)
    assert error.error.type == "invalid_request_error"
    assert error.error.code == "invalid_value"
    assert error.error.param == "session.audio.output.language"
    assert fake_openai.sessions[0].output_language == "es"
    assert not fake_openai.sessions[0].configured
    updated = await configure(connection, language="ko")
    assert updated.session.audio.output is not None
    assert updated.session.audio.output.language == "ko"


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"type": "response.create"}, "invalid_value", "type"),
        ({"audio": encode(tone(1))}, "missing_required_parameter", "type"),
        ({"type": 7}, "invalid_type", "type"),
        (
            {"type": "session.input_audio_buffer.append", "audio": 5},
            "invalid_type",
            "audio",
        ),
        (
            {"type": "session.input_audio_buffer.append"},
            "missing_required_parameter",
            "audio",
        ),
        ({"type": "session.update", "session": "fr"}, "invalid_type", "session"),
        (
            {"type": "session.update", "session": {"model": "gpt-4o-realtime"}},
            "unknown_parameter",
            "session.model",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime"}},
            "unknown_parameter",
            "session.type",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"output": {"voice": "alloy"}}},
            },
            "unknown_parameter",
            "session.audio.output.voice",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"noise_reduction": {"type": "x"}}}},
            },
            "invalid_value",
            "session.audio.input.noise_reduction.type",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"transcription": {"model": ""}}}},
            },
            "invalid_value",
            "session.audio.input.transcription.model",
        ),
        (
            {"type": "session.close", "reason": "done"},
            "unknown_parameter",
            "reason",
        ),
    ],
)
async def test_invalid_event_keeps_session_open(
    fake_openai: FakeOpenAI,
    connection: AsyncTranslationsConnection,
    event: dict[str, Any],
    code: str,
    param: str,
) -> None:
    await connection.send_raw(json.dumps({**event, "event_id": "evt_bad"}))
    error = await receive_error(connection)
    assert error.error.code == code
    assert error.error.param == param
    assert error.error.event_id == "evt_bad"
    assert fake_openai.sessions[0].errors_sent == [code]
    await configure(connection)


async def test_invalid_json_rejected(connection: AsyncTranslationsConnection) -> None:
    await connection.send_raw("{not json")
    error = await receive_error(connection)
    assert error.error.code == "invalid_json"
    assert error.error.type == "invalid_request_error"
    await configure(connection)


async def test_json_array_rejected(connection: AsyncTranslationsConnection) -> None:
    await connection.send_raw("[]")
    error = await receive_error(connection)
    assert error.error.code == "invalid_json"
    await configure(connection)


async def test_binary_message_rejected(connection: AsyncTranslationsConnection) -> None:
    await connection.send_raw(json.dumps({"type": "session.close"}).encode())
    error = await receive_error(connection)
    assert error.error.code == "invalid_event"
    await configure(connection)


async def test_error_event_wire_shape(connection: AsyncTranslationsConnection) -> None:
    await connection.send_raw(json.dumps({"type": "response.create"}))
    async with asyncio.timeout(2):
        raw = json.loads(await connection.recv_bytes())
    assert raw["type"] == "error"
    assert raw["event_id"].startswith("event_")
    assert set(raw["error"]) == {"type", "code", "message", "param", "event_id"}
    assert raw["error"]["event_id"] is None


@pytest.mark.parametrize(
    "audio",
    [
        encode(b"\x01\x02\x03"),
        "not base64!",
        "",
    ],
)
async def test_append_rejects_invalid_audio(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection, audio: str
) -> None:
    await configure(connection)
    await connection.session.input_audio_buffer.append(audio=audio)
    error = await receive_error(connection)
    assert error.error.code == "invalid_value"
    assert error.error.param == "audio"
    assert fake_openai.sessions[0].input_bytes == 0


async def test_audio_before_update_counted(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    await append_frames(connection, quiet_noise(1))
    await configure(connection)
    await append_frames(connection, quiet_noise(1))
    await fake_openai.wait_for(
        lambda: fake_openai.sessions[0].input_bytes == 2 * FRAME_BYTES, timeout=2
    )
    session = fake_openai.sessions[0]
    assert session.audio_before_configured == 1
    assert session.event_types == [
        "session.input_audio_buffer.append",
        "session.update",
        "session.input_audio_buffer.append",
    ]


async def test_wrong_api_key_rejected(fake_openai: FakeOpenAI) -> None:
    fake_openai.options.api_keys = frozenset({"sk-right"})
    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-wrong") as sdk:
        with pytest.raises(InvalidStatus) as raised:
            async with sdk.realtime.translations.connect(model=DEFAULT_MODEL):
                pass
    assert raised.value.response.status_code == 401
    body = json.loads(raised.value.response.body)
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] is None
    assert fake_openai.sessions == []


async def test_missing_authorization_rejected(client: AsyncOpenAI) -> None:
    manager = client.realtime.translations.connect(
        model=DEFAULT_MODEL, extra_headers={"Authorization": ""}
    )
    with pytest.raises(InvalidStatus) as raised:
        async with manager:
            pass
    assert raised.value.response.status_code == 401
    body = json.loads(raised.value.response.body)
    assert body["error"]["code"] == "invalid_api_key"


async def test_unknown_model_rejected(client: AsyncOpenAI) -> None:
    with pytest.raises(InvalidStatus) as raised:
        async with client.realtime.translations.connect(model="gpt-4o-realtime"):
            pass
    assert raised.value.response.status_code == 404
    body = json.loads(raised.value.response.body)
    assert body["error"]["code"] == "model_not_found"


async def test_empty_model_rejected(client: AsyncOpenAI) -> None:
    with pytest.raises(InvalidStatus) as raised:
        async with client.realtime.translations.connect(model=""):
            pass
    assert raised.value.response.status_code == 400
    body = json.loads(raised.value.response.body)
    assert body["error"]["param"] == "model"


async def test_model_set_is_configurable(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.options.models = frozenset({"gpt-realtime-translate-2"})
    manager = client.realtime.translations.connect(model="gpt-realtime-translate-2")
    async with manager as connection:
        created = await receive(connection)
    assert isinstance(created, RealtimeTranslationSessionCreatedEvent)
    assert created.session.model == "gpt-realtime-translate-2"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "server_error"), (429, "requests"), (403, "invalid_request_error")],
)
async def test_reject_connects_then_recovers(
    fake_openai: FakeOpenAI, client: AsyncOpenAI, status: int, error_type: str
) -> None:
    fake_openai.reject_connects(2, status)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as raised:
            async with client.realtime.translations.connect(model=DEFAULT_MODEL):
                pass
        assert raised.value.response.status_code == status
        body = json.loads(raised.value.response.body)
        assert body["error"]["type"] == error_type
    async with client.realtime.translations.connect(model=DEFAULT_MODEL) as connection:
        created = await receive(connection)
    assert isinstance(created, RealtimeTranslationSessionCreatedEvent)


async def send_paced(
    connection: AsyncTranslationsConnection, pcm: bytes
) -> list[float]:
    """Append 200 ms frames in real time and return when each was sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent_at: list[float] = []
    for index, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
        await asyncio.sleep(max(0.0, start + index * FRAME_S - loop.time()))
        chunk = pcm[offset : offset + FRAME_BYTES]
        await connection.session.input_audio_buffer.append(audio=encode(chunk))
        sent_at.append(loop.time())
    return sent_at


async def receive_speech_times(
    connection: AsyncTranslationsConnection, speech_bytes: int
) -> list[float]:
    """Receive until `speech_bytes` of non-zero audio came back."""
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    received = 0
    async with asyncio.timeout(6):
        while received < speech_bytes:
            event = await connection.recv()
            if isinstance(event, RealtimeTranslationOutputAudioDeltaEvent):
                pcm = decode(event)
                if any(pcm):
                    arrivals.append(loop.time())
                    received += len(pcm)
    return arrivals


async def test_burst_releases_phrase_fast(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    fake_openai.options.pacing = "burst"
    await configure(connection)
    phrase = tone(10)
    receiver = asyncio.create_task(receive_speech_times(connection, len(phrase)))
    sent_at = await send_paced(connection, phrase + quiet_noise(2))
    arrivals = await receiver
    last_phrase_frame_sent = sent_at[9]
    assert arrivals[0] > last_phrase_frame_sent
    assert arrivals[-1] - arrivals[0] < 1.0


async def test_realtime_paces_output(connection: AsyncTranslationsConnection) -> None:
    await configure(connection)
    phrase = tone(4)
    receiver = asyncio.create_task(receive_speech_times(connection, len(phrase)))
    await send_paced(connection, phrase + quiet_noise(1))
    arrivals = await receiver
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.3


async def test_expire_option_ends_iteration(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.options.expire_after_s = 0.3
    events: list[RealtimeTranslationServerEvent] = []
    async with client.realtime.translations.connect(model=DEFAULT_MODEL) as connection:
        async with asyncio.timeout(3):
            async for event in connection:
                events.append(event)
    assert [event.type for event in events] == ["session.created", "error"]
    error = events[1]
    assert isinstance(error, RealtimeErrorEvent)
    assert error.error.code == "session_expired"
    assert error.error.type == "invalid_request_error"
    assert error.error.message == SESSION_EXPIRED_MESSAGE
    assert fake_openai.sessions[0].close_code == 1001


async def test_expire_sessions_ends_iteration(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    await configure(connection)
    await fake_openai.expire_sessions()
    events: list[RealtimeTranslationServerEvent] = []
    async with asyncio.timeout(3):
        async for event in connection:
            events.append(event)
    assert [event.type for event in events] == ["error"]
    assert fake_openai.sessions[0].errors_sent == ["session_expired"]
    assert fake_openai.open_sessions() == []


async def test_drop_sessions_closes_with_1011(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    fake_openai.drop_sessions()
    with pytest.raises(ConnectionClosedError) as raised:
        async with asyncio.timeout(3):
            async for _ in connection:
                pass
    assert raised.value.rcvd is not None
    assert raised.value.rcvd.code == 1011
    await fake_openai.wait_for(lambda: fake_openai.sessions[0].closed, timeout=2)
    assert fake_openai.sessions[0].close_code == 1011


async def test_drop_sessions_abort_cuts_tcp(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    await fake_openai.drop_sessions(abort=True)
    with pytest.raises(ConnectionClosedError) as raised:
        async with asyncio.timeout(3):
            async for _ in connection:
                pass
    assert raised.value.rcvd is None
    await fake_openai.wait_for(lambda: fake_openai.sessions[0].closed, timeout=2)
    assert fake_openai.sessions[0].close_code == 1006


async def test_drop_sessions_spares_later_sessions(
    fake_openai: FakeOpenAI,
    connection: AsyncTranslationsConnection,
    client: AsyncOpenAI,
) -> None:
    await fake_openai.drop_sessions()
    async with client.realtime.translations.connect(model=DEFAULT_MODEL) as second:
        created = await receive(second)
        assert isinstance(created, RealtimeTranslationSessionCreatedEvent)
        await configure(second)
    assert fake_openai.sessions[0].close_code == 1011
    assert fake_openai.sessions[1].errors_sent == []


async def test_send_error_keeps_session_open(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    await fake_openai.send_error("server_error", "Injected failure.")
    error = await receive_error(connection)
    assert error.error.code == "server_error"
    assert error.error.message == "Injected failure."
    await configure(connection)
    assert fake_openai.open_sessions() == fake_openai.sessions


async def test_session_close_flushes_then_closes(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    fake_openai.options.lag_ms = 200
    await configure(connection)
    phrase = tone(1.5)
    await connection.session.input_audio_buffer.append(audio=encode(phrase))
    await connection.session.close()
    events: list[RealtimeTranslationServerEvent] = []
    async with asyncio.timeout(2):
        async for event in connection:
            events.append(event)
    assert isinstance(events[-1], RealtimeTranslationSessionClosedEvent)
    output = b"".join(decode(delta) for delta in audio_deltas(events))
    assert output == phrase
    assert fake_openai.sessions[0].close_code == 1000


async def test_session_close_releases_burst(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    fake_openai.options.pacing = "burst"
    await configure(connection)
    phrase = tone(3)
    await append_frames(connection, phrase)
    await connection.session.close()
    events: list[RealtimeTranslationServerEvent] = []
    async with asyncio.timeout(2):
        async for event in connection:
            events.append(event)
    output = b"".join(decode(delta) for delta in audio_deltas(events))
    assert output == phrase
    assert events[-1].type == "session.closed"


async def test_stop_closes_open_sessions(
    fake_openai: FakeOpenAI, connection: AsyncTranslationsConnection
) -> None:
    await fake_openai.stop()
    async with asyncio.timeout(3):
        async for _ in connection:
            pass
    assert fake_openai.sessions[0].close_code == 1001


async def test_wait_for_times_out(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError, match="Timed out"):
        await fake_openai.wait_for(lambda: False, timeout=0.05)


async def test_start_rejects_public_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await FakeOpenAI().start(host="0.0.0.0")


async def test_main_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_openai",
        "--port",
        "0",
        "--pacing",
        "burst",
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()
        base_url = line.strip().rpartition("base_url=")[2]
        assert base_url.startswith("http://127.0.0.1:")
        async with AsyncOpenAI(base_url=base_url, api_key=API_KEY) as sdk:
            manager = sdk.realtime.translations.connect(model=DEFAULT_MODEL)
            async with manager as connection:
                created = await receive(connection)
        assert isinstance(created, RealtimeTranslationSessionCreatedEvent)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                returncode = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert returncode == 0
