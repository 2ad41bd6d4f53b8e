"""The utterance detector on synthesized speech and noise, fed faster than
real time straight into `UtteranceDetector.push`."""

from __future__ import annotations

import numpy as np
import pytest

from media.vad import VAD_RATE, Utterance, UtteranceDetector, VadConfig
from tests.support.speech import best_alignment
from tests.support.speech_cases import (
    click,
    monologue,
    room_noise,
    sentence,
    short_word,
    silence,
)

RATE = VAD_RATE


def detect(*parts: np.ndarray, config: VadConfig | None = None) -> list[Utterance]:
    """Run the parts, with 1 s of silence after them, through a fresh detector."""
    detector = UtteranceDetector(config or VadConfig())
    audio = np.concatenate([*parts, silence(1.0, RATE)])
    utterances: list[Utterance] = []
    # 20 ms pushes, as the direction delivers them.
    step = RATE // 50
    for start in range(0, audio.size, step):
        utterances.extend(detector.push(audio[start : start + step]))
    final = detector.flush()
    if final is not None:
        utterances.append(final)
    return utterances


def test_sentence_is_one_utterance_with_onset() -> None:
    speech = sentence(RATE)
    utterances = detect(silence(1.0, RATE), speech)
    assert len(utterances) == 1
    lag_s, peak = best_alignment(speech, utterances[0].pcm, RATE)
    assert peak > 0.99, f"correlation {peak:.3f} with the sentence"
    # The first sound of the sentence lies after at least 200 ms of pre-roll.
    assert lag_s >= 0.2, f"the sentence starts {lag_s:.3f} s into the utterance"


def test_sentence_utterance_ends_after_min_silence() -> None:
    utterances = detect(silence(1.0, RATE), sentence(RATE))
    assert utterances[0].split is False
    assert utterances[0].end_lag_s >= VadConfig().min_silence_s


def test_short_word_is_kept() -> None:
    word = short_word(RATE)
    assert 0.12 <= len(word) / RATE <= 0.18, f"the word lasts {len(word) / RATE} s"
    utterances = detect(silence(0.5, RATE), word)
    assert len(utterances) == 1
    _, peak = best_alignment(word, utterances[0].pcm, RATE)
    assert peak > 0.99


def test_click_is_not_speech() -> None:
    assert detect(silence(0.5, RATE), click(RATE)) == []


def test_room_noise_is_not_speech() -> None:
    assert detect(room_noise(2.0, RATE)) == []


def test_speech_in_room_noise_is_found() -> None:
    speech = sentence(RATE)
    noise = room_noise(1.0 + len(speech) / RATE, RATE)
    mixed = noise.astype(np.int32)
    mixed[RATE : RATE + speech.size] += speech
    utterances = detect(np.clip(mixed, -32768, 32767).astype(np.int16))
    assert len(utterances) == 1


def test_monologue_is_split_below_limit() -> None:
    speech = monologue(RATE)
    assert len(speech) / RATE > 38.0
    utterances = detect(speech)
    limit = VadConfig().max_utterance_s
    assert len(utterances) >= 3
    assert all(u.duration_s <= limit for u in utterances)
    assert any(u.split for u in utterances)
    kept = sum(u.pcm.size for u in utterances)
    assert kept >= 0.98 * speech.size, f"kept {kept / speech.size:.3f} of the audio"


def test_monologue_split_points_are_quiet() -> None:
    utterances = detect(monologue(RATE))
    for utterance in (u for u in utterances if u.split):
        end = utterance.pcm[-RATE // 50 :].astype(np.float64)
        peak_rms = float(np.sqrt(np.mean(utterance.pcm.astype(np.float64) ** 2)))
        end_rms = float(np.sqrt(np.mean(end**2)))
        assert end_rms < 0.25 * peak_rms, f"split where RMS is {end_rms:.0f}"


def test_short_pause_joins_words() -> None:
    word = short_word(RATE)
    pause = silence(0.3, RATE)
    utterances = detect(silence(0.5, RATE), word, pause, word)
    assert len(utterances) == 1


def test_min_silence_setting_separates_words() -> None:
    word = short_word(RATE)
    pause = silence(0.3, RATE)
    config = VadConfig(min_silence_s=0.15)
    utterances = detect(silence(0.5, RATE), word, pause, word, config=config)
    assert len(utterances) == 2


def test_min_speech_setting_drops_short_word() -> None:
    config = VadConfig(min_speech_s=0.5)
    assert detect(silence(0.5, RATE), short_word(RATE), config=config) == []


def test_start_threshold_setting_changes_speech_time() -> None:
    speech = sentence(RATE)
    (default,) = detect(silence(0.5, RATE), speech)
    strict = VadConfig(start_threshold=0.99, stop_threshold=0.9)
    (high,) = detect(silence(0.5, RATE), speech, config=strict)
    assert high.speech_s < default.speech_s


@pytest.mark.parametrize(
    ("start", "stop"), [(0.3, 0.5), (0.0, 0.0), (1.0, 0.5), (0.5, 0.0)]
)
def test_config_rejects_bad_thresholds(start: float, stop: float) -> None:
    with pytest.raises(ValueError, match="thresholds are invalid"):
        VadConfig(start_threshold=start, stop_threshold=stop)
