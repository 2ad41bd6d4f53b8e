"""The audio each benchmark peer sends: speech, then chirp markers in silence.

One cycle is a spoken sentence, 0.5 s of silence, then four 50 ms chirps, each
followed by 0.45 s of silence. A peer plays the cycle in a loop. The receiver
finds each chirp by cross-correlation and times its arrival.

The silence before every chirp is at least 0.45 s, longer than two 200 ms
frames of the translation engine. So the fake OpenAI always receives the
chirp's frame after a silent frame, and returns it when the next input frame
arrives. Every marker therefore waits one engine frame (200 ms) in the fake,
which the report subtracts. The four chirps differ (up and down sweeps over
two bands), so a marker is not mistaken for its neighbour 0.5 s away even
when the latency is longer than that.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960
"""Samples in one 20 ms WebRTC audio frame at SAMPLE_RATE."""

OPUS_BITRATE = 96_000
"""The bit rate aiortc 1.16 gives its own Opus encoder."""
SILENCE_WARM_UP_FRAMES = 10

MARKER_S = 0.05
MARKER_SLOT_S = 0.5
LEAD_SILENCE_S = 0.5
MARKER_AMPLITUDE = 16_000
RAMP_S = 0.002
# Start and end frequency in Hz of each marker's linear sweep.
MARKER_SWEEPS: tuple[tuple[float, float], ...] = (
    (600.0, 3000.0),
    (3000.0, 600.0),
    (1000.0, 4000.0),
    (4000.0, 1000.0),
)


@dataclass(frozen=True)
class SendPlan:
    """One cycle of sent audio and where its markers start."""

    samples: Samples
    marker_starts: tuple[int, ...]
    """Sample index in the cycle of each marker's first sample, frame-aligned."""
    templates: tuple[Samples, ...]
    """The waveform of each marker, in the order of marker_starts."""

    packets: tuple[bytes, ...]
    """The cycle as Opus packets, one per frame, encoded once ahead of time."""
    silence: bytes
    """An Opus packet of digital silence."""

    @property
    def frames(self) -> int:
        return len(self.samples) // FRAME_SAMPLES


def chirp(start_hz: float, end_hz: float) -> Samples:
    """Return a linear sweep of MARKER_S seconds with short raised-cosine ramps."""
    count = round(MARKER_S * SAMPLE_RATE)
    t = np.arange(count) / SAMPLE_RATE
    rate = (end_hz - start_hz) / MARKER_S
    phase = 2 * np.pi * (start_hz * t + 0.5 * rate * t**2)
    envelope = np.ones(count)
    ramp = round(RAMP_S * SAMPLE_RATE)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[:ramp] = rise
    envelope[-ramp:] = rise[::-1]
    return (MARKER_AMPLITUDE * envelope * np.sin(phase)).astype(np.int16)


def _frames_for(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE) // FRAME_SAMPLES


def build_plan(speech: Samples) -> SendPlan:
    """Build one cycle: `speech` padded to whole frames, then the markers."""
    speech_frames = -(-len(speech) // FRAME_SAMPLES)
    lead_frames = _frames_for(LEAD_SILENCE_S)
    slot_frames = _frames_for(MARKER_SLOT_S)
    total_frames = speech_frames + lead_frames + slot_frames * len(MARKER_SWEEPS)
    samples = np.zeros(total_frames * FRAME_SAMPLES, dtype=np.int16)
    samples[: len(speech)] = speech
    templates = tuple(chirp(start, end) for start, end in MARKER_SWEEPS)
    starts: list[int] = []
    for index, template in enumerate(templates):
        frame = speech_frames + lead_frames + index * slot_frames
        start = frame * FRAME_SAMPLES
        samples[start : start + len(template)] = template
        starts.append(start)
    packets = _encode_opus(np.concatenate((samples, samples)))
    frames = len(samples) // FRAME_SAMPLES
    silence = _encode_opus(
        np.zeros(SILENCE_WARM_UP_FRAMES * FRAME_SAMPLES, dtype=np.int16)
    )
    return SendPlan(
        samples=samples,
        marker_starts=tuple(starts),
        templates=templates,
        # The second pass, so the encoder state at the loop point is the one
        # that playing the cycle in a loop would give.
        packets=tuple(packets[frames : 2 * frames]),
        silence=silence[-1],
    )


def _encode_opus(samples: Samples) -> list[bytes]:
    """Encode mono samples as stereo Opus, one packet per 20 ms frame.

    Peers send these packets instead of encoding live, so the load generator
    spends its core on the calls' network and receive side, not on Opus.
    Settings match aiortc's encoder (stereo, 96 kbit/s, application voip),
    including its lookahead of 312 samples (6.5 ms) that delays the audio.
    """
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = OPUS_BITRATE
    codec.format = "s16"
    codec.layout = "stereo"
    codec.sample_rate = SAMPLE_RATE
    codec.time_base = Fraction(1, SAMPLE_RATE)
    codec.options = {"application": "voip"}
    packets: list[bytes] = []
    for start in range(0, len(samples) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        stereo = np.repeat(samples[start : start + FRAME_SAMPLES], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    return packets
