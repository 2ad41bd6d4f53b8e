"""The participant registry, the pairing queue and the calls of this process."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from media.engines.base import Engine
from media.languages import normalize_language
from media.logcontext import call_id_var, participant_id_var
from media.peer import MediaLeg
from media.sdp import BadSdp
from signaling import messages
from signaling.call import Call
from signaling.errors import ProtocolError
from signaling.participant import Outbox, Participant

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    ice_servers: tuple[dict[str, Any], ...]
    caption_final_s: float
    engine: Engine | None
    unavailable_reason: str | None


class Hub:
    """Pair participants first come, first served, per room, and run calls."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.participants: dict[str, Participant] = {}
        self.calls: dict[str, Call] = {}
        self._waiting: dict[str | None, deque[Participant]] = {}
        self.connections = 0

    @property
    def waiting_count(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def join(self, message: messages.Join, outbox: Outbox) -> Participant:
        language = normalize_language(message.language)
        if language is None:
            raise ProtocolError(
                "unsupported_language",
                f"Language {message.language[:35]!r} is not supported; "
                "see /api/status for the list.",
            )
        participant = Participant(
            language=language,
            name=message.name,
            room=message.room,
            hear_original=message.hear_original,
            outbox=outbox,
        )
        participant_id_var.set(participant.id)
        self.participants[participant.id] = participant
        logger.info(
            "joined: language=%s room=%s", language, "yes" if message.room else "no"
        )
        participant.send(
            {
                "type": "joined",
                "participant_id": participant.id,
                "resume_token": participant.resume_token,
                "ice_servers": list(self.config.ice_servers),
            }
        )
        await self._pair(participant)
        return participant

    async def offer(self, participant: Participant, sdp: str) -> None:
        leg = MediaLeg(
            ice_servers=list(self.config.ice_servers),
            mixer=participant.mixer,
            tap=participant.tap,
        )
        try:
            answer = await leg.answer(sdp)
        except BadSdp as exc:
            await leg.close()
            logger.info("offer rejected: %s", exc)
            raise ProtocolError("bad_sdp", str(exc)) from None
        old, participant.leg = participant.leg, leg
        if old is not None:
            await old.close()
        logger.info("offer answered%s", " (replaced media)" if old else "")
        participant.send({"type": "answer", "sdp": answer})

    async def candidate(
        self, participant: Participant, candidate: dict[str, Any] | None
    ) -> None:
        if participant.leg is None:
            raise ProtocolError("bad_message", "Send an offer before ICE candidates.")
        try:
            await participant.leg.add_candidate(candidate)
        except BadSdp as exc:
            raise ProtocolError("bad_sdp", str(exc)) from None

    def set_hear_original(self, participant: Participant, enabled: bool) -> None:
        participant.hear_original = enabled
        call = participant.call
        if call is not None:
            call.direction_to(participant).set_hear_original(enabled)

    async def leave(self, participant: Participant, reason: str) -> None:
        """Remove a participant; a call they were in ends for the partner."""
        self.participants.pop(participant.id, None)
        participant.active = False
        queue = self._waiting.get(participant.room)
        if queue is not None and participant in queue:
            queue.remove(participant)
            logger.info("left the queue: %s", reason)
        call = participant.call
        if call is not None:
            await self.end_call(call, reasons={participant.id: None}, default=reason)
        await participant.close_media()
        participant.outbox = None

    async def end_call(
        self, call: Call, *, reasons: dict[str, str | None], default: str
    ) -> None:
        """End `call`; each side gets `partner_left` with its reason, or none."""
        self.calls.pop(call.id, None)
        call_id_var.set(call.id)
        await call.end()
        for person in (call.a, call.b):
            person.call = None
            reason = reasons.get(person.id, default)
            if reason is None:
                continue
            person.send({"type": "partner_left", "reason": reason})
            # The call is over for both: the partner must join again.
            self.participants.pop(person.id, None)
            person.active = False
            await person.close_media()

    async def shutdown(self) -> None:
        for call in list(self.calls.values()):
            await self.end_call(call, reasons={}, default="server_shutdown")
        for participant in list(self.participants.values()):
            await participant.close_media()
        self.participants.clear()
        self._waiting.clear()

    async def _pair(self, participant: Participant) -> None:
        queue = self._waiting.setdefault(participant.room, deque())
        if not queue:
            queue.append(participant)
            participant.send({"type": "waiting"})
            logger.info("waiting for a partner")
            return
        partner = queue.popleft()
        if not queue:
            del self._waiting[participant.room]
        call = Call(
            a=partner,
            b=participant,
            engine=self.config.engine,
            unavailable_reason=self.config.unavailable_reason,
            caption_final_s=self.config.caption_final_s,
        )
        partner.call = call
        participant.call = call
        self.calls[call.id] = call
        for person in (partner, participant):
            other = call.partner_of(person)
            person.send(
                {"type": "paired", "call_id": call.id, "partner": other.public_info()}
            )
        await call.start()
