"""The fake's REST endpoints reject requests as the API does, through the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from media.engines.pipeline import wav_bytes
from tests.fake_openai import FakeOpenAI


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


def tone_wav(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return wav_bytes((5000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 16_000)


async def test_transcription_names_upload_and_duration(client: AsyncOpenAI) -> None:
    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", tone_wav(1.25), "audio/wav"), language="en"
    )
    assert result.text == "utterance 1 lasting 1.25 s"


async def test_transcription_text_format(client: AsyncOpenAI) -> None:
    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=("a.wav", tone_wav(0.5), "audio/wav"),
        response_format="text",
    )
    assert result.strip() == "utterance 1 lasting 0.50 s"


async def test_speech_streams_tone_of_known_length(client: AsyncOpenAI) -> None:
    text = "hello there"
    response = await client.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm"
    )
    # 0.06 s per character at 24 kHz, 2 bytes per sample.
    assert len(response.content) == int(len(text) * 0.06 * 24_000) * 2


async def test_chat_prefixes_language(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Translate into French (language code fr)."},
            {"role": "user", "content": "good morning"},
        ],
    )
    assert completion.choices[0].message.content == "[fr] good morning"


async def rejection(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        await call
    return caught.value


async def test_speech_rejects_chat_model(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.audio.speech.create(
            model="gpt-4o-mini", voice="alloy", input="x", response_format="pcm"
        )
    )
    assert error.status_code == 400
    assert error.body == {
        "message": "The model 'gpt-4o-mini' does not support speech.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "invalid_value",
    }


async def test_speech_rejects_unknown_format(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="x",
            response_format="ogg",  # type: ignore[arg-type]
        )
    )
    assert error.status_code == 400
    assert error.code == "invalid_value"
    assert "response_format" in str(error.body)


async def test_speech_rejects_missing_input(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.post(
            "/audio/speech",
            body={"model": "tts-1", "voice": "alloy"},
            cast_to=bytes,
        )
    )
    assert error.status_code == 400
    assert error.code == "missing_required_parameter"


async def test_transcription_rejects_unsupported_format(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe",
            file=("a.wav", tone_wav(0.5), "audio/wav"),
            response_format="srt",
        )
    )
    assert error.status_code == 400
    assert error.code == "unsupported_value"


async def test_transcription_rejects_speech_model(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.audio.transcriptions.create(
            model="tts-1", file=("a.wav", tone_wav(0.5), "audio/wav")
        )
    )
    assert error.status_code == 400
    assert error.code == "invalid_value"


async def test_chat_rejects_unknown_role(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "robot", "content": "x"}],  # type: ignore[misc, list-item]
        )
    )
    assert error.status_code == 400
    assert error.code == "invalid_value"
    assert error.param == "messages[0].role"


async def test_chat_rejects_unknown_parameter(client: AsyncOpenAI) -> None:
    error = await rejection(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"colour": "blue"},
        )
    )
    assert error.status_code == 400
    assert error.code == "unknown_parameter"


async def test_rate_limit_sends_retry_after(
    fake_openai: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_openai.rest.fail("chat", 429, retry_after_s=2.5)
    error = await rejection(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    )
    assert error.status_code == 429
    assert error.response.headers["retry-after-ms"] == "2500"


async def test_missing_key_is_rejected(fake_openai: FakeOpenAI) -> None:
    fake_openai.options.api_keys = frozenset({"sk-right"})
    sdk = AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-wrong", max_retries=0)
    try:
        error = await rejection(
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
        )
    finally:
        await sdk.close()
    assert error.status_code == 401
    assert error.code == "invalid_api_key"
