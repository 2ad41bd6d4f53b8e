"""The `/ws` endpoint: origin check, rate and frame limits, the signaling loop."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from media import metrics
from server.keys import CONNECT_LIMITS, CONNECTIONS, HUB, SETTINGS, TRUSTED_NETWORKS
from signaling import messages
from signaling.cluster import ClusterUnavailable
from signaling.connection import CLOSE_POLICY_VIOLATION, SignalingConnection
from signaling.ratelimit import TokenBucket, client_ip

logger = logging.getLogger(__name__)

# Frames above this close the socket with 1009 (aiohttp does it); frames
# between MAX_MESSAGE_BYTES and this get a `too_large` error instead.
HARD_MAX_FRAME_BYTES = 1024 * 1024
# aiohttp pings every HEARTBEAT_S and closes a client that sends no pong, so
# a half-open connection is dropped after about twice this.
HEARTBEAT_S = 20.0


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...]
) -> bool:
    """Return whether a browser page on `origin` may use this server.

    Clients without an Origin header are not browsers, so they are allowed.
    A browser page must come from this server's own host or a listed origin.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def request_ip(request: web.Request) -> str:
    return client_ip(
        request.remote,
        request.headers.get("X-Forwarded-For"),
        request.app[TRUSTED_NETWORKS],
    )


async def handle(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, request.host, settings.cors_origins):
        logger.info("WebSocket from origin %r rejected", origin)
        raise web.HTTPForbidden(text="This origin may not open /ws.")
    ip = request_ip(request)
    ws = web.WebSocketResponse(max_msg_size=HARD_MAX_FRAME_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    if not await _allow_connect(request, ip):
        metrics.rate_limited.labels(kind="connect").inc()
        logger.info("WebSocket connect rate exceeded")
        await ws.send_json(
            messages.error("rate_limited", "Too many new connections; wait a minute.")
        )
        await ws.close(code=CLOSE_POLICY_VIOLATION, message=b"rate limited")
        return ws
    hub = request.app[HUB]
    connection = SignalingConnection(
        hub,
        max_message_bytes=settings.max_message_bytes,
        client_ip=ip,
        rate_limit=TokenBucket(settings.messages_per_s, settings.message_burst),
    )
    hub.connections += 1
    metrics.connections.inc()
    request.app[CONNECTIONS].add(connection)
    tasks = [
        asyncio.create_task(_write(ws, connection), name="signaling-writer"),
        asyncio.create_task(
            _close_when_idle(connection, settings.idle_timeout_s), name="idle-check"
        ),
    ]
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
        request.app[CONNECTIONS].discard(connection)
        hub.connections -= 1
        metrics.connections.dec()
        await connection.on_close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def _allow_connect(request: web.Request, ip: str) -> bool:
    """Apply WS_CONNECTS_PER_MIN, across nodes when they share Redis."""
    cluster = request.app[HUB].cluster
    if cluster is not None and cluster.healthy:
        try:
            return await cluster.allow_connect(
                ip, request.app[SETTINGS].ws_connects_per_min
            )
        except ClusterUnavailable as exc:
            logger.info("connect limit counted on this node only: %s", exc)
    return request.app[CONNECT_LIMITS].allow(ip)


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


async def _close_when_idle(connection: SignalingConnection, timeout_s: float) -> None:
    """Close a socket that spends `timeout_s` in a row without a participant."""
    step = min(1.0, timeout_s / 4)
    idle = 0.0
    while idle < timeout_s:
        await asyncio.sleep(step)
        idle = 0.0 if connection.has_participant else idle + step
    logger.info("closing a WebSocket idle for %.0f s without join", timeout_s)
    connection.outbox.close(1000, "idle without join")
