"""HTTP middlewares: CORS headers on /api/* and a request time limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.websocket import origin_allowed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors(allowed: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Respond to preflights and add CORS headers on /api/* for allowed origins."""

    @web.middleware
    async def add_cors_headers(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        is_api = request.path.startswith("/api/")
        permitted = (
            is_api
            and origin is not None
            and origin_allowed(origin, request.host, allowed)
        )
        if is_api and request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(
                status=204 if permitted else 403
            )
        else:
            response = await handler(request)
        if permitted and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = (
                "*" if "*" in allowed else origin
            )
            response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Content-Type, Authorization"
            )
            response.headers["Vary"] = "Origin"
        return response

    return add_cors_headers


def timeout(seconds: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Return 503 when an HTTP handler runs longer than `seconds`."""

    @web.middleware
    async def limit_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/ws":
            return await handler(request)
        try:
            async with asyncio.timeout(seconds):
                return await handler(request)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(text="The request timed out.") from None

    return limit_time
