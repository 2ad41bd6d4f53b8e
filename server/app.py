"""The aiohttp application: routes, shared state and their lifetimes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from openai import AsyncOpenAI

from media.engines.base import Engine
from server import middleware, routes, websocket
from server.config import Settings
from server.engines import build_engine
from server.keys import (
    CONNECT_LIMITS,
    CONNECTIONS,
    ENGINE_NAME,
    HUB,
    SETTINGS,
    STARTED_AT,
    TRUSTED_NETWORKS,
)
from signaling.cluster import Cluster
from signaling.connection import SignalingConnection
from signaling.hub import Hub, HubConfig
from signaling.ice import IceServers
from signaling.ratelimit import KeyedBuckets

logger = logging.getLogger(__name__)

# The page: `public/` in the source tree, `server/public/` in an installed wheel.
_SOURCE_PUBLIC = Path(__file__).resolve().parent.parent / "public"
PUBLIC_DIR = (
    _SOURCE_PUBLIC
    if (_SOURCE_PUBLIC / "index.html").is_file()
    else Path(__file__).resolve().parent / "public"
)

NO_KEY_REASON = (
    "Translation is off: the server has no OPENAI_API_KEY, so you hear the "
    "original voice."
)
ENGINE_OFF_REASON = (
    "Translation is turned off on this server, so you hear the original voice."
)


# After the drain, how long aiohttp waits for handlers before cancelling them.
SHUTDOWN_TIMEOUT_S = 5.0
# Largest HTTP request body accepted; the API takes no uploads.
MAX_BODY_BYTES = 5 * 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[
            middleware.cors(settings.cors_origins),
            middleware.timeout(settings.request_timeout_s),
        ],
    )
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()
    app[CONNECTIONS] = set[SignalingConnection]()
    app[CONNECT_LIMITS] = KeyedBuckets(
        settings.ws_connects_per_min / 60, settings.ws_connects_per_min
    )
    app[TRUSTED_NETWORKS] = tuple(
        ipaddress.ip_network(network) for network in settings.trusted_proxies
    )
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
    if settings.engine_choice != "off":
        client = AsyncOpenAI(
            api_key=settings.api_key_for_sdk,
            base_url=settings.openai_base_url,
            max_retries=0,
        )
        engine = build_engine(settings, client)
    elif settings.translation_enabled:
        reason = ENGINE_OFF_REASON
        logger.warning("TRANSLATION_ENGINE is off: calls relay the original voices")
    else:
        reason = NO_KEY_REASON
        logger.warning(
            "OPENAI_API_KEY is not set: translation is off and calls relay the "
            "original voices"
        )
    app[ENGINE_NAME] = engine.name if engine else "off"
    if any("credential" in entry for entry in settings.ice_servers):
        logger.warning(
            "ICE_SERVERS contains a TURN password, which every browser receives; "
            "TURN_URLS with TURN_SECRET hands out time-limited ones instead"
        )
    cluster: Cluster | None = None
    if settings.redis_url is not None:
        assert settings.public_ws_url is not None
        cluster = Cluster(
            url=settings.redis_url,
            node_id=settings.node_id or "node-" + secrets.token_hex(4),
            ws_url=settings.public_ws_url,
        )
        logger.info(
            "sharing state through Redis as node %s at %s",
            cluster.node_id,
            cluster.ws_url,
        )
    hub = Hub(
        HubConfig(
            ice_servers=IceServers(
                static=settings.ice_servers,
                turn_urls=settings.turn_urls,
                turn_secret=settings.turn_secret,
                turn_ttl_s=settings.turn_credential_ttl_s,
            ),
            caption_final_s=settings.caption_final_ms / 1000,
            engine=engine,
            unavailable_reason=reason,
            resume_grace_s=settings.resume_grace_s,
            media_timeout_s=settings.media_timeout_s,
            max_participants=settings.max_participants,
            max_calls=settings.max_calls,
            max_call_s=settings.max_call_s,
            daily_budget_s=settings.daily_budget_min * 60,
            playout_headroom_s=settings.playout_headroom_ms / 1000,
        ),
        cluster=cluster,
    )
    app[HUB] = hub
    await hub.start()
    yield
    await hub.shutdown()
    if cluster is not None:
        await cluster.close()
    if client is not None:
        await client.close()


def make_runner(app: web.Application) -> web.AppRunner:
    """Wrap `app` in a runner whose connections time out when stalled.

    aiohttp closes a connection that has not sent a whole request within
    its keep-alive timeout, even while bytes trickle in, so a slowloris
    client keeps a socket for at most REQUEST_TIMEOUT_S.
    """
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=app[SETTINGS].request_timeout_s,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )


async def drain(app: web.Application) -> None:
    """Begin shutdown: refuse joins, and give open calls SHUTDOWN_GRACE_S.

    Calls still open afterwards are ended by the hub's shutdown, with
    `partner_left` reason `server_shutdown`.
    """
    hub = app[HUB]
    hub.draining = True
    grace_s = app[SETTINGS].shutdown_grace_s
    logger.info(
        "shutting down: calls in progress get up to %.0f s to finish (%d calls)",
        grace_s,
        len(hub.calls),
    )
    try:
        async with asyncio.timeout(grace_s):
            await hub.no_calls.wait()
    except TimeoutError:
        logger.info("ending %d calls still open", len(hub.calls))
    await hub.shutdown()
    # Each socket is closed by its writer after the messages queued before,
    # so `partner_left` reaches the clients.
    connections: set[SignalingConnection] = app[CONNECTIONS]
    for connection in list(connections):
        connection.outbox.close(1001, "server shutdown")


class Site(web.TCPSite):
    """A TCP site whose TLS handshakes time out like stalled requests do.

    aiohttp's TCPSite keeps asyncio's 60 s handshake timeout, so a client
    that stalls inside the handshake would keep its socket for a minute,
    longer than REQUEST_TIMEOUT_S.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout_s: float,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        if self._ssl_context is None:
            await super().start()
            return
        # The same steps as TCPSite.start, plus the handshake timeout.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout_s,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
