"""The listener's mixer and the paced outbound track."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np

from media.audio import OUTPUT_RATE, SAMPLES_PER_FRAME, TIME_BASE
from media.outbound import (
    ORIGINAL_CAPACITY_S,
    ORIGINAL_TARGET_S,
    ORIGINAL_TRIM_AFTER_FRAMES,
    ListenerMixer,
    OutboundAudioTrack,
    SampleQueue,
)


def tone(seconds: float, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * OUTPUT_RATE)) / OUTPUT_RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_sample_queue_drops_oldest_when_full() -> None:
    queue = SampleQueue(capacity=10)
    queue.push(np.arange(8, dtype=np.int16))
    queue.push(np.arange(100, 105, dtype=np.int16))
    assert len(queue) == 10
    assert queue.dropped_samples == 3
    out, real = queue.pull(12)
    assert real == 10
    assert out[:10].tolist() == [3, 4, 5, 6, 7, 100, 101, 102, 103, 104]
    assert out[10:].tolist() == [0, 0]


def test_mixer_silence_when_empty() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    frame = mixer.pull_frame()
    assert frame.shape == (SAMPLES_PER_FRAME,)
    assert not frame.any()


def test_mixer_original_off_drops_voice() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_original(tone(0.02))
    assert len(mixer.original) == 0


def test_mixer_original_queue_stays_short() -> None:
    mixer = ListenerMixer()
    for _ in range(100):
        mixer.push_original(tone(0.02))
    assert len(mixer.original) <= int(ORIGINAL_CAPACITY_S * OUTPUT_RATE)


def test_mixer_original_backlog_trimmed() -> None:
    """A burst is kept at first, but a lasting backlog is cut to the target."""
    mixer = ListenerMixer()
    for _ in range(10):
        mixer.push_original(tone(0.02))
    backlog = len(mixer.original)
    for _ in range(ORIGINAL_TRIM_AFTER_FRAMES):
        mixer.push_original(tone(0.02))
        mixer.pull_frame()
    assert backlog == 10 * SAMPLES_PER_FRAME
    assert len(mixer.original) <= int(ORIGINAL_TARGET_S * OUTPUT_RATE)


def test_mixer_ducks_original_under_translation() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("ducked")
    mixer.push_original(tone(0.02))
    ducked = mixer.pull_frame()
    mixer.set_original_mode("full")
    mixer.push_original(tone(0.02))
    full = mixer.pull_frame()
    assert 0 < np.abs(ducked).max() < np.abs(full).max()


async def test_outbound_track_paces_a_burst() -> None:
    """A 1 s burst queued at once plays at real-time pace, not faster."""
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_translated(tone(1.0))
    track = OutboundAudioTrack(mixer)
    started = time.monotonic()
    frames = [await track.next_frame() for _ in range(51)]
    elapsed = time.monotonic() - started
    # 51 frames span 50 intervals of 20 ms; the clock may be late, never early.
    assert elapsed >= 0.99
    pts = [frame.pts for frame in frames]
    assert pts == [i * SAMPLES_PER_FRAME for i in range(51)]
    assert all(frame.time_base == TIME_BASE for frame in frames)
    assert all(frame.sample_rate == OUTPUT_RATE for frame in frames)
    assert all(frame.samples == SAMPLES_PER_FRAME for frame in frames)
    track.stop()


async def test_outbound_track_gap_yields_silence() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    track = OutboundAudioTrack(mixer)
    async with asyncio.timeout(5):
        frames = [await track.next_frame() for _ in range(5)]
    assert all(not frame.to_ndarray().any() for frame in frames)
    track.stop()


def frames_until_sound(mixer: ListenerMixer, limit: int) -> int:
    for count in range(1, limit + 1):
        if mixer.pull_frame().any():
            return count
    return limit + 1


def test_mixer_recovers_gap_from_silence() -> None:
    """A late delta's gap is taken back from the zeros that follow it."""
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_translated(tone(0.1))
    assert frames_until_sound(mixer, 1) == 1
    for _ in range(4):
        mixer.pull_frame()
    # Two frames go out empty: the stream is now 40 ms behind.
    assert not mixer.pull_frame().any()
    assert not mixer.pull_frame().any()
    mixer.push_translated(np.zeros(OUTPUT_RATE // 5, dtype=np.int16))
    mixer.push_translated(tone(0.2))
    # The 10 frames of zeros play as 8: the 2 late frames are taken back.
    assert frames_until_sound(mixer, 12) == 9
    assert mixer.silent_frames_skipped == 2


def test_mixer_keeps_pauses_without_gaps() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_translated(tone(0.1))
    mixer.push_translated(np.zeros(OUTPUT_RATE // 5, dtype=np.int16))
    mixer.push_translated(tone(0.1))
    for _ in range(5):
        mixer.pull_frame()
    assert frames_until_sound(mixer, 12) == 11
    assert mixer.silent_frames_skipped == 0


def test_mixer_forgets_gaps_after_pause() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_translated(tone(0.02))
    for _ in range(30):
        mixer.pull_frame()
    mixer.push_translated(np.zeros(OUTPUT_RATE // 5, dtype=np.int16))
    mixer.push_translated(tone(0.1))
    assert frames_until_sound(mixer, 12) == 11
    assert mixer.silent_frames_skipped == 0


def test_mixer_never_skips_speech() -> None:
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    mixer.push_translated(tone(1.0))
    frames = [mixer.pull_frame() for _ in range(50)]
    assert all(frame.any() for frame in frames)
    assert mixer.silent_frames_skipped == 0
    assert len(mixer.translated) == 0


async def test_outbound_track_sends_mono_opus_packets() -> None:
    """Each 20 ms becomes one packet that an Opus decoder turns back into it."""
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    sent = tone(0.5)
    mixer.push_translated(sent)
    track = OutboundAudioTrack(mixer)
    # aiortc's receiver decodes every stream as stereo, as a browser may.
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "stereo"
    decoder.sample_rate = OUTPUT_RATE
    received = []
    async with asyncio.timeout(5):
        for index in range(25):
            packet = await track.recv()
            assert packet.pts == index * SAMPLES_PER_FRAME
            assert packet.time_base == TIME_BASE
            for frame in decoder.decode(packet):
                received.append(frame.to_ndarray().reshape(-1, 2)[:, 0])
    track.stop()
    decoded = np.concatenate(received).astype(np.float64)
    assert decoded.size == sent.size
    # Opus delays its output by a few milliseconds; compare levels and pitch.
    sent_rms = np.sqrt(np.mean(sent.astype(np.float64) ** 2))
    decoded_rms = np.sqrt(np.mean(decoded[2400:] ** 2))
    assert abs(decoded_rms - sent_rms) / sent_rms < 0.1
    spectrum = np.abs(np.fft.rfft(decoded[2400:]))
    peak_hz = np.argmax(spectrum) * OUTPUT_RATE / (decoded.size - 2400)
    assert abs(peak_hz - 440) < 10
