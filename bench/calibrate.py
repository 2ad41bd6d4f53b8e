"""Measure how long the fake OpenAI keeps a marker before returning it.

The fake returns input audio as the translation, grouped two 200 ms engine
frames at a time, and cuts a group short when speech turns to silence or back.
A marker frame that follows a silent frame therefore comes back when the next
input frame arrives: one engine frame after the marker frame was sent, plus
the fake's own processing time. This module measures that hold with the
`openai` SDK, sending frames at real-time pace as the server does, so the
report can subtract it from the translated calls' latency.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from bench.plan import MARKER_SWEEPS, chirp
from bench.services import BENCH_API_KEY

ENGINE_RATE = 24_000
ENGINE_FRAME_S = 0.2
ENGINE_FRAME_SAMPLES = round(ENGINE_RATE * ENGINE_FRAME_S)
MODEL = "gpt-realtime-translate"
SILENT_FRAMES_AROUND = 3
TIMEOUT_S = 10.0


def _marker_frame() -> bytes:
    """Return one engine frame at 24 kHz that starts with the first marker."""
    start_hz, end_hz = MARKER_SWEEPS[0]
    # The chirp is made at 48 kHz and stays below 4 kHz, so every second
    # sample is a clean 24 kHz version of it.
    marker = chirp(start_hz, end_hz)[::2]
    frame = np.zeros(ENGINE_FRAME_SAMPLES, dtype="<i2")
    frame[: len(marker)] = marker
    return frame.tobytes()


async def measure_fake_hold(base_url: str, repetitions: int) -> list[float]:
    """Return, per marker, seconds from sending its frame to receiving it back."""
    client = AsyncOpenAI(api_key=BENCH_API_KEY, base_url=base_url, max_retries=0)
    silent = bytes(ENGINE_FRAME_SAMPLES * 2)
    marker = _marker_frame()
    sent_at: list[float] = []
    received_at: list[float] = []
    try:
        async with (
            asyncio.timeout(TIMEOUT_S + repetitions * 2.0),
            client.realtime.translations.connect(model=MODEL) as connection,
        ):
            await connection.session.update(
                session={"audio": {"output": {"language": "en"}}}
            )
            async for event in connection:
                if event.type == "session.updated":
                    break
            reader = asyncio.create_task(_read_markers(connection, received_at))
            try:
                frames = [silent] * SILENT_FRAMES_AROUND + [marker]
                frames += [silent] * SILENT_FRAMES_AROUND
                start = time.monotonic()
                for index, frame in enumerate(frames * repetitions):
                    delay = start + index * ENGINE_FRAME_S - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if frame is marker:
                        sent_at.append(time.monotonic())
                    await connection.session.input_audio_buffer.append(
                        audio=base64.b64encode(frame).decode("ascii")
                    )
                await asyncio.sleep(2 * ENGINE_FRAME_S)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await client.close()
    return [
        received - sent for sent, received in zip(sent_at, received_at, strict=False)
    ]


async def _read_markers(connection: Any, received_at: list[float]) -> None:
    """Log the arrival of every audio delta that is not silence."""
    async for event in connection:
        if event.type != "session.output_audio.delta":
            continue
        pcm = np.frombuffer(base64.b64decode(event.delta), dtype="<i2")
        if np.any(pcm):
            received_at.append(time.monotonic())
