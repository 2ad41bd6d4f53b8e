"""Per-frame cost of each media step, timed in isolation.

py-spy shows where the server's samples fall, but a thread waiting for the
GIL is sampled where it waits, so its shares of small Python functions are
rough. These microbenchmarks give the cost of one 20 ms frame through each
step on its own, for the cost model in BENCHMARKS.md. They time the product's
own helpers from media/ without changing them.
"""

from __future__ import annotations

import itertools
import timeit
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import compute_audio_level_dbov

from bench.plan import FRAME_SAMPLES, SAMPLE_RATE, SendPlan
from media.audio import Resampler, output_frame
from media.outbound import ListenerMixer
from media.outbound import OpusEncoder as MonoOpusEncoder

REPEATS = 5
CALLS_PER_REPEAT = 400


def _best_us(action: Callable[[], Any]) -> float:
    """Return the fastest of REPEATS timings of `action`, in microseconds per call.

    The minimum is the least disturbed by other work on a shared machine.
    """
    timings = timeit.repeat(action, number=CALLS_PER_REPEAT, repeat=REPEATS)
    return 1e6 * min(timings) / CALLS_PER_REPEAT


def _libopus(layout: str, bit_rate: int) -> Callable[[], Any]:
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = bit_rate
    codec.format = "s16"
    codec.layout = layout
    codec.sample_rate = SAMPLE_RATE
    codec.time_base = Fraction(1, SAMPLE_RATE)
    codec.options = {"application": "voip"}
    mono = (np.sin(np.arange(FRAME_SAMPLES) * 0.05) * 8000).astype(np.int16)
    samples = np.repeat(mono, 2) if layout == "stereo" else mono
    counter = itertools.count()

    def encode() -> Any:
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout=layout
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = next(counter) * FRAME_SAMPLES
        frame.time_base = Fraction(1, SAMPLE_RATE)
        return codec.encode(frame)

    return encode


def measure_frame_costs(plan: SendPlan) -> list[tuple[str, float]]:
    """Return (step, microseconds per 20 ms frame) for each media step."""
    decoded = OpusDecoder().decode(JitterFrame(plan.packets[10], 0))[0]
    if not isinstance(decoded, av.AudioFrame):
        raise TypeError(f"expected an audio frame from the decoder, got {decoded!r}")
    speech = np.asarray(decoded.to_ndarray()[0, ::2], dtype=np.int16)
    server_frame = output_frame(speech, 0)
    encoder = OpusEncoder()
    decoder = OpusDecoder()
    counter = itertools.count()

    def encode_server_frame() -> Any:
        return encoder.encode(output_frame(speech, next(counter) * FRAME_SAMPLES))

    own_encoder = MonoOpusEncoder()

    def encode_own_frame() -> Any:
        return own_encoder.encode(output_frame(speech, next(counter) * FRAME_SAMPLES))

    to_listener = Resampler(48_000)
    to_engine = Resampler(24_000)
    mixer = ListenerMixer()

    def mix_original() -> Any:
        mixer.push_original(speech)
        return mixer.pull_frame()

    return [
        (
            "aiortc OpusEncoder.encode of one server frame",
            _best_us(encode_server_frame),
        ),
        (
            "libopus alone, stereo 96 kbit/s (aiortc's settings)",
            _best_us(_libopus("stereo", 96_000)),
        ),
        ("libopus alone, mono 48 kbit/s", _best_us(_libopus("mono", 48_000))),
        (
            "media OpusEncoder.encode of one server frame (mono 32 kbit/s, sent)",
            _best_us(encode_own_frame),
        ),
        (
            "aiortc OpusDecoder.decode",
            _best_us(lambda: decoder.decode(JitterFrame(plan.packets[10], 0))),
        ),
        (
            "aiortc compute_audio_level_dbov, server frame (960 mono samples)",
            _best_us(lambda: compute_audio_level_dbov(server_frame)),
        ),
        (
            "aiortc compute_audio_level_dbov, frame as decoded (buffer of 120 ms)",
            _best_us(lambda: compute_audio_level_dbov(decoded)),
        ),
        (
            "media Resampler, decoded frame to 48 kHz mono",
            _best_us(lambda: to_listener.resample(decoded)),
        ),
        (
            "media Resampler, decoded frame to 24 kHz mono",
            _best_us(lambda: to_engine.resample(decoded)),
        ),
        ("media ListenerMixer push_original + pull_frame", _best_us(mix_original)),
        ("media output_frame", _best_us(lambda: output_frame(speech, 0))),
    ]
