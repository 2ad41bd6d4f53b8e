"""Token-bucket rate limits and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

# Per-IP buckets kept at once; the least recently used are forgotten first,
# so a flood of spoofed or rotating addresses cannot grow memory.
MAX_TRACKED_KEYS = 10_000


class TokenBucket:
    """Allow `rate` events per second on average and `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class KeyedBuckets:
    """One token bucket per key (a client IP), with bounded memory."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """Return the client's address.

    X-Forwarded-For is read only when the direct peer is a trusted proxy, and
    then from the right: the first address that is not itself a trusted proxy
    is the client, because entries further left can be forged by the client.
    """
    address = peer or "unknown"
    if not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        if not _is_trusted(hop, trusted):
            return hop
        address = hop
    return address


def _is_trusted(
    address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
