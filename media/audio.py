"""Audio helpers: stateful resampling, PCM conversion and frame building.

Every frame the server sends is 20 ms of 48 kHz mono signed 16-bit PCM; the
sample rate, samples per frame, `pts` and `time_base` are fixed here together.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

OUTPUT_RATE = 48_000
FRAME_MS = 20
SAMPLES_PER_FRAME = OUTPUT_RATE * FRAME_MS // 1000
TIME_BASE = Fraction(1, OUTPUT_RATE)

Pcm = npt.NDArray[np.int16]


class Resampler:
    """Convert frames of any layout, format and rate to mono s16 at `rate`.

    One instance per stream: `av.AudioResampler` keeps filter state between
    frames, so sharing it between streams would smear one into the other.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def resample(self, frame: av.AudioFrame) -> Pcm:
        """Return the samples that `frame` yields now (may be empty)."""
        chunks = [
            out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)
        ]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        if len(chunks) == 1:
            return chunks[0].astype(np.int16, copy=False)
        return np.concatenate(chunks).astype(np.int16, copy=False)

    def resample_pcm(self, pcm: Pcm, rate: int) -> Pcm:
        """Resample mono s16 samples at `rate`; the input rate must not change."""
        if rate == self.rate:
            return pcm
        return self.resample(pcm_to_frame(pcm, rate))


def pcm_to_frame(pcm: Pcm, rate: int, pts: int | None = None) -> av.AudioFrame:
    """Wrap mono s16 samples in an `av.AudioFrame` with matching timing."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
        format="s16",
        layout="mono",
    )
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    if pts is not None:
        frame.pts = pts
    return frame


def output_frame(pcm: Pcm, pts: int) -> av.AudioFrame:
    """Build one outgoing 20 ms frame at 48 kHz."""
    assert pcm.shape == (SAMPLES_PER_FRAME,), pcm.shape
    return pcm_to_frame(pcm, OUTPUT_RATE, pts)


def pcm16_bytes_to_array(data: bytes) -> Pcm:
    """Decode little-endian PCM16 bytes; a trailing odd byte is dropped."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def mix(base: Pcm, extra: Pcm, gain: float) -> Pcm:
    """Add `extra` scaled by `gain` to `base`, clipping to the int16 range."""
    total = base.astype(np.int32) + (extra.astype(np.float32) * gain).astype(np.int32)
    return np.clip(total, -32768, 32767).astype(np.int16)
