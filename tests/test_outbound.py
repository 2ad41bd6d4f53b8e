"""The listener's mixer and the paced outbound track."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import pytest

from media.audio import OUTPUT_RATE, SAMPLES_PER_FRAME, TIME_BASE
from media.outbound import (
    HEADROOM_DECAY_FRAMES,
    ORIGINAL_CAPACITY_S,
    ORIGINAL_TARGET_S,
    ORIGINAL_TRIM_AFTER_FRAMES,
    ListenerMixer,
    OutboundAudioTrack,
    SampleQueue,
)

# The maximum headroom of the mixers that test it; the product's is off by
# default (PLAYOUT_HEADROOM_MS).
HEADROOM_S = 0.2


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


def make_late_gap(mixer: ListenerMixer) -> None:
    """Play 100 ms of tone, then leave two frames empty as a late delta does."""
    mixer.push_translated(tone(0.1))
    assert frames_until_sound(mixer, 1) == 1
    for _ in range(4):
        mixer.pull_frame()
    assert not mixer.pull_frame().any()
    assert not mixer.pull_frame().any()


def test_mixer_takes_lone_gap_back() -> None:
    """A single late delta's gap is taken back from the zeros that follow it."""
    mixer = ListenerMixer()
    mixer.set_original_mode("off")
    make_late_gap(mixer)
    mixer.push_translated(np.zeros(OUTPUT_RATE // 5, dtype=np.int16))
    mixer.push_translated(tone(0.2))
    # The 10 frames of zeros play as 8: the 2 late frames are taken back.
    assert frames_until_sound(mixer, 12) == 9
    assert mixer.silent_frames_skipped == 2
    assert mixer.gap_frames == 2
    assert mixer.headroom == 0


@pytest.mark.parametrize(
    ("max_headroom_s", "first_sound", "skipped", "headroom_frames"),
    [
        # By default both gaps are taken back from the 10 frames of zeros.
        (0.0, 10 - 4 + 1, 4, 0),
        # With headroom the zeros all play, and the stream stays 80 ms behind.
        (HEADROOM_S, 11, 0, 4),
    ],
)
def test_mixer_recurring_gaps(
    max_headroom_s: float, first_sound: int, skipped: int, headroom_frames: int
) -> None:
    """A second gap soon after the first stays as headroom, when allowed."""
    mixer = ListenerMixer(max_headroom_s=max_headroom_s)
    mixer.set_original_mode("off")
    make_late_gap(mixer)
    make_late_gap(mixer)
    mixer.push_translated(np.zeros(OUTPUT_RATE // 5, dtype=np.int16))
    mixer.push_translated(tone(0.2))
    assert frames_until_sound(mixer, 12) == first_sound
    assert mixer.silent_frames_skipped == skipped
    assert mixer.headroom == headroom_frames * SAMPLES_PER_FRAME
    assert mixer.gap_frames == 4


def test_mixer_takes_headroom_back_from_silence() -> None:
    """Without further gaps the headroom shrinks, and zeros pay it back."""
    mixer = ListenerMixer(max_headroom_s=HEADROOM_S)
    mixer.set_original_mode("off")
    make_late_gap(mixer)
    make_late_gap(mixer)
    # A stream of zeros at real time: one frame ahead of the clock, plus the
    # four frames that came late.
    zero_frame = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
    for _ in range(5):
        mixer.push_translated(zero_frame)
    for _ in range(HEADROOM_DECAY_FRAMES - 1):
        mixer.push_translated(zero_frame)
        mixer.pull_frame()
    assert mixer.headroom == 4 * SAMPLES_PER_FRAME
    assert mixer.silent_frames_skipped == 0
    for _ in range(3 * HEADROOM_DECAY_FRAMES + 5):
        mixer.push_translated(zero_frame)
        mixer.pull_frame()
    assert mixer.headroom == 0
    assert mixer.silent_frames_skipped == 4


def play_jittery_chunks(jitter_frames: int, seconds: int = 60) -> ListenerMixer:
    """Play phrases of tone and zeros that arrive as 200 ms chunks.

    Each chunk comes up to `jitter_frames` late at random. Returns the mixer,
    whose gap_frames counts the frames that went out short.
    """
    rng = np.random.default_rng(7)
    mixer = ListenerMixer(max_headroom_s=HEADROOM_S)
    mixer.set_original_mode("off")
    chunk_frames = 10
    chunks = [
        tone(0.2) if number % 7 < 5 else np.zeros(OUTPUT_RATE // 5, dtype=np.int16)
        for number in range(seconds * 5)
    ]
    arrivals = [
        number * chunk_frames + int(rng.integers(0, jitter_frames + 1))
        for number in range(len(chunks))
    ]
    pushed = 0
    for tick in range(len(chunks) * chunk_frames):
        while pushed < len(chunks) and arrivals[pushed] <= tick:
            mixer.push_translated(chunks[pushed])
            pushed += 1
        mixer.pull_frame()
    return mixer


def test_mixer_absorbs_jittery_deltas() -> None:
    # Up to 60 ms late: without headroom 179 of the 3,000 frames in this
    # minute went out short. With it, only the first chunks and the probes
    # after each decay leave a gap.
    mixer = play_jittery_chunks(jitter_frames=3)
    assert mixer.gap_frames <= 16
    assert mixer.headroom == 3 * SAMPLES_PER_FRAME


def starve(mixer: ListenerMixer, frames: int) -> None:
    """Play 100 ms of tone, then `frames` empty frames, fewer than a pause."""
    mixer.push_translated(tone(0.1))
    for _ in range(5):
        assert mixer.pull_frame().any()
    for _ in range(frames):
        assert not mixer.pull_frame().any()


def test_mixer_headroom_is_capped() -> None:
    mixer = ListenerMixer(max_headroom_s=HEADROOM_S)
    mixer.set_original_mode("off")
    cap = int(HEADROOM_S * OUTPUT_RATE)
    starve(mixer, 8)
    starve(mixer, 8)
    assert cap < 16 * SAMPLES_PER_FRAME
    mixer.push_translated(np.zeros(OUTPUT_RATE, dtype=np.int16))
    mixer.push_translated(tone(0.2))
    # 50 frames of zeros: the debt above the cap, 6 frames, is taken back.
    assert frames_until_sound(mixer, 60) == 50 - 6 + 1
    assert mixer.headroom == cap
    assert mixer.silent_frames_skipped == 16 - cap // SAMPLES_PER_FRAME


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
    # A pause is not a gap: it neither counts nor leaves headroom.
    assert mixer.gap_frames == 0
    assert mixer.headroom == 0


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
