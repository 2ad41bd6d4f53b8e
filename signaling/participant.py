"""A person in the system: their signaling outbox, media and call."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from media.outbound import ListenerMixer
from media.peer import InboundTap, MediaLeg

if TYPE_CHECKING:
    from signaling.call import Call
    from signaling.cluster import Entry

logger = logging.getLogger(__name__)

OUTBOX_CAPACITY = 256


class Outbox:
    """Messages waiting to be written to one WebSocket.

    Bounded: when a client stops reading and the queue fills, new messages
    are dropped and counted rather than held in memory.
    """

    def __init__(self, capacity: int = OUTBOX_CAPACITY) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | tuple[int, str]] = asyncio.Queue(
            capacity
        )
        self.dropped = 0

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "signaling outbox full, %d messages dropped", self.dropped
                )

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket after the queued messages."""
        while True:
            try:
                self._queue.put_nowait((code, reason))
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1

    async def get(self) -> dict[str, Any] | tuple[int, str]:
        return await self._queue.get()


@dataclass(eq=False, kw_only=True)
class Participant:
    language: str
    ip: str
    name: str | None
    room: str | None
    hear_original: bool
    id: str = field(default_factory=lambda: "p_" + secrets.token_hex(8))
    resume_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    mixer: ListenerMixer = field(default_factory=ListenerMixer)
    tap: InboundTap = field(default_factory=InboundTap)
    outbox: Outbox | None = None
    leg: MediaLeg | None = None
    call: Call | None = None
    # False once the participant left or their call ended; a new join is needed.
    active: bool = True
    # A resume token stays valid until the one issued after it has been used,
    # so a client that lost a `resumed` message can retry with the old one.
    previous_token: str | None = None
    signaling_up: bool = True
    media_down: bool = False
    media_down_since: float = 0.0
    grace: asyncio.TimerHandle | None = None
    leg_started_at: float = 0.0
    # This participant's entry in the cluster's waiting queue, if any.
    shared_entry: Entry | None = None

    @property
    def present(self) -> bool:
        return self.signaling_up and not self.media_down

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox is not None:
            self.outbox.send(message)

    def public_info(self) -> dict[str, Any]:
        return {"participant_id": self.id, "language": self.language, "name": self.name}

    async def close_media(self) -> None:
        leg, self.leg = self.leg, None
        self.tap.consumer = None
        if leg is not None:
            await leg.close()
