"""Build the translation engine that the settings choose."""

from __future__ import annotations

import logging

from openai import AsyncOpenAI

from media.engines.base import Engine
from media.engines.fallback import FallbackEngine, FallbackPolicy
from media.engines.pipeline import PipelineConfig, PipelineEngine
from media.engines.realtime import RealtimeEngine
from media.engines.upstream import RetryPolicy
from media.vad import VadConfig
from server.config import Settings, SettingsError

logger = logging.getLogger(__name__)


def build_engine(settings: Settings, client: AsyncOpenAI) -> Engine:
    """Return the realtime engine with the pipeline as its fallback, or the
    pipeline alone, as `settings.engine_choice` selects.

    Raises SettingsError when the glossary file cannot be read as UTF-8.
    """
    pipeline = PipelineEngine(client=client, config=pipeline_config(settings))
    base_url = settings.openai_base_url or "default"
    if settings.engine_choice == "pipeline":
        logger.info(
            "translation engine: pipeline, models %s, %s, %s, base URL %s",
            settings.transcription_model,
            settings.chat_model,
            settings.tts_model,
            base_url,
        )
        return pipeline
    realtime = RealtimeEngine(
        client=client,
        model=settings.translation_model,
        transcription_model=settings.realtime_transcription_model,
    )
    logger.info(
        "translation engine: realtime, model=%s, falling back to the pipeline; "
        "base URL %s",
        settings.translation_model,
        base_url,
    )
    return FallbackEngine(
        primary=realtime,
        secondary=pipeline,
        policy=FallbackPolicy(
            connect_failures=settings.fallback_connect_failures,
            after_s=settings.fallback_after_s,
            retry_primary_s=settings.realtime_retry_s,
        ),
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    glossary = ""
    if settings.glossary_file is not None:
        try:
            glossary = settings.glossary_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"GLOSSARY_FILE={str(settings.glossary_file)!r} could not be read "
                f"as UTF-8 text: {exc}"
            ) from exc
    return PipelineConfig(
        transcription_model=settings.transcription_model,
        chat_model=settings.chat_model,
        tts_model=settings.tts_model,
        tts_voice=settings.tts_voice,
        glossary=glossary,
        vad=VadConfig(
            start_threshold=settings.vad_start_threshold,
            stop_threshold=settings.vad_stop_threshold,
            min_silence_s=settings.vad_min_silence_ms / 1000,
            min_speech_s=settings.vad_min_speech_ms / 1000,
            max_utterance_s=settings.max_utterance_s,
        ),
        retry=RetryPolicy(
            max_retries=settings.upstream_max_retries,
            timeout_s=settings.upstream_timeout_s,
        ),
    )
