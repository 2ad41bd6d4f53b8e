"""Hard cases for voice activity detection: a short word, a click, room noise
and a long monologue, as mono int16 samples at any rate.

Speech comes from espeak-ng like the rest of tests/support/speech.py; noise is
synthesized from a fixed seed, so every run feeds the same samples.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .speech import ESPEAK_TIMEOUT_S, Samples, load_audio, speech_sample

# Sentences with commas and no full stop, read as one 40 s breath group:
# espeak-ng 1.51 pauses about 0.2 s at a comma, shorter than the detector's
# default minimum silence, so only the length limit can split it.
MONOLOGUE_PART = (
    "the history of the river town begins with a small market by the water, "
    "and farmers brought grain and fruit, while traders came up the river in "
    "long boats, "
)
MONOLOGUE_REPEATS = 5
# Level of a sample that counts as sound when trimming synthesized speech.
TRIM_LEVEL = 200


def sentence(rate: int) -> Samples:
    """The English test sentence of tests/support/speech.py, trimmed, at `rate`."""
    return trim(load_audio(speech_sample("en").path, rate))


@functools.cache
def _espeak(text: str, speed: int, rate: int) -> Samples:
    with tempfile.TemporaryDirectory(prefix="callbridge-case-") as directory:
        path = Path(directory) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en", "-s", str(speed), "-w", str(path), "--stdin"],
            input=text,
            capture_output=True,
            text=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=True,
        )
        return load_audio(path, rate)


def short_word(rate: int) -> Samples:
    """ "OK" spoken fast: about 150 ms from its first to its last sound."""
    return trim(_espeak("OK", 350, rate))


def monologue(rate: int) -> Samples:
    """About 41 s of speech whose longest pause is a comma's."""
    return trim(_espeak(MONOLOGUE_PART * MONOLOGUE_REPEATS, 175, rate))


def click(rate: int) -> Samples:
    """A 1 ms full-scale square pulse, like a knock on the microphone."""
    length = max(2, rate // 1000)
    pulse = np.full(length, 30_000, dtype=np.int16)
    pulse[length // 2 :] = -30_000
    return pulse


def room_noise(seconds: float, rate: int, *, seed: int = 7) -> Samples:
    """Fan rumble and mains hum at about -30 dBFS, with a little hiss."""
    rng = np.random.default_rng(seed)
    count = int(seconds * rate)
    rumble = np.cumsum(rng.standard_normal(count))
    rumble -= np.convolve(rumble, np.ones(400) / 400, mode="same")
    rumble *= 800 / max(float(np.std(rumble)), 1e-9)
    t = np.arange(count) / rate
    hum = 300 * np.sin(2 * np.pi * 50 * t) + 150 * np.sin(2 * np.pi * 100 * t)
    hiss = 100 * rng.standard_normal(count)
    noise: Samples = np.clip(rumble + hum + hiss, -32768, 32767).astype(np.int16)
    return noise


def silence(seconds: float, rate: int) -> Samples:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def trim(samples: Samples) -> Samples:
    """Cut the silence before the first and after the last audible sample."""
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > TRIM_LEVEL)[0]
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


def duration_s(samples: Samples, rate: int) -> float:
    return len(samples) / rate
