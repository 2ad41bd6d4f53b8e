"""The aiohttp application: routes, shared state and their lifetimes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from openai import AsyncOpenAI

from media.engines.base import Engine
from media.engines.realtime import RealtimeEngine
from server import routes, websocket
from server.config import Settings
from server.keys import ENGINE_NAME, HUB, SETTINGS, STARTED_AT
from signaling.hub import Hub, HubConfig

logger = logging.getLogger(__name__)

PUBLIC_DIR = Path(__file__).resolve().parent.parent / "public"

NO_KEY_REASON = (
    "Translation is off: the server has no OPENAI_API_KEY, so you hear the "
    "original voice."
)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=5 * 1024 * 1024)
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()
    app.cleanup_ctx.append(_translation_context)
    app.router.add_get("/ws", websocket.handle)
    routes.add_routes(app, PUBLIC_DIR)
    return app


async def _translation_context(app: web.Application) -> AsyncIterator[None]:
    """Create the OpenAI client and the hub, and close both on shutdown."""
    settings = app[SETTINGS]
    client: AsyncOpenAI | None = None
    engine: Engine | None = None
    reason: str | None = None
    if settings.translation_enabled:
        client = AsyncOpenAI(
            api_key=settings.api_key_for_sdk,
            base_url=settings.openai_base_url,
            max_retries=0,
        )
        engine = RealtimeEngine(
            client=client,
            model=settings.translation_model,
            transcription_model=settings.realtime_transcription_model,
        )
        logger.info(
            "translation engine: realtime, model=%s, base URL %s",
            settings.translation_model,
            settings.openai_base_url or "default",
        )
    else:
        reason = NO_KEY_REASON
        logger.warning(
            "OPENAI_API_KEY is not set: translation is off and calls relay the "
            "original voices"
        )
    app[ENGINE_NAME] = engine.name if engine else "off"
    hub = Hub(
        HubConfig(
            ice_servers=settings.ice_servers,
            caption_final_s=settings.caption_final_ms / 1000,
            engine=engine,
            unavailable_reason=reason,
            resume_grace_s=settings.resume_grace_s,
            media_timeout_s=settings.media_timeout_s,
        )
    )
    app[HUB] = hub
    await hub.start()
    yield
    await hub.shutdown()
    if client is not None:
        await client.close()
