"""Settings of the translation engines, and the engine they build."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import AsyncOpenAI

from media.engines.fallback import FallbackEngine
from media.engines.pipeline import PipelineEngine
from server.config import Settings, SettingsError
from server.engines import build_engine, pipeline_config

LOCAL_URL = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("env", "choice"),
    [
        ({"OPENAI_API_KEY": "sk-test"}, "realtime"),
        ({"OPENAI_BASE_URL": LOCAL_URL}, "pipeline"),
        ({}, "off"),
        ({"OPENAI_API_KEY": "sk-test", "TRANSLATION_ENGINE": "pipeline"}, "pipeline"),
        ({"OPENAI_BASE_URL": LOCAL_URL, "TRANSLATION_ENGINE": "realtime"}, "realtime"),
        ({"OPENAI_API_KEY": "sk-test", "TRANSLATION_ENGINE": "off"}, "off"),
    ],
)
def test_engine_choice(env: dict[str, str], choice: str) -> None:
    assert Settings.from_env(env).engine_choice == choice


def test_engine_without_service_is_invalid() -> None:
    with pytest.raises(SettingsError, match="TRANSLATION_ENGINE=pipeline needs"):
        Settings.from_env({"TRANSLATION_ENGINE": "pipeline"})


def test_unknown_engine_is_invalid() -> None:
    with pytest.raises(SettingsError, match="TRANSLATION_ENGINE='fast' is invalid"):
        Settings.from_env({"TRANSLATION_ENGINE": "fast"})


def test_stop_threshold_above_start_is_invalid() -> None:
    env = {"VAD_START_THRESHOLD": "0.4", "VAD_STOP_THRESHOLD": "0.6"}
    with pytest.raises(SettingsError, match=r"VAD_STOP_THRESHOLD=0\.6 is invalid"):
        Settings.from_env(env)


def test_missing_glossary_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        Settings.from_env({"GLOSSARY_FILE": str(tmp_path / "none.txt")})


def test_binary_glossary_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "glossary.txt"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SettingsError, match="UTF-8"):
        Settings.from_env({"GLOSSARY_FILE": str(path)})


def test_pipeline_settings_reach_config(tmp_path: Path) -> None:
    glossary = tmp_path / "glossary.txt"
    glossary.write_text("invoice = счёт\n", encoding="utf-8")
    settings = Settings.from_env(
        {
            "OPENAI_BASE_URL": LOCAL_URL,
            "TRANSCRIPTION_MODEL": "whisper-1",
            "CHAT_MODEL": "gpt-4.1-mini",
            "TTS_MODEL": "tts-1",
            "TTS_VOICE": "nova",
            "GLOSSARY_FILE": str(glossary),
            "VAD_START_THRESHOLD": "0.6",
            "VAD_STOP_THRESHOLD": "0.4",
            "VAD_MIN_SILENCE_MS": "700",
            "VAD_MIN_SPEECH_MS": "100",
            "MAX_UTTERANCE_S": "20",
            "UPSTREAM_TIMEOUT_S": "5",
            "UPSTREAM_MAX_RETRIES": "4",
        }
    )
    config = pipeline_config(settings)
    assert config.transcription_model == "whisper-1"
    assert config.chat_model == "gpt-4.1-mini"
    assert config.tts_model == "tts-1"
    assert config.tts_voice == "nova"
    assert config.glossary == "invoice = счёт\n"
    assert config.vad.start_threshold == 0.6
    assert config.vad.stop_threshold == 0.4
    assert config.vad.min_silence_s == 0.7
    assert config.vad.min_speech_s == 0.1
    assert config.vad.max_utterance_s == 20.0
    assert config.retry.timeout_s == 5.0
    assert config.retry.max_retries == 4


async def test_build_engine_by_choice() -> None:
    client = AsyncOpenAI(base_url=LOCAL_URL, api_key="sk-test", max_retries=0)
    try:
        realtime = build_engine(
            Settings.from_env({"OPENAI_API_KEY": "sk-test"}), client
        )
        pipeline = build_engine(
            Settings.from_env({"OPENAI_BASE_URL": LOCAL_URL}), client
        )
    finally:
        await client.close()
    assert isinstance(realtime, FallbackEngine)
    assert realtime.name == "realtime"
    assert isinstance(realtime.secondary, PipelineEngine)
    assert isinstance(pipeline, PipelineEngine)
