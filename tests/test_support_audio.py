"""Tests of the audio test support: measurements, the file track, the signaling
client, and an aiortc call between two ClientPeers without the server.

The WebRTC test must run in the namespace of tests/run-in-netns:
    tests/run-in-netns .venv/bin/python -m pytest tests/test_support_audio.py
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiohttp import web

from tests.support.netns import assert_loopback_only
from tests.support.peer import (
    SAMPLES_PER_FRAME,
    AudioRecorder,
    ClientPeer,
    FileAudioTrack,
    SignalingClient,
)
from tests.support.speech import (
    MATCH_CORRELATION,
    MATCHED_SHARE,
    SAMPLE_RATE,
    Samples,
    SpeechSample,
    best_alignment,
    heard_share,
    load_audio,
    resample,
    speech_duration_s,
    speech_sample,
)

LEADING_SILENCE_S = 0.5
CALL_TIMEOUT_S = 10.0


def tone_burst(
    duration_s: float, *, before_s: float, after_s: float, noise_db: float | None
) -> Samples:
    """Return a 440 Hz tone at half of full scale between two stretches of silence.

    With noise_db, white noise at that level relative to the tone is added
    throughout, so the silence is not digital silence.
    """
    time_s = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 16384 * np.sin(2 * np.pi * 440 * time_s)
    signal = np.concatenate(
        [
            np.zeros(round(before_s * SAMPLE_RATE)),
            tone,
            np.zeros(round(after_s * SAMPLE_RATE)),
        ]
    )
    if noise_db is not None:
        tone_rms = 16384 / np.sqrt(2)
        noise_rms = tone_rms * 10 ** (noise_db / 20)
        signal += np.random.default_rng(1).normal(0.0, noise_rms, len(signal))
    return signal.astype(np.int16)


@pytest.mark.parametrize("noise_db", [None, -50.0])
def test_speech_duration_of_tone_burst(noise_db: float | None) -> None:
    samples = tone_burst(1.5, before_s=0.99, after_s=1.01, noise_db=noise_db)

    # The burst starts 10 ms into a window, so it touches 76 windows.
    assert speech_duration_s(samples, SAMPLE_RATE) == pytest.approx(1.52)


def test_speech_duration_of_silence() -> None:
    assert speech_duration_s(np.zeros(SAMPLE_RATE, dtype=np.int16), SAMPLE_RATE) == 0.0


def test_speech_duration_of_sample_sentences() -> None:
    for language in ("en", "ru"):
        sample = speech_sample(language)
        duration_s = speech_duration_s(sample.samples, SAMPLE_RATE)

        # Pauses between words and the silence espeak-ng adds are not counted.
        assert 2.0 < duration_s < sample.duration_s, language


def test_load_audio_resamples_to_rate() -> None:
    sample = speech_sample("en")

    at_16k = load_audio(sample.path, rate=16000)

    assert at_16k.dtype == np.int16
    assert len(at_16k) == pytest.approx(len(sample.samples) / 3, abs=32)


def test_best_alignment_finds_offset() -> None:
    sent = speech_sample("en").samples
    # An offset that is not a whole number of 8 kHz samples.
    offset = 12345
    noise = np.random.default_rng(2).normal(0.0, 30.0, offset + len(sent) + 48000)
    received = noise.copy()
    received[offset : offset + len(sent)] += 0.5 * sent

    lag_s, peak = best_alignment(sent, received.astype(np.int16), SAMPLE_RATE)

    assert lag_s * SAMPLE_RATE == pytest.approx(offset, abs=1)
    assert peak > 0.99


@pytest.mark.parametrize("middle_rate", [24000, 16000])
def test_best_alignment_after_resampling(middle_rate: int) -> None:
    sent = speech_sample("en").samples
    offset = 12345
    delayed = np.concatenate([np.zeros(offset, dtype=np.int16), sent])
    received = resample(
        resample(delayed, SAMPLE_RATE, middle_rate), middle_rate, SAMPLE_RATE
    )

    lag_s, peak = best_alignment(sent, received, SAMPLE_RATE)

    assert lag_s * SAMPLE_RATE == pytest.approx(offset, abs=1)
    assert peak > 0.99


def test_best_alignment_of_partial_recording() -> None:
    sent = speech_sample("en").samples
    half = len(sent) // 2

    lag_s, peak = best_alignment(sent, sent[half:], SAMPLE_RATE)

    assert lag_s * SAMPLE_RATE == pytest.approx(-half, abs=1)
    assert MATCH_CORRELATION < peak < 0.9


def test_best_alignment_separates_languages() -> None:
    english = speech_sample("en").samples
    russian = speech_sample("ru").samples

    _, english_in_russian = best_alignment(english, russian, SAMPLE_RATE)
    _, russian_in_english = best_alignment(russian, english, SAMPLE_RATE)

    assert english_in_russian < MATCH_CORRELATION / 2
    assert russian_in_english < MATCH_CORRELATION / 2


def _with_gaps(sent: Samples, gaps: list[tuple[float, float]]) -> Samples:
    """Return sent after 0.5 s of silence, with (at_s, length_s) of it changed.

    A positive length inserts that much silence at at_s, and a negative one
    cuts that much of sent from at_s on.
    """
    pieces = [np.zeros(SAMPLE_RATE // 2, dtype=np.int16)]
    position = 0
    for at_s, length_s in gaps:
        at = int(at_s * SAMPLE_RATE)
        length = int(length_s * SAMPLE_RATE)
        pieces.append(sent[position:at])
        if length > 0:
            pieces.append(np.zeros(length, dtype=np.int16))
            position = at
        else:
            position = at - length
    pieces.append(sent[position:])
    return np.concatenate(pieces)


def test_heard_share_frame_shift() -> None:
    # What a playout queue does under load: 20 ms of silence after a late
    # chunk, then 20 ms taken back a second later.
    sent = speech_sample("en").samples
    received = _with_gaps(sent, [(1.0, 0.02), (2.0, -0.02)])

    _, peak = best_alignment(sent, received, SAMPLE_RATE)
    lag_s, share = heard_share(sent, received, SAMPLE_RATE)

    assert peak < 0.8
    assert lag_s in (pytest.approx(0.5), pytest.approx(0.52))
    assert share >= MATCHED_SHARE


def test_heard_share_long_gap_and_other_speech() -> None:
    english = speech_sample("en").samples
    russian = speech_sample("ru").samples

    _, with_gap = heard_share(english, _with_gaps(english, [(1.0, 0.3)]), SAMPLE_RATE)
    _, half = heard_share(english, english[len(english) // 2 :], SAMPLE_RATE)
    _, other = heard_share(english, russian, SAMPLE_RATE)

    assert with_gap < MATCHED_SHARE
    assert half < MATCHED_SHARE
    assert other < 0.2


async def test_file_track_frames_and_pacing() -> None:
    speech = np.arange(1, 2001, dtype=np.int16)
    track = FileAudioTrack(speech, leading_silence_s=0.03)
    frames = []
    started = time.monotonic()
    for _ in range(10):
        frames.append(await track.recv())
    elapsed_s = time.monotonic() - started
    track.stop()

    played = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    leading = round(0.03 * SAMPLE_RATE)
    assert [frame.pts for frame in frames] == [i * 960 for i in range(10)]
    assert {frame.samples for frame in frames} == {SAMPLES_PER_FRAME}
    assert {frame.sample_rate for frame in frames} == {SAMPLE_RATE}
    assert {str(frame.time_base) for frame in frames} == {"1/48000"}
    assert not played[:leading].any()
    assert np.array_equal(played[leading : leading + len(speech)], speech)
    assert not played[leading + len(speech) :].any()
    # Frame 9 is due 180 ms after frame 0.
    assert 0.17 < elapsed_s < 0.5
    assert track.started_at is not None


async def test_file_track_loop_repeats() -> None:
    speech = np.full(700, 1000, dtype=np.int16)
    track = FileAudioTrack(speech, leading_silence_s=0.005, loop=True)
    frames = [await track.recv() for _ in range(3)]
    track.stop()

    played = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    cycle = np.concatenate([np.zeros(240, dtype=np.int16), speech])
    expected = np.tile(cycle, 5)[: len(played)]
    assert np.array_equal(played, expected)


@pytest.fixture
async def scripted_server() -> AsyncIterator[int]:
    """Yield the port of a WebSocket server on 127.0.0.1 that sends 3 messages."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        for message_type in ("waiting", "joined", "answer"):
            await websocket.send_str(json.dumps({"type": message_type}))
        async for _ in websocket:
            pass
        return websocket

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_signaling_expect_keeps_skipped(scripted_server: int) -> None:
    client = await SignalingClient.connect(scripted_server)
    try:
        answer = await client.expect("answer", timeout_s=2.0)
        joined = await client.expect("joined", timeout_s=2.0)
        waiting = await client.receive(timeout_s=2.0)
        with pytest.raises(TimeoutError) as timeout_error:
            await client.expect("paired", timeout_s=0.1)
    finally:
        await client.close()

    assert answer["type"] == "answer"
    assert joined["type"] == "joined"
    assert waiting["type"] == "waiting"
    assert [m["type"] for m in client.messages] == ["waiting", "joined", "answer"]
    assert '{"type": "joined"}' in str(timeout_error.value)


async def record_call(
    english: SpeechSample, russian: SpeechSample
) -> tuple[ClientPeer, ClientPeer, AudioRecorder, AudioRecorder]:
    """Connect a peer playing English to one playing Russian, and record both."""
    caller = ClientPeer(english.samples, leading_silence_s=LEADING_SILENCE_S)
    callee = ClientPeer(russian.samples, leading_silence_s=LEADING_SILENCE_S)
    try:
        offer = await caller.make_offer()
        await caller.accept_answer(await callee.make_answer(offer))
        await caller.wait_connected(CALL_TIMEOUT_S)
        await callee.wait_connected(CALL_TIMEOUT_S)
        english_heard = await callee.wait_recorder(CALL_TIMEOUT_S)
        russian_heard = await caller.wait_recorder(CALL_TIMEOUT_S)

        # Record a second past the end of the longer sentence.
        duration_s = LEADING_SILENCE_S + max(english.duration_s, russian.duration_s)
        for recorder in (english_heard, russian_heard):
            await recorder.wait_for_duration(duration_s + 1.0, CALL_TIMEOUT_S)
    except BaseException:
        await caller.close()
        await callee.close()
        raise
    return caller, callee, english_heard, russian_heard


async def test_loopback_call_carries_speech() -> None:
    assert_loopback_only()
    english = speech_sample("en")
    russian = speech_sample("ru")
    caller, callee, english_heard, russian_heard = await record_call(english, russian)
    await caller.close()
    await callee.close()

    cases = [
        (english, russian, caller.track, english_heard),
        (russian, english, callee.track, russian_heard),
    ]
    for sent, other, track, recorder in cases:
        recording = recorder.samples()
        lag_s, peak = best_alignment(sent.samples, recording, SAMPLE_RATE)
        _, other_peak = best_alignment(other.samples, recording, SAMPLE_RATE)
        sent_duration_s = speech_duration_s(sent.samples, SAMPLE_RATE)
        heard_duration_s = speech_duration_s(recording, SAMPLE_RATE)
        assert track.started_at is not None
        latency_s = recorder.arrival_time(round(lag_s * SAMPLE_RATE)) - track.started_at

        language = sent.language
        assert peak > MATCH_CORRELATION, language
        assert other_peak < MATCH_CORRELATION / 2, language
        # The recording starts with the first frame sent, then comes the
        # leading silence, then the speech, delayed by the Opus encoder.
        assert LEADING_SILENCE_S <= lag_s < LEADING_SILENCE_S + 0.1, language
        assert 0.0 < latency_s < 0.3, language
        assert heard_duration_s == pytest.approx(sent_duration_s, rel=0.1), language
        assert recorder.frames_dropped == 0, language
        assert recorder.error is None, language
