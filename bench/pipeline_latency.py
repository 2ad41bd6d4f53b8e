"""Measure the pipeline engine's added latency against the fake OpenAI.

Short espeak-ng phrases, separated by silence, are played in real time as
20 ms, 48 kHz frames into a `Direction` with the pipeline engine, as a call
would deliver them. The fake responds at once and speaks each translation as
a 440 Hz tone. The script reads the listener's outbound track at its own
20 ms pace and times, for each phrase, the end of its speech in the input to
the first outbound frame of its translation. That span holds the VAD's wait
for silence (VAD_MIN_SILENCE_MS), the three requests to the fake, the
resampling and up to one 20 ms frame of the track's pacing; network and model
time of a real service come on top.

Run: .venv/bin/python -m bench.pipeline_latency --utterances 60
Everything runs on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from openai import AsyncOpenAI

from media.audio import OUTPUT_RATE, SAMPLES_PER_FRAME, Pcm
from media.direction import Direction
from media.engines.base import SessionLabels, SessionListener, State, TranscriptKind
from media.engines.pipeline import PipelineConfig, PipelineEngine, PipelineSession
from media.outbound import ListenerMixer, OutboundAudioTrack
from media.vad import VadConfig
from tests.fake_openai import FakeOpenAI
from tests.support.speech import load_audio, make_speech
from tests.support.speech_cases import silence, trim

PHRASES = (
    "Good morning, how are you today?",
    "Please send me the report.",
    "The meeting starts at ten.",
    "I will call you back later.",
    "Can you hear me clearly now?",
    "Thank you for your help.",
    "Let us meet next week.",
    "The weather is nice today.",
    "Where is the train station?",
    "I agree with your plan.",
)
# Silence after each phrase: longer than the VAD's minimum silence plus the
# translated tone, so one phrase's tone never delays the next one's.
GAP_S = 1.5
# Tone seconds per character of the translation, about 0.5 s per phrase.
TONE_S_PER_CHAR = 0.01
FRAME_S = SAMPLES_PER_FRAME / OUTPUT_RATE
# A frame quieter than this RMS contains no translated audio.
SILENT_RMS = 50.0


@dataclass
class _Events:
    """A DirectionListener that only keeps the states."""

    states: list[tuple[State, str, str]]

    def on_caption(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        pass

    def on_translation_state(self, state: State, engine: str, reason: str) -> None:
        self.states.append((state, engine, reason))

    def on_translation_failed(self, message: str) -> None:
        raise RuntimeError(f"translation failed: {message}")


class _RecordingEngine(PipelineEngine):
    """The pipeline engine, keeping the session it opened for its figures."""

    session: PipelineSession | None = None

    def open_session(
        self,
        *,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
        source_language: str | None = None,
    ) -> PipelineSession:
        self.session = super().open_session(
            target_language=target_language,
            listener=listener,
            labels=labels,
            source_language=source_language,
        )
        return self.session


def phrase_audio(directory: str) -> list[Pcm]:
    clips = []
    for index, text in enumerate(PHRASES):
        path = make_speech(text, "en", Path(directory) / f"phrase{index}.wav")
        clips.append(trim(load_audio(path, OUTPUT_RATE)))
    return clips


async def play(
    direction: Direction, clips: list[Pcm], count: int, ends: list[float]
) -> None:
    """Feed `count` phrases in real time; append each one's end of speech."""
    loop = asyncio.get_running_loop()
    pts = 0
    start = loop.time()
    for number in range(count):
        clip = clips[number % len(clips)]
        audio = np.concatenate([clip, silence(GAP_S, OUTPUT_RATE)])
        end_sample = clip.size
        for offset in range(0, audio.size - SAMPLES_PER_FRAME + 1, SAMPLES_PER_FRAME):
            frame = av.AudioFrame.from_ndarray(
                audio[offset : offset + SAMPLES_PER_FRAME].reshape(1, -1),
                format="s16",
                layout="mono",
            )
            frame.sample_rate = OUTPUT_RATE
            frame.time_base = Fraction(1, OUTPUT_RATE)
            frame.pts = pts
            pts += SAMPLES_PER_FRAME
            await asyncio.sleep(max(0.0, start + pts / OUTPUT_RATE - loop.time()))
            direction.on_frame(frame)
            if offset <= end_sample < offset + SAMPLES_PER_FRAME:
                ends.append(time.monotonic())


async def listen(track: OutboundAudioTrack, onsets: list[float]) -> None:
    """Read the track at its pace; record when each burst of audio starts."""
    sounding = False
    while True:
        frame = await track.next_frame()
        samples = frame.to_ndarray().reshape(-1).astype(np.float64)
        loud = float(np.sqrt(np.mean(samples**2))) > SILENT_RMS
        if loud and not sounding:
            onsets.append(time.monotonic())
        sounding = loud


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def run(count: int, min_silence_ms: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as directory:
        clips = phrase_audio(directory)
    fake = FakeOpenAI()
    await fake.start()
    fake.rest.speech_echo = False
    fake.rest.speech_s_per_char = TONE_S_PER_CHAR
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0)
    try:
        config = PipelineConfig(vad=VadConfig(min_silence_s=min_silence_ms / 1000))
        engine = _RecordingEngine(client=client, config=config)
        ends, onsets = await measure(engine, clips, count)
    finally:
        await client.close()
        await fake.stop()

    session = engine.session
    assert session is not None
    latencies = first_onsets(ends, onsets)
    return {
        "utterances_played": count,
        "utterances_translated": len(latencies),
        "vad_min_silence_ms": min_silence_ms,
        "end_of_speech_to_first_frame_out": summary(latencies),
        "vad_detection_to_first_audio": summary(session.processing_s),
        "engine_metric_end_of_speech_to_first_audio": summary(session.latencies_s),
    }


async def measure(
    engine: PipelineEngine, clips: list[Pcm], count: int
) -> tuple[list[float], list[float]]:
    """Play the phrases through a direction; return speech ends and audio onsets."""
    mixer = ListenerMixer()
    direction = Direction(
        engine=engine,
        target_language="de",
        mixer=mixer,
        listener=_Events([]),
        labels=SessionLabels(call_id="c_bench", participant_id="p_bench"),
        hear_original=False,
        source_language="en",
    )
    track = OutboundAudioTrack(mixer)
    ends: list[float] = []
    onsets: list[float] = []
    await direction.start()
    listener = asyncio.create_task(listen(track, onsets))
    try:
        await play(direction, clips, count, ends)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await direction.close()
        track.stop()
    return ends, onsets


def first_onsets(ends: list[float], onsets: list[float]) -> list[float]:
    """Pair each end of speech with the first onset before the next end."""
    latencies = []
    for index, end in enumerate(ends):
        limit = ends[index + 1] if index + 1 < len(ends) else float("inf")
        after = [onset - end for onset in onsets if end < onset < limit]
        if after:
            latencies.append(after[0])
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_latency",
        description="Measure the pipeline engine's latency against the fake OpenAI.",
    )
    parser.add_argument(
        "--utterances", type=int, default=60, help="phrases to play (at least 50)"
    )
    parser.add_argument(
        "--min-silence-ms",
        type=int,
        default=500,
        help="VAD minimum silence that ends an utterance",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args.utterances, args.min_silence_ms))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
