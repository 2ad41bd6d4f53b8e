"""Checks of the benchmark's own measurements: marker detection and audio health.

Run with `.venv/bin/python -m pytest bench -q`; the project's test suite does
not collect this folder.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from bench.detect import Reception, find_marker, normalized_correlation
from bench.health import audio_health
from bench.plan import FRAME_SAMPLES, SAMPLE_RATE, Samples, SendPlan, build_plan
from tests.support.speech import resample, speech_sample


def decode_opus(packets: tuple[bytes, ...]) -> Samples:
    """Decode stereo Opus packets to the first channel at 48 kHz."""
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "stereo"
    chunks = []
    for index, payload in enumerate(packets):
        packet = av.Packet(payload)
        packet.pts = index * FRAME_SAMPLES
        packet.time_base = Fraction(1, SAMPLE_RATE)
        for frame in codec.decode(packet):
            resampler = av.AudioResampler(format="s16", layout="stereo")
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray()[0, ::2].copy())
    return np.concatenate(chunks).astype(np.int16)


def peak_correlation(signal: Samples, template: Samples) -> float:
    scores = normalized_correlation(
        signal.astype(np.float64), template.astype(np.float64)
    )
    return float(scores.max())


def reception_of(samples: Samples, start_time: float) -> Reception:
    frames = len(samples) // FRAME_SAMPLES
    return Reception.from_frames(
        [start_time + index * 0.02 for index in range(frames)],
        [index * FRAME_SAMPLES for index in range(frames)],
        [
            samples[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]
            for index in range(frames)
        ],
    )


PlanAndAudio = tuple[SendPlan, Samples]


@pytest.fixture(scope="module")
def plan_and_decoded() -> PlanAndAudio:
    plan = build_plan(speech_sample("en").samples)
    return plan, decode_opus(plan.packets)


def test_marker_survives_opus(plan_and_decoded: PlanAndAudio) -> None:
    plan, decoded = plan_and_decoded
    for template in plan.templates:
        assert peak_correlation(decoded, template) > 0.9


def test_marker_survives_engine_rate(plan_and_decoded: PlanAndAudio) -> None:
    plan, decoded = plan_and_decoded
    there_and_back = resample(resample(decoded, SAMPLE_RATE, 24_000), 24_000, 48_000)
    for template in plan.templates:
        assert peak_correlation(there_and_back, template) > 0.9


def test_speech_does_not_match_markers() -> None:
    plan = build_plan(speech_sample("en").samples)
    for language in ("en", "ru"):
        speech = speech_sample(language).samples
        for template in plan.templates:
            assert peak_correlation(speech, template) < 0.3


def test_markers_do_not_match_each_other() -> None:
    plan = build_plan(speech_sample("en").samples)
    for index, template in enumerate(plan.templates):
        for other_index, other in enumerate(plan.templates):
            if other_index == index:
                continue
            padded = np.concatenate((np.zeros(2000, np.int16), other, np.zeros(2000)))
            assert peak_correlation(padded.astype(np.int16), template) < 0.3


def test_find_marker_times_play_offset() -> None:
    plan = build_plan(speech_sample("en").samples)
    template = plan.templates[0]
    samples = np.zeros(SAMPLE_RATE, dtype=np.int16)
    onset = 10 * FRAME_SAMPLES + 480
    samples[onset : onset + len(template)] = template
    found = find_marker(reception_of(samples, 100.0), template, sent_at=99.5)
    assert found is not None
    play_time, score = found
    assert play_time == pytest.approx(100.0 + 10 * 0.02 + 0.01, abs=1e-6)
    assert score > 0.99


def test_find_marker_ignores_audio_before_send() -> None:
    plan = build_plan(speech_sample("en").samples)
    template = plan.templates[0]
    samples = np.zeros(SAMPLE_RATE, dtype=np.int16)
    samples[FRAME_SAMPLES : FRAME_SAMPLES + len(template)] = template
    assert find_marker(reception_of(samples, 100.0), template, sent_at=100.5) is None


def test_health_regular_frames_are_clean() -> None:
    samples = np.zeros(50 * FRAME_SAMPLES, dtype=np.int16)
    health = audio_health(reception_of(samples, 0.0))
    assert health.underruns == 0
    assert health.timestamp_jumps == 0


def test_health_counts_late_and_missing() -> None:
    arrivals = [index * 0.02 for index in range(20)]
    pts = [index * FRAME_SAMPLES for index in range(20)]
    arrivals[5] += 0.1  # one frame 100 ms late
    del arrivals[12:14]  # two frames lost
    del pts[12:14]
    chunks = [np.zeros(FRAME_SAMPLES, np.int16)] * len(pts)
    health = audio_health(Reception.from_frames(arrivals, pts, chunks))
    assert health.late_frames == 1
    assert health.missing_frames == 2
    assert health.timestamp_jumps == 1
