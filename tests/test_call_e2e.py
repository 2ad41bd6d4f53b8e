"""End-to-end calls: the real server, real aiortc peers, real speech, and the
fake OpenAI Realtime Translation server on localhost.

The fake "translates" by returning the input audio, so what a listener hears
must be the partner's speech, checked by cross-correlation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.fake_openai import FakeOpenAI
from tests.support.netns import assert_loopback_only
from tests.support.peer import ClientPeer, SignalingClient, join_and_connect
from tests.support.speech import (
    MATCHED_SHARE,
    SAMPLE_RATE,
    SpeechSample,
    heard_share,
    speech_duration_s,
    speech_sample,
    window_rms,
)

TIMEOUT = 10.0
LEADING_SILENCE_S = 1.0
# Time after the speech ends for the last of it to reach the listener.
TAIL_S = 2.5


@dataclass
class Side:
    signaling: SignalingClient
    peer: ClientPeer
    speech: SpeechSample


@dataclass
class Call:
    first: Side
    second: Side

    async def record(self, seconds: float) -> None:
        """Wait until both sides have recorded `seconds` of audio."""
        for side in (self.first, self.second):
            recorder = await side.peer.wait_recorder(TIMEOUT)
            await recorder.wait_for_duration(seconds, timeout_s=seconds + TIMEOUT)

    def heard_by(self, side: Side) -> np.ndarray:
        assert side.peer.recorder is not None
        return side.peer.recorder.samples()


class OpenCall(Protocol):
    async def __call__(
        self,
        server: RunningServer,
        first_language: str = ...,
        second_language: str = ...,
        *,
        loop: bool = ...,
    ) -> Call: ...


@pytest.fixture
async def open_call() -> AsyncIterator[OpenCall]:
    sides: list[Side] = []

    async def open_side(
        server: RunningServer, language: str, speech: SpeechSample, loop: bool
    ) -> Side:
        signaling = await SignalingClient.connect(server.ws_url)
        peer = ClientPeer(
            speech.samples, leading_silence_s=LEADING_SILENCE_S, loop=loop
        )
        side = Side(signaling, peer, speech)
        sides.append(side)
        await join_and_connect(signaling, peer, language, timeout_s=TIMEOUT)
        return side

    async def open_pair(
        server: RunningServer,
        first_language: str = "en",
        second_language: str = "ru",
        *,
        loop: bool = False,
    ) -> Call:
        assert_loopback_only()
        first = await open_side(server, first_language, speech_sample("en"), loop)
        second = await open_side(server, second_language, speech_sample("ru"), loop)
        await first.signaling.expect("paired", TIMEOUT)
        await second.signaling.expect("paired", TIMEOUT)
        return Call(first, second)

    yield open_pair
    for side in sides:
        await side.peer.close()
        await side.signaling.close()


async def drain(signaling: SignalingClient) -> None:
    """Read every message sent so far, so that `of_type` includes them."""
    await signaling.send({"type": "ping"})
    await signaling.expect("pong", TIMEOUT)


def assert_hears(received: np.ndarray, sent: SpeechSample) -> float:
    """Assert `received` contains `sent` at its own pace; return the lag."""
    lag_s, share = heard_share(sent.samples, received, SAMPLE_RATE)
    assert share >= MATCHED_SHARE, f"{share:.0%} of the sent speech heard"
    start = int(lag_s * SAMPLE_RATE)
    heard = received[start : start + len(sent.samples)]
    ratio = speech_duration_s(heard, SAMPLE_RATE) / speech_duration_s(
        sent.samples, SAMPLE_RATE
    )
    assert 0.9 <= ratio <= 1.1, f"received speech lasts {ratio:.2f} x the sent"
    return lag_s


async def test_translated_call_end_to_end(
    start_server: ServerFactory, fake_openai: FakeOpenAI, open_call: OpenCall
) -> None:
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        CAPTION_FINAL_MS="400",
    )
    call = await open_call(server)
    longest = max(call.first.speech.duration_s, call.second.speech.duration_s)
    await call.record(LEADING_SILENCE_S + longest + TAIL_S)

    for listener, speaker in ((call.second, call.first), (call.first, call.second)):
        lag_s = assert_hears(call.heard_by(listener), speaker.speech)
        recorder = listener.peer.recorder
        assert recorder is not None
        sent_at = speaker.peer.track.started_at
        assert sent_at is not None
        delay = recorder.arrival_time(int(lag_s * SAMPLE_RATE)) - sent_at
        print(f"speech {speaker.speech.language} delay {delay * 1000:.0f} ms")

    for side in (call.first, call.second):
        await drain(side.signaling)
        state = await side.signaling.expect("translation", TIMEOUT)
        assert state == {
            "type": "translation",
            "state": "ready",
            "engine": "realtime",
            "reason": "",
        }
        captions = side.signaling.of_type("caption")
        kinds = {(c["speaker"], c["kind"]) for c in captions}
        assert kinds >= {
            ("self", "original"),
            ("self", "translation"),
            ("partner", "original"),
            ("partner", "translation"),
        }
        assert any(c["final"] for c in captions)

    english = [
        c for c in call.first.signaling.of_type("caption") if c["speaker"] == "self"
    ]
    assert {c["language"] for c in english if c["kind"] == "original"} == {"en"}
    assert {c["language"] for c in english if c["kind"] == "translation"} == {"ru"}

    sessions = fake_openai.sessions
    assert sorted(s.output_language for s in sessions) == ["en", "ru"]
    assert all(s.audio_before_configured == 0 for s in sessions)
    assert all(s.transcription_model == "gpt-realtime-whisper" for s in sessions)

    await call.first.signaling.send({"type": "leave"})
    await call.second.signaling.expect("partner_left", TIMEOUT)
    await fake_openai.wait_for(
        lambda: all(s.closed for s in fake_openai.sessions), timeout=2.0
    )
    assert all("session.close" in s.event_types for s in fake_openai.sessions)


async def test_same_language_call_is_direct(
    start_server: ServerFactory, fake_openai: FakeOpenAI, open_call: OpenCall
) -> None:
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test"
    )
    call = await open_call(server, "en", "en-US")
    await call.record(LEADING_SILENCE_S + call.second.speech.duration_s + TAIL_S)
    assert_hears(call.heard_by(call.first), call.second.speech)
    assert_hears(call.heard_by(call.second), call.first.speech)
    state = await call.first.signaling.expect("translation", TIMEOUT)
    assert (state["state"], state["engine"]) == ("ready", "direct")
    assert fake_openai.sessions == []


async def test_no_key_relays_original_voice(
    start_server: ServerFactory, open_call: OpenCall
) -> None:
    server = await start_server()
    call = await open_call(server)
    await call.record(LEADING_SILENCE_S + call.second.speech.duration_s + TAIL_S)
    assert_hears(call.heard_by(call.first), call.second.speech)
    assert_hears(call.heard_by(call.second), call.first.speech)
    state = await call.second.signaling.expect("translation", TIMEOUT)
    assert state["state"] == "unavailable"
    assert "OPENAI_API_KEY" in state["reason"]


async def test_burst_output_plays_at_real_time(
    start_server: ServerFactory, fake_openai: FakeOpenAI, open_call: OpenCall
) -> None:
    fake_openai.options.pacing = "burst"
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test"
    )
    call = await open_call(server)
    longest = max(call.first.speech.duration_s, call.second.speech.duration_s)
    await call.record(LEADING_SILENCE_S + longest + TAIL_S + 1.0)
    assert_hears(call.heard_by(call.second), call.first.speech)
    assert_hears(call.heard_by(call.first), call.second.speech)


def speech_after(recording: np.ndarray, start_s: float) -> float:
    """Seconds of speech in `recording` after `start_s`."""
    return speech_duration_s(recording[int(start_s * SAMPLE_RATE) :], SAMPLE_RATE)


async def states_until_ready(side: Side, timeout_s: float) -> list[str]:
    """Read `translation` messages until the state is ready again."""
    states: list[str] = []
    async with asyncio.timeout(timeout_s):
        while not states or states[-1] != "ready":
            message = await side.signaling.expect("translation", timeout_s)
            states.append(message["state"])
    return states


async def test_dropped_session_degrades_then_recovers(
    start_server: ServerFactory, fake_openai: FakeOpenAI, open_call: OpenCall
) -> None:
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test"
    )
    call = await open_call(server, loop=True)
    for side in (call.first, call.second):
        assert (await side.signaling.expect("translation", TIMEOUT))["state"] == "ready"
    await call.record(2.0)
    recorder = call.second.peer.recorder
    assert recorder is not None
    dropped_at_s = recorder.duration_s
    fake_openai.drop_sessions()

    states = await states_until_ready(call.second, TIMEOUT)
    assert states[0] == "degraded"
    assert states[-1] == "ready"
    await call.record(dropped_at_s + 4.0)
    assert speech_after(call.heard_by(call.second), dropped_at_s) > 1.0
    assert len(fake_openai.sessions) >= 4
    assert all(s.audio_before_configured == 0 for s in fake_openai.sessions)
    newest = fake_openai.sessions[-1]
    assert newest.input_bytes > 0


async def test_expired_session_reconfigured_before_audio(
    start_server: ServerFactory, fake_openai: FakeOpenAI, open_call: OpenCall
) -> None:
    fake_openai.options.expire_after_s = 2.0
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test"
    )
    call = await open_call(server, loop=True)
    await fake_openai.wait_for(lambda: len(fake_openai.sessions) >= 4, timeout=15)
    fake_openai.options.expire_after_s = None
    states = await states_until_ready(call.second, 15)
    assert states[-1] == "ready"
    await fake_openai.wait_for(
        lambda: any(
            s.configured and s.input_bytes > 0 for s in fake_openai.sessions[2:]
        ),
        timeout=TIMEOUT,
    )
    expired = fake_openai.sessions[:2]
    assert all(s.closed for s in expired)
    assert all("session_expired" in s.errors_sent for s in expired)
    assert all(s.audio_before_configured == 0 for s in fake_openai.sessions)
    recorder = call.second.peer.recorder
    assert recorder is not None
    start = recorder.duration_s
    await call.record(start + 3.0)
    rms = window_rms(
        call.heard_by(call.second)[int(start * SAMPLE_RATE) :], SAMPLE_RATE
    )
    assert rms.max() > 500


async def test_media_drop_held_then_restored_by_new_offer(
    start_server: ServerFactory, open_call: OpenCall
) -> None:
    server = await start_server(MEDIA_TIMEOUT_S="1", RESUME_GRACE_S="20")
    call = await open_call(server, loop=True)
    await call.record(1.0)
    await call.first.peer.close()
    await call.second.signaling.expect("partner_reconnecting", TIMEOUT)

    replacement = ClientPeer(call.first.speech.samples, loop=True)
    call.first.peer = replacement
    await call.first.signaling.send(
        {"type": "offer", "sdp": await replacement.make_offer()}
    )
    answer = await call.first.signaling.expect("answer", TIMEOUT)
    await replacement.accept_answer(answer["sdp"])
    await replacement.wait_connected(TIMEOUT)
    await call.second.signaling.expect("partner_returned", TIMEOUT)
    recorder = await replacement.wait_recorder(TIMEOUT)
    await recorder.wait_for_duration(2.0, timeout_s=TIMEOUT)
    assert call.second.signaling.of_type("partner_left") == []
