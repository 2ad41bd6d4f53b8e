"""Synthesized speech samples and the measurements tests make on audio.

Speech comes from espeak-ng, so tests need no recorded audio files, and a
test can compare what it sent with what it recorded at the other end of a call.
All arrays are mono int16 PCM.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

SAMPLE_RATE = 48000
"""Sample rate of WebRTC audio in aiortc (Opus), in Hz."""

WINDOW_S = 0.02
"""Length of one WebRTC audio frame, also the window of speech_duration_s."""

SPEECH_THRESHOLD_DB = -30.0
"""Level of a speech window relative to the loudest 20 ms window, in dB.

At -30 dB (3.2 % of the peak RMS) the quiet consonants of espeak-ng speech
count as speech and the pauses between words do not. Moving the threshold by
5 dB either way changes the durations of the SENTENCES by at most 6 %.
"""

ALIGNMENT_RATE = 8000
"""Sample rate at which best_alignment compares signals, in Hz.

Speech band-limited to 4 kHz is still intelligible, as telephone speech is,
so it is enough to tell sentences apart, and the lower rate keeps the FFTs of
a 10 s recording small.
"""

MATCH_CORRELATION = 0.5
"""Peak of best_alignment above which a recording counts as the sent speech.

tests/test_support_audio.py measures about 0.97 for both SENTENCES after an
aiortc call over loopback (Opus at 96 kbit/s), above 0.99 after resampling to
16 or 24 kHz and back, and below 0.1 for one sentence searched in the other.
Through the server, which sends mono Opus at 32 kbit/s, it is 0.87 to 0.91.
"""

SEGMENT_S = 0.25
"""Length of the pieces of speech that segment_matches aligns one by one."""

MAX_DRIFT_S = 0.1
"""How far segment_matches looks for a piece around where the whole speech is.

A jitter buffer or a playout queue under load may insert or skip a 20 ms frame
now and then, which shifts the rest of the speech by 20 ms. A single lag then
fits only the part before the shift, and the peak of best_alignment drops to
about the share of the speech on the larger side (0.5 to 0.6 seen on a loaded
machine). Each piece still matches within a few frames of that lag.
"""

MATCHED_SHARE = 0.8
"""Share of the pieces with speech that must match for the speech to be heard.

A piece that contains a shift matches worse, about 0.55, and may miss.
"""

ESPEAK_TIMEOUT_S = 30.0

Language = Literal["en", "ru"]

SENTENCES: dict[Language, str] = {
    "en": "The mountain air was cold and clear, so we walked down to the lake.",
    "ru": "Вчера вечером мы долго гуляли по старому парку и говорили о музыке.",  # noqa: RUF001
}
"""One sentence per language, 3.4 s (ru) and 4.0 s (en) long from espeak-ng 1.51."""


@dataclass(frozen=True)
class SpeechSample:
    """A synthesized sentence, as a WAV file and as 48 kHz samples."""

    language: Language
    text: str
    path: Path
    samples: Samples

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def make_speech(text: str, voice: str, path: Path) -> Path:
    """Synthesize text with espeak-ng into a WAV file at path and return path.

    voice is an espeak-ng voice name such as "en" or "ru" (see
    `espeak-ng --voices`). The file has espeak-ng's own rate, 22050 Hz.
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            "espeak-ng not found on PATH; install it with "
            "'apt-get install -y espeak-ng' to synthesize test speech"
        )
    # The text goes through stdin, so a sentence that starts with "-" is not
    # read as an option.
    command = ["espeak-ng", "-v", voice, "-w", str(path), "--stdin"]
    result = subprocess.run(
        command,
        input=text,
        capture_output=True,
        text=True,
        timeout=ESPEAK_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"espeak-ng failed with exit status {result.returncode} "
            f"for voice {voice!r}: {result.stderr.strip()!r}"
        )
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"espeak-ng wrote no audio to {str(path)!r}")
    return path


@functools.cache
def _speech_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="callbridge-speech-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@functools.cache
def speech_sample(language: Language) -> SpeechSample:
    """Return the sentence of SENTENCES for language, synthesized once per process.

    The WAV file lives in a temporary directory that is removed at exit.
    """
    text = SENTENCES[language]
    path = make_speech(text, language, _speech_directory() / f"{language}.wav")
    return SpeechSample(
        language=language, text=text, path=path, samples=load_audio(path)
    )


def _frame_samples(frame: av.AudioFrame) -> Samples:
    # A packed s16 mono frame converts to an array of shape (1, samples).
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


def load_audio(path: Path, rate: int = SAMPLE_RATE) -> Samples:
    """Decode the first audio stream of a media file to mono int16 at rate Hz."""
    chunks: list[Samples] = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"no audio stream in {str(path)!r}")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(stream):
            chunks.extend(_frame_samples(f) for f in resampler.resample(frame))
        chunks.extend(_frame_samples(f) for f in resampler.resample(None))
    return _concatenate(chunks)


def resample(samples: Samples, rate: int, new_rate: int) -> Samples:
    """Convert mono int16 samples from rate to new_rate Hz with libswresample."""
    if rate == new_rate or len(samples) == 0:
        return samples.copy()
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=new_rate)
    chunks = [_frame_samples(f) for f in resampler.resample(frame)]
    chunks.extend(_frame_samples(f) for f in resampler.resample(None))
    return _concatenate(chunks)


def _concatenate(chunks: list[Samples]) -> Samples:
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks)


def window_rms(samples: Samples, rate: int) -> npt.NDArray[np.float64]:
    """Return the RMS of each 20 ms window of samples, ignoring a partial last one."""
    window = int(rate * WINDOW_S)
    count = len(samples) // window
    windows = samples[: count * window].astype(np.float64).reshape(count, window)
    rms: npt.NDArray[np.float64] = np.sqrt(np.mean(windows**2, axis=1))
    return rms


def speech_duration_s(
    samples: Samples, rate: int, *, threshold_db: float = SPEECH_THRESHOLD_DB
) -> float:
    """Measure how long the speech in samples lasts, in seconds.

    Counts the 20 ms windows whose RMS is at least threshold_db relative to the
    loudest window, so pauses inside the speech are left out as well as the
    silence around it. Returns 0.0 for digital silence.
    """
    rms = window_rms(samples, rate)
    if len(rms) == 0 or rms.max() == 0.0:
        return 0.0
    threshold = rms.max() * 10.0 ** (threshold_db / 20.0)
    return int(np.count_nonzero(rms >= threshold)) * WINDOW_S


def best_alignment(
    sent: Samples, received: Samples, rate: int, *, inside: bool = False
) -> tuple[float, float]:
    """Find where sent occurs in received, as (lag in seconds, peak correlation).

    The correlation at a lag is sum(s * r) / (|s| * |r|) over the stretch r of
    received under sent. By Cauchy-Schwarz it is at most 1.0, reached when that
    stretch is sent scaled by a positive factor. A lag of 0.0 means sent starts
    with received. A negative lag means received begins partway into sent, and
    the missing part lowers the peak.

    Both signals are compared in the band below ALIGNMENT_RATE / 2, where
    speech carries its words. The search runs at ALIGNMENT_RATE. Then the peak
    is refined at the original rate, because a lag that falls between two
    8 kHz samples lowers the peak of identical speech to about 0.92.

    With inside=True only lags that put all of sent inside received count.
    """
    if not np.any(sent) or len(received) == 0:
        raise ValueError(
            "cannot align: sent is silent or received is empty "
            f"(sent {len(sent)} samples, received {len(received)} samples)"
        )
    s = resample(sent, rate, ALIGNMENT_RATE)
    r = resample(received, rate, ALIGNMENT_RATE)
    correlations = _correlations(s.astype(np.float64), r.astype(np.float64))
    if inside:
        if len(r) < len(s):
            raise ValueError("cannot align inside: received is shorter than sent")
        # Index len(s) - 1 is lag 0, and the last lag inside is len(r) - len(s).
        correlations = correlations[len(s) - 1 : len(r)]
        coarse_lag = int(np.argmax(correlations))
    else:
        coarse_lag = int(np.argmax(correlations)) - (len(s) - 1)

    # Back at the original rate the band-limited signals have sample-exact
    # lags. Search within two ALIGNMENT_RATE samples of the coarse peak.
    s_band = resample(s, ALIGNMENT_RATE, rate).astype(np.float64)
    r_band = resample(r, ALIGNMENT_RATE, rate).astype(np.float64)
    scale = rate / ALIGNMENT_RATE
    reach = 2 * math.ceil(scale)
    center = round(coarse_lag * scale)
    lags = range(center - reach, center + reach + 1)
    if inside:
        last = len(r_band) - len(s_band)
        lags = range(max(0, lags.start), min(last, lags.stop - 1) + 1)
    peak, lag = max((_correlation_at(s_band, r_band, lag), lag) for lag in lags)
    return lag / rate, peak


def _correlations(
    s: npt.NDArray[np.float64], r: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Return the correlation at every lag from -(len(s) - 1) to len(r) - 1."""
    # Cross-correlation through the FFT, padded so that the circular result
    # contains the negative lags at its end without wrapping into them.
    size = 1 << (len(s) + len(r) - 1).bit_length()
    spectrum = np.fft.rfft(r, size) * np.conj(np.fft.rfft(s, size))
    circular = np.fft.irfft(spectrum, size)
    products = np.concatenate([circular[size - (len(s) - 1) :], circular[: len(r)]])

    # |r| under sent at each lag, from a running sum of squares over received
    # padded with len(s) - 1 zeros on each side.
    zeros = np.zeros(len(s) - 1)
    cumulative = np.concatenate(
        [[0.0], np.cumsum(np.concatenate([zeros, r**2, zeros]))]
    )
    r_norms = np.sqrt(np.maximum(cumulative[len(s) :] - cumulative[: -len(s)], 0.0))

    # Stretches more than 80 dB below sent score 0, because they cannot match
    # and rounding in the running sum would dominate their normalized value.
    s_norm = float(np.linalg.norm(s))
    silent = r_norms < 1e-4 * s_norm
    correlations: npt.NDArray[np.float64] = np.where(
        silent, 0.0, products / np.where(silent, 1.0, r_norms) / s_norm
    )
    return correlations


def _correlation_at(
    s: npt.NDArray[np.float64], r: npt.NDArray[np.float64], lag: int
) -> float:
    """Return the correlation of s with r when s[0] lines up with r[lag]."""
    s_start = max(0, -lag)
    r_start = max(0, lag)
    length = min(len(s) - s_start, len(r) - r_start)
    if length <= 0:
        return 0.0
    s_overlap = s[s_start : s_start + length]
    r_overlap = r[r_start : r_start + length]
    r_norm = float(np.linalg.norm(r_overlap))
    if r_norm == 0.0:
        return 0.0
    return float(s_overlap @ r_overlap) / (float(np.linalg.norm(s)) * r_norm)


@dataclass(frozen=True)
class SegmentMatch:
    """Where one SEGMENT_S piece of sent speech was found in a recording."""

    start_s: float
    """Start of the piece in the sent speech."""
    drift_s: float
    """Position in the recording minus the position that lag_s predicts."""
    peak: float


def segment_matches(
    sent: Samples, received: Samples, rate: int, lag_s: float
) -> list[SegmentMatch]:
    """Align each SEGMENT_S piece of sent that contains speech on its own.

    A piece is searched in received within MAX_DRIFT_S of where lag_s (from
    best_alignment) puts it. Pieces with no window at least
    SPEECH_THRESHOLD_DB relative to the loudest window of sent are left out.
    A piece that falls outside received scores 0.
    """
    length = round(SEGMENT_S * rate)
    drift = round(MAX_DRIFT_S * rate)
    rms = window_rms(sent, rate)
    threshold = rms.max() * 10.0 ** (SPEECH_THRESHOLD_DB / 20.0)
    matches: list[SegmentMatch] = []
    for start in range(0, len(sent) - length + 1, length):
        piece = sent[start : start + length]
        if window_rms(piece, rate).max() < threshold:
            continue
        expected = round(lag_s * rate) + start
        low = max(0, expected - drift)
        window = received[low : expected + length + drift]
        if len(window) < length or not np.any(window):
            matches.append(SegmentMatch(start / rate, 0.0, 0.0))
            continue
        lag, peak = best_alignment(piece, window, rate, inside=True)
        drift_s = (low + round(lag * rate) - expected) / rate
        matches.append(SegmentMatch(start / rate, drift_s, peak))
    return matches


def heard_share(sent: Samples, received: Samples, rate: int) -> tuple[float, float]:
    """Return (lag in seconds, share of speech pieces matched) of sent in received.

    The lag is best_alignment's. A piece matches when its own peak within
    MAX_DRIFT_S of that lag is above MATCH_CORRELATION.
    """
    lag_s, _ = best_alignment(sent, received, rate)
    matches = segment_matches(sent, received, rate, lag_s)
    if not matches:
        raise ValueError("cannot match pieces: sent contains no speech")
    matched = sum(m.peak > MATCH_CORRELATION for m in matches)
    return lag_s, matched / len(matches)
