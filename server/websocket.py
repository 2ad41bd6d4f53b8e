"""The `/ws` endpoint: origin check, frame limits and the signaling loop."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from server.keys import HUB, SETTINGS
from signaling.connection import SignalingConnection

logger = logging.getLogger(__name__)

# Frames above this close the socket with 1009 (aiohttp does it); frames
# between MAX_MESSAGE_BYTES and this get a `too_large` error instead.
HARD_MAX_FRAME_BYTES = 1024 * 1024
HEARTBEAT_S = 20.0


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...]
) -> bool:
    """Whether a browser on `origin` may use this server.

    Clients without an Origin header are not browsers and are allowed; a
    browser page must come from this server's own host or a listed origin.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


async def handle(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, request.host, settings.cors_origins):
        logger.info("WebSocket from origin %r rejected", origin)
        raise web.HTTPForbidden(text="This origin may not open /ws.")
    ws = web.WebSocketResponse(max_msg_size=HARD_MAX_FRAME_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    hub = request.app[HUB]
    connection = SignalingConnection(hub, max_message_bytes=settings.max_message_bytes)
    hub.connections += 1
    writer = asyncio.create_task(_write(ws, connection), name="signaling-writer")
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await connection.on_text(message.data)
            elif message.type == WSMsgType.BINARY:
                connection.on_binary()
            elif message.type == WSMsgType.ERROR:
                logger.info("signaling socket error: %r", ws.exception())
                break
    finally:
        hub.connections -= 1
        await connection.on_close()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return ws


async def _write(ws: web.WebSocketResponse, connection: SignalingConnection) -> None:
    """Write the connection's outbox in order; a close request ends it."""
    while True:
        item = await connection.outbox.get()
        if isinstance(item, tuple):
            code, reason = item
            await ws.close(code=code, message=reason.encode())
            return
        try:
            await ws.send_json(item)
        except (ConnectionResetError, RuntimeError) as exc:
            logger.debug("signaling write failed: %r", exc)
            return
