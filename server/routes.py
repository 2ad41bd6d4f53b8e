"""HTTP endpoints: the page, health and status."""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from media.languages import LANGUAGES
from media.peer import turn_status
from server.config import Settings
from server.keys import ENGINE_NAME, HUB, PUBLIC_DIR, SETTINGS, STARTED_AT
from signaling.cluster import status as cluster_status

VERSION = "0.1.0"


def add_routes(app: web.Application, public_dir: Path) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/sessions", sessions)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/", index)
    app.router.add_static("/static/", public_dir, show_index=False)
    app[PUBLIC_DIR] = public_dir


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[PUBLIC_DIR] / "index.html")


async def health(request: web.Request) -> web.Response:
    if request.app[HUB].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ok"})


async def sessions(request: web.Request) -> web.Response:
    """List calls and waiting participants for operators, behind ADMIN_TOKEN."""
    token = request.app[SETTINGS].admin_token
    if token is None:
        raise web.HTTPNotFound()
    authorization = request.headers.get("Authorization", "")
    if not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(
            text="Send Authorization: Bearer <ADMIN_TOKEN>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    hub = request.app[HUB]
    calls = [
        {
            "call_id": call.id,
            "started_at": call.started_at,
            "translated": call.translated,
            "participants": [
                {"participant_id": person.id, "language": person.language}
                for person in (call.a, call.b)
            ],
        }
        for call in hub.calls.values()
    ]
    waiting = [
        {"participant_id": person.id, "language": person.language}
        for person in hub.waiting_participants()
    ]
    return web.json_response({"calls": calls, "waiting": waiting})


async def metrics_text(request: web.Request) -> web.Response:
    body = prometheus_client.generate_latest()
    return web.Response(
        body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
    )


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
            "tls": settings.tls_enabled,
            "dependencies": {
                "upstream": upstream,
                "redis": cluster_status(hub.cluster),
                "turn": _turn_status(settings),
            },
        }
    )


def _turn_status(settings: Settings) -> dict[str, Any]:
    """Describe the TURN relay: off, or its URLs and the newest outcome."""
    if not settings.turn_urls:
        return {"state": "off"}
    return {
        "state": "configured",
        "urls": list(settings.turn_urls),
        "credential_ttl_s": settings.turn_credential_ttl_s,
        "last_gathering": turn_status.last_outcome,
        "last_gathering_at": turn_status.last_at,
    }
