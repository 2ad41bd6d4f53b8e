"""HTTP endpoints: the page, health and status."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from media.languages import LANGUAGES
from server.keys import ENGINE_NAME, HUB, PUBLIC_DIR, SETTINGS, STARTED_AT

VERSION = "0.1.0"


def add_routes(app: web.Application, public_dir: Path) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/status", status)
    app.router.add_get("/", index)
    app.router.add_static("/static/", public_dir, show_index=False)
    app[PUBLIC_DIR] = public_dir


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[PUBLIC_DIR] / "index.html")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    app = request.app
    hub = app[HUB]
    engine = app[ENGINE_NAME]
    settings = app[SETTINGS]
    upstream = (
        {"state": "configured", "model": settings.translation_model}
        if engine != "off"
        else {"state": "off", "reason": "OPENAI_API_KEY is not set"}
    )
    return web.json_response(
        {
            "version": VERSION,
            "uptime_s": round(time.monotonic() - app[STARTED_AT], 1),
            "engine": engine,
            "languages": [
                {"code": lang.code, "name": lang.name, "native_name": lang.native_name}
                for lang in LANGUAGES.values()
            ],
            "connections": hub.connections,
            "waiting": hub.waiting_count,
            "calls": len(hub.calls),
            "dependencies": {"upstream": upstream},
        }
    )
