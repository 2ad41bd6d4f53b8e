"""Typed keys of the state stored on the aiohttp application."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from aiohttp import web

from server.config import Settings
from signaling.connection import SignalingConnection
from signaling.hub import Hub
from signaling.ratelimit import KeyedBuckets

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
STARTED_AT = web.AppKey("started_at", float)
ENGINE_NAME = web.AppKey("engine_name", str)
PUBLIC_DIR = web.AppKey("public_dir", Path)
CONNECT_LIMITS = web.AppKey("connect_limits", KeyedBuckets)
TRUSTED_NETWORKS = web.AppKey(
    "trusted_networks", tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
)
CONNECTIONS: web.AppKey[set[SignalingConnection]] = web.AppKey("connections")
