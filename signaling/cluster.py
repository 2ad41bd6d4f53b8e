"""Shared state between nodes, in Redis: the waiting queue, where each
participant lives, single-use redirect reservations, node heartbeats and
connect-rate counters.

Media of a call always meets on one node: the node of the participant who
waited. A joiner on another node is sent a `redirect` to that node with a
reservation token, and resumes there. Every key expires, so a dead node
leaves nothing behind for long.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

PREFIX = "callbridge"
HEARTBEAT_S = 1.0
# A node whose heartbeat key is older than this is taken for dead.
NODE_TTL_S = 4
RESERVATION_TTL_S = 20
RATE_WINDOW_S = 60

# Pop the first waiting entry of the room whose node is alive and mark it
# reserved, or append the caller's entry when there is none. Atomic, so two
# joiners on two nodes never both wait for each other, and a popped entry is
# never seen as lost by its own node.
_PAIR_OR_WAIT = """
while true do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then
    redis.call('RPUSH', KEYS[1], ARGV[1])
    redis.call('SADD', KEYS[2], KEYS[1])
    return false
  end
  local decoded = cjson.decode(entry)
  if redis.call('EXISTS', ARGV[2] .. decoded['node']) == 1 then
    redis.call('SET', ARGV[3] .. decoded['participant_id'], '1', 'EX', ARGV[4])
    return entry
  end
end
"""


class ClusterUnavailable(Exception):
    """Redis could not be reached; the message states what failed."""


@dataclass(frozen=True)
class Entry:
    """A participant as other nodes see it."""

    participant_id: str
    node: str
    language: str
    name: str | None
    room: str | None
    hear_original: bool
    ip: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Entry:
        return cls(**json.loads(text))


class Cluster:
    """One node's view of the shared state."""

    def __init__(self, *, url: str, node_id: str, ws_url: str) -> None:
        self.node_id = node_id
        self.ws_url = ws_url
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._pair_or_wait = self._redis.register_script(_PAIR_OR_WAIT)
        self.healthy = False

    async def close(self) -> None:
        await self._redis.aclose()

    async def heartbeat(self) -> None:
        """Announce this node alive; call every HEARTBEAT_S."""
        try:
            await self._redis.set(
                self._node_key(self.node_id), self.ws_url, ex=NODE_TTL_S
            )
        except (RedisError, OSError) as exc:
            if self.healthy:
                logger.warning("Redis unreachable: %r", exc)
            self.healthy = False
            return
        if not self.healthy:
            logger.info("Redis reachable")
        self.healthy = True

    async def leave_cluster(self) -> None:
        try:
            await self._redis.delete(self._node_key(self.node_id))
        except (RedisError, OSError) as exc:
            logger.info("could not remove the node key: %r", exc)

    async def node_url(self, node_id: str) -> str | None:
        """Return the WebSocket URL of a live node, or None when it is dead."""
        value = await self._call(self._redis.get(self._node_key(node_id)))
        return value.decode() if value else None

    async def pair_or_wait(self, entry: Entry) -> Entry | None:
        """Take the first live partner waiting in the room, or queue `entry`."""
        result = await self._call(
            self._pair_or_wait(
                keys=[self._queue_key(entry.room), self._key("rooms")],
                args=[
                    entry.to_json(),
                    self._node_key(""),
                    self._key("reserved", ""),
                    RESERVATION_TTL_S,
                ],
            )
        )
        return Entry.from_json(result) if result else None

    async def remove_waiting(self, entry: Entry) -> None:
        await self._call(
            self._redis.lrem(self._queue_key(entry.room), 0, entry.to_json())
        )

    async def requeue_front(self, entry: Entry) -> None:
        await self._call(
            self._redis.lpush(self._queue_key(entry.room), entry.to_json())
        )

    async def is_waiting_or_reserved(self, entry: Entry) -> bool:
        queue = self._queue_key(entry.room)
        position = await self._call(self._redis.lpos(queue, entry.to_json()))
        if position is not None:
            return True
        reserved = await self._call(
            self._redis.exists(self._key("reserved", entry.participant_id))
        )
        return bool(reserved)

    async def reserve(self, *, newcomer: Entry, partner: Entry) -> str:
        """Store a single-use token that lets `newcomer` join `partner`'s node."""
        token = secrets.token_urlsafe(24)
        record = json.dumps(
            {
                "newcomer": json.loads(newcomer.to_json()),
                "partner": partner.participant_id,
            }
        )
        pipe = self._redis.pipeline()
        pipe.set(self._key("reservation", token), record, ex=RESERVATION_TTL_S)
        pipe.set(
            self._key("reserved", partner.participant_id), token, ex=RESERVATION_TTL_S
        )
        await self._call(pipe.execute())
        return token

    async def claim_reservation(self, token: str) -> tuple[Entry, str] | None:
        """Consume a reservation: (newcomer, partner id), or None."""
        raw = await self._call(self._redis.getdel(self._key("reservation", token)))
        if raw is None:
            return None
        record = json.loads(raw)
        await self._call(self._redis.delete(self._key("reserved", record["partner"])))
        return Entry(**record["newcomer"]), str(record["partner"])

    async def publish_token(self, token: str, ttl_s: int) -> None:
        """Record that `token` resumes a participant of this node."""
        await self._call(
            self._redis.set(self._key("token", token), self.node_id, ex=ttl_s)
        )

    async def token_node(self, token: str) -> str | None:
        value = await self._call(self._redis.get(self._key("token", token)))
        return value.decode() if value else None

    async def allow_connect(self, ip: str, per_minute: int) -> bool:
        """Count a new WebSocket from `ip` in a cluster-wide fixed window."""
        window = int(time.time() // RATE_WINDOW_S)
        key = self._key("rate", ip, str(window))
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, RATE_WINDOW_S * 2)
        count, _ = await self._call(pipe.execute())
        return int(count) <= per_minute

    async def purge_dead_nodes(self) -> int:
        """Remove waiting entries of nodes whose heartbeat expired."""
        removed = 0
        rooms = await self._call(self._redis.smembers(self._key("rooms")))
        for room_key in rooms:
            entries = await self._call(self._redis.lrange(room_key, 0, -1))
            if not entries:
                await self._call(self._redis.srem(self._key("rooms"), room_key))
                continue
            for raw in entries:
                node = Entry.from_json(raw).node
                if await self.node_url(node) is None:
                    removed += await self._call(self._redis.lrem(room_key, 0, raw))
        return removed

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            self.healthy = False
            raise ClusterUnavailable(f"Redis request failed: {exc!r}") from exc

    def _queue_key(self, room: str | None) -> str:
        return self._key("waiting", room or "")

    def _node_key(self, node_id: str) -> str:
        return self._key("node", "") + node_id

    @staticmethod
    def _key(*parts: str) -> str:
        return ":".join((PREFIX, *parts))


def status(cluster: Cluster | None) -> dict[str, Any]:
    if cluster is None:
        return {"state": "not used"}
    return cast(
        dict[str, Any],
        {"state": "ok" if cluster.healthy else "unreachable", "node": cluster.node_id},
    )
