"""Audio health at a receiver: late or missing frames and timestamp jumps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.detect import Reception
from bench.plan import FRAME_SAMPLES, SAMPLE_RATE, Samples
from tests.support.speech import speech_duration_s

JITTER_ALLOWANCE_S = 0.06
"""Playout buffer of the modelled listener: a frame later than this underruns.

60 ms is three frames, about what a browser's adaptive jitter buffer holds on
a quiet network.
"""


@dataclass(frozen=True)
class Health:
    frames: int
    late_frames: int
    """Frames that reached the listener after its playout buffer ran dry."""
    missing_frames: int
    """Frames absent from the RTP timestamp sequence."""
    timestamp_jumps: int
    """Consecutive frames whose timestamps differ by anything but one frame."""

    @property
    def underruns(self) -> int:
        return self.late_frames + self.missing_frames


def audio_health(reception: Reception) -> Health:
    """Replay the frames through a listener with a JITTER_ALLOWANCE_S buffer.

    The listener plays frame i at anchor + pts_i / SAMPLE_RATE, where the
    anchor is the earliest arrival so far minus its pts. A frame that arrives
    more than the allowance after its playout slot is late. The listener then
    re-buffers as a real player would, so the anchor moves to that frame.
    """
    late = 0
    missing = 0
    jumps = 0
    anchor: float | None = None
    previous_pts: int | None = None
    for arrival, pts in zip(
        reception.arrivals.tolist(), reception.pts.tolist(), strict=True
    ):
        offset = arrival - pts / SAMPLE_RATE
        if anchor is None or offset < anchor:
            anchor = offset
        elif offset - anchor > JITTER_ALLOWANCE_S:
            late += 1
            anchor = offset
        if previous_pts is not None:
            step = pts - previous_pts
            if step != FRAME_SAMPLES:
                jumps += 1
                if step > FRAME_SAMPLES:
                    missing += step // FRAME_SAMPLES - 1
        previous_pts = pts
    return Health(
        frames=len(reception.pts),
        late_frames=late,
        missing_frames=missing,
        timestamp_jumps=jumps,
    )


def speech_ratio(sent: Samples, received: Samples) -> float:
    """Return received speech duration over sent speech duration.

    Both are measured by tests.support.speech.speech_duration_s, whose
    threshold is relative to each signal's loudest 20 ms window.
    """
    sent_s = speech_duration_s(sent, SAMPLE_RATE)
    if sent_s == 0.0:
        return float("nan")
    return speech_duration_s(received, SAMPLE_RATE) / sent_s


def concatenate(chunks: list[Samples]) -> Samples:
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks).astype(np.int16)
