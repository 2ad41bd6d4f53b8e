"""ICE servers for one peer, with time-limited TURN credentials.

TURN servers such as coturn accept credentials made from a secret they share
with the application (the "TURN REST API" scheme). The username is the
expiry time in Unix seconds, a colon and an id. The password is the base64
HMAC-SHA1 of the username, keyed with the secret. The server hands each
participant such a pair, so no long-lived TURN password reaches a browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def turn_credentials(secret: str, peer_id: str, expires_at: int) -> tuple[str, str]:
    """Return the username and password that are valid until `expires_at`."""
    username = f"{expires_at}:{peer_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, kw_only=True)
class IceServers:
    """The configured STUN/TURN list, plus signed TURN entries when enabled."""

    static: tuple[dict[str, Any], ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl_s: float = 0.0
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def for_peer(self, peer_id: str) -> list[dict[str, Any]]:
        """Return the server list for `peer_id`, with new TURN credentials.

        The signed entry comes first, because aiortc uses only the first TURN
        URL it finds.
        """
        servers = [dict(entry) for entry in self.static]
        if self.turn_urls and self.turn_secret:
            expires_at = int(self.clock() + self.turn_ttl_s)
            username, credential = turn_credentials(
                self.turn_secret, peer_id, expires_at
            )
            signed = {
                "urls": list(self.turn_urls),
                "username": username,
                "credential": credential,
            }
            servers.insert(0, signed)
        return servers
