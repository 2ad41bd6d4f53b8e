"""Find markers in received audio and time their arrival."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.plan import SAMPLE_RATE, Samples

MATCH_THRESHOLD = 0.6
"""Normalized correlation above which a stretch of audio counts as the marker.

bench/test_detect.py measures 0.998 for every chirp after the Opus round trip
(96 kbit/s) and after resampling to 24 kHz and back, at most 0.26 for the two
test sentences and at most 0.26 for one chirp searched in another.
"""

SEARCH_S = 3.0
"""How far past its send time a marker is searched for; a later one is lost."""

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Reception:
    """The frames one receiver recorded: arrival times, timestamps and samples."""

    arrivals: Floats
    """time.monotonic() at which each frame came out of the remote track."""
    pts: npt.NDArray[np.int64]
    frame_starts: npt.NDArray[np.int64]
    """Index in `samples` of each frame's first sample."""
    samples: Samples

    @classmethod
    def from_frames(
        cls, arrivals: list[float], pts: list[int], chunks: list[Samples]
    ) -> Reception:
        sizes = np.array([len(chunk) for chunk in chunks], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        samples = (
            np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        ).astype(np.int16)
        return cls(
            arrivals=np.asarray(arrivals, dtype=np.float64),
            pts=np.asarray(pts, dtype=np.int64),
            frame_starts=starts if chunks else np.zeros(0, dtype=np.int64),
            samples=samples,
        )

    def play_time(self, sample_index: int) -> float:
        """Return when a sample would play: its frame's arrival plus its offset."""
        frame = int(np.searchsorted(self.frame_starts, sample_index, "right")) - 1
        offset = sample_index - int(self.frame_starts[frame])
        return float(self.arrivals[frame]) + offset / SAMPLE_RATE


def normalized_correlation(window: Floats, template: Floats) -> Floats:
    """Return the correlation of `template` with every full stretch of `window`.

    Each value is sum(t * w) / (|t| * |w|) over the stretch w that starts at
    that index, so 1.0 means the stretch is the template scaled up or down.
    Stretches more than 80 dB below the template score 0.
    """
    count = len(window) - len(template) + 1
    if count <= 0:
        return np.zeros(0)
    size = 1 << (len(window) + len(template) - 1).bit_length()
    spectrum = np.fft.rfft(window, size) * np.conj(np.fft.rfft(template, size))
    products = np.fft.irfft(spectrum, size)[:count]
    cumulative = np.concatenate(([0.0], np.cumsum(window**2)))
    energies = cumulative[len(template) :] - cumulative[:count]
    norms = np.sqrt(np.maximum(energies, 0.0))
    template_norm = float(np.linalg.norm(template))
    silent = norms < 1e-4 * template_norm
    result: Floats = np.where(
        silent, 0.0, products / np.where(silent, 1.0, norms) / template_norm
    )
    return result


def find_marker(
    reception: Reception, template: Samples, sent_at: float
) -> tuple[float, float] | None:
    """Return (play time of the marker's first sample, correlation), or None.

    The search starts at the first frame that arrived after `sent_at`, because
    no audio can arrive before it was sent, and covers SEARCH_S seconds.
    """
    first_frame = int(np.searchsorted(reception.arrivals, sent_at, "left"))
    if first_frame >= len(reception.frame_starts):
        return None
    start = int(reception.frame_starts[first_frame])
    stop = min(len(reception.samples), start + round(SEARCH_S * SAMPLE_RATE))
    window = reception.samples[start:stop].astype(np.float64)
    correlation = normalized_correlation(window, template.astype(np.float64))
    if len(correlation) == 0:
        return None
    peak = int(np.argmax(correlation))
    score = float(correlation[peak])
    if score < MATCH_THRESHOLD:
        return None
    return reception.play_time(start + peak), score
