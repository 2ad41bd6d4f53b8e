"""The participant registry, the pairing queue and the calls of this process."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from media import metrics
from media.engines.base import Engine
from media.languages import normalize_language
from media.logcontext import call_id_var, participant_id_var
from media.outbound import ListenerMixer
from media.peer import MediaLeg
from media.sdp import BadSdp
from signaling import messages
from signaling.call import Call
from signaling.cluster import Cluster, ClusterUnavailable, Entry
from signaling.errors import ProtocolError
from signaling.ice import IceServers
from signaling.participant import Outbox, Participant

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.5


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    ice_servers: IceServers
    caption_final_s: float
    engine: Engine | None
    unavailable_reason: str | None
    resume_grace_s: float = 30.0
    media_timeout_s: float = 10.0
    max_participants: int = 500
    max_calls: int = 250
    max_call_s: float = 7200.0
    # Translated call seconds per client IP per day; 0 turns the budget off.
    daily_budget_s: float = 0.0
    playout_headroom_s: float = 0.0


class Hub:
    """Pair participants first come, first served, per room, and run calls.

    A participant whose signaling or media drops is held for a grace period:
    the partner hears `partner_reconnecting`, and a `resume` or a new offer
    within the period restores the call.
    """

    def __init__(self, config: HubConfig, cluster: Cluster | None = None) -> None:
        self.config = config
        self.cluster = cluster
        self.participants: dict[str, Participant] = {}
        self.calls: dict[str, Call] = {}
        self._waiting: dict[str | None, deque[Participant]] = {}
        self._tokens: dict[str, Participant] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.connections = 0
        self.draining = False
        self.no_calls = asyncio.Event()
        self.no_calls.set()
        self._budget_day = ""
        self._budget_used: dict[str, float] = {}

    def waiting_participants(self) -> list[Participant]:
        return [person for queue in self._waiting.values() for person in queue]

    @property
    def waiting_count(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def start(self) -> None:
        if self.cluster is not None:
            await self.cluster.heartbeat()
        self._watchdog = asyncio.create_task(self._run_watchdog(), name="hub-watchdog")

    async def join(
        self, message: messages.Join, outbox: Outbox, *, ip: str
    ) -> Participant:
        self._check_capacity(message.room)
        if self._budget_exhausted(ip):
            raise ProtocolError(
                "rate_limited",
                "This address used its daily translation budget; try again tomorrow.",
            )
        language = normalize_language(message.language)
        if language is None:
            raise ProtocolError(
                "unsupported_language",
                f"Language {message.language[:35]!r} is not supported; "
                "see /api/status for the list.",
            )
        participant = Participant(
            language=language,
            ip=ip,
            name=message.name,
            room=message.room,
            hear_original=message.hear_original,
            outbox=outbox,
            mixer=ListenerMixer(max_headroom_s=self.config.playout_headroom_s),
        )
        participant_id_var.set(participant.id)
        if self.cluster is not None and not self.cluster.healthy:
            raise _shared_state_unavailable()
        joined = {
            "type": "joined",
            "participant_id": participant.id,
            "resume_token": participant.resume_token,
            "ice_servers": self.config.ice_servers.for_peer(participant.id),
        }
        await self._register(participant)
        logger.info(
            "joined: language=%s room=%s", language, "yes" if message.room else "no"
        )
        participant.send(joined)
        await self._pair(participant)
        return participant

    async def resume(self, token: str, outbox: Outbox) -> Participant | None:
        """Bind the participant with `token` to a new socket and return it.

        With several nodes, a token of another node's participant gets a
        `redirect` to that node and None is returned. A redirect reservation
        token creates the arriving participant here.
        """
        participant = self._tokens.get(token)
        if (participant is None or not participant.active) and self.cluster:
            return await self._resume_from_cluster(token, outbox)
        if participant is None or not participant.active:
            raise _resume_failed()
        participant_id_var.set(participant.id)
        old = participant.outbox
        if old is not None and old is not outbox:
            old.close(1000, "replaced by a newer connection")
        participant.outbox = outbox
        self._rotate_token(participant, used=token)
        participant.signaling_up = True
        call = participant.call
        logger.info("resumed%s", " in a call" if call else "")
        participant.send(self._resumed_message(participant, call))
        if call is not None:
            partner = call.partner_of(participant)
            participant.send(
                {"type": "paired", "call_id": call.id, "partner": partner.public_info()}
            )
            state = call.direction_to(participant).state
            if state is not None:
                participant.send(messages.translation(*state))
        self._presence_changed(participant)
        if call is None and not self._is_waiting(participant):
            await self._pair(participant)
        return participant

    async def _resume_from_cluster(
        self, token: str, outbox: Outbox
    ) -> Participant | None:
        assert self.cluster is not None
        try:
            claimed = await self.cluster.claim_reservation(token)
            if claimed is not None:
                return await self._arrive(*claimed, outbox)
            node = await self.cluster.token_node(token)
            url = await self.cluster.node_url(node) if node else None
        except ClusterUnavailable as exc:
            logger.warning("resume lookup failed: %s", exc)
            raise _shared_state_unavailable() from None
        if node is None or node == self.cluster.node_id:
            raise _resume_failed()
        if url is None:
            logger.info("resume for a participant of a lost node")
            outbox.send({"type": "partner_left", "reason": "node_lost"})
            return None
        logger.info("resume redirected to the node holding the participant")
        outbox.send({"type": "redirect", "url": url, "token": token})
        return None

    async def _arrive(
        self, entry: Entry, partner_id: str, outbox: Outbox
    ) -> Participant:
        """Take in a participant redirected here to meet `partner_id`."""
        participant = Participant(
            id=entry.participant_id,
            language=entry.language,
            ip=entry.ip,
            name=entry.name,
            room=entry.room,
            hear_original=entry.hear_original,
            outbox=outbox,
            mixer=ListenerMixer(max_headroom_s=self.config.playout_headroom_s),
        )
        participant_id_var.set(participant.id)
        await self._register(participant)
        partner = self.participants.get(partner_id)
        if partner is None or not partner.active or not self._is_waiting(partner):
            logger.info("redirected participant arrived; the partner is gone")
            participant.send(self._resumed_message(participant, None))
            await self._pair(participant)
            return participant
        logger.info("redirected participant arrived")
        self._remove_local_waiting(partner)
        call = self._new_call(partner, participant)
        participant.send(self._resumed_message(participant, call))
        # The protocol's order: `resumed`, then `paired` to the redirected
        # client, and only then `paired` to the partner.
        await self._start_call(call, first=participant)
        return participant

    def detach(self, participant: Participant, outbox: Outbox) -> None:
        """Mark the participant unreachable after its socket closed.

        The grace period starts, and the partner hears `partner_reconnecting`.
        """
        if participant.outbox is not outbox or not participant.active:
            return
        participant.outbox = None
        participant.signaling_up = False
        self._remove_local_waiting(participant, shared=True)
        self._presence_changed(participant)

    async def offer(self, participant: Participant, sdp: str) -> None:
        outbox = participant.outbox
        leg = MediaLeg(
            ice_servers=self.config.ice_servers.for_peer("server-" + participant.id),
            mixer=participant.mixer,
            tap=participant.tap,
            on_failed=lambda: self._media_failed(participant, leg),
        )
        try:
            answer = await leg.answer(sdp)
        except BadSdp as exc:
            await leg.close()
            logger.info("offer rejected: %s", exc)
            raise ProtocolError("bad_sdp", str(exc)) from None
        if not participant.active or participant.outbox is not outbox:
            # Creating the SDP answer can take seconds with a slow TURN
            # server. A participant who left meanwhile needs no media, and one
            # who resumed on another socket forgot this offer and makes a new
            # one.
            await leg.close()
            logger.info("offer answered after the participant left or resumed; dropped")
            return
        old, participant.leg = participant.leg, leg
        participant.leg_started_at = asyncio.get_running_loop().time()
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
        self._forget(participant)
        if self._remove_local_waiting(participant, shared=True):
            logger.info("left the queue: %s", reason)
        call = participant.call
        if call is not None:
            await self.end_call(call, reasons={participant.id: None}, default=reason)
        await participant.close_media()
        participant.outbox = None
        self._update_gauges()

    async def end_call(
        self, call: Call, *, reasons: dict[str, str | None], default: str
    ) -> None:
        """End `call`; each side gets `partner_left` with its reason, or none."""
        if call.ended:
            return
        self.calls.pop(call.id, None)
        call_id_var.set(call.id)
        metrics.calls_ended.labels(reason=default).inc()
        await call.end()
        for person in (call.a, call.b):
            person.call = None
            reason = reasons.get(person.id, default)
            if reason is None:
                continue
            person.send({"type": "partner_left", "reason": reason})
            # The call is over for both: the partner must join again.
            self._forget(person)
            await person.close_media()
        self._update_gauges()

    async def shutdown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for participant in self.waiting_participants():
            self._remove_local_waiting(participant, shared=True)
        for call in list(self.calls.values()):
            await self.end_call(call, reasons={}, default="server_shutdown")
        for participant in list(self.participants.values()):
            self._forget(participant)
            await participant.close_media()
        # Let queued Redis clean-ups finish before the rest is cancelled.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.leave_cluster()
        self._waiting.clear()
        self._update_gauges()

    # Capacity, budgets and call length

    def _check_capacity(self, room: str | None) -> None:
        if self.draining:
            raise ProtocolError(
                "server_busy", "The server is shutting down; try again in a minute."
            )
        if len(self.participants) >= self.config.max_participants or (
            len(self.calls) >= self.config.max_calls and self._waiting.get(room)
        ):
            logger.warning(
                "capacity reached: %d participants, %d calls",
                len(self.participants),
                len(self.calls),
            )
            raise ProtocolError(
                "server_busy", "The server is full; try again in a few minutes."
            )

    def _budget_exhausted(self, ip: str) -> bool:
        if self.config.daily_budget_s <= 0:
            return False
        self._roll_budget_day()
        return self._budget_used.get(ip, 0.0) >= self.config.daily_budget_s

    def _roll_budget_day(self) -> None:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self._budget_day:
            self._budget_day = today
            self._budget_used.clear()

    async def _enforce_call_limits(self, elapsed_s: float) -> None:
        for call in list(self.calls.values()):
            call_id_var.set(call.id)
            if time.monotonic() - call.started_monotonic >= self.config.max_call_s:
                logger.info("call reached MAX_CALL_S")
                await self.end_call(call, reasons={}, default="max_duration")
                continue
            if not call.translated or self.config.daily_budget_s <= 0:
                continue
            for ip in {call.a.ip, call.b.ip}:
                self._budget_used[ip] = self._budget_used.get(ip, 0.0) + elapsed_s
            if self._budget_exhausted(call.a.ip) or self._budget_exhausted(call.b.ip):
                logger.info("daily translation budget used up")
                await self.end_call(call, reasons={}, default="budget_exhausted")

    # Pairing

    async def _pair(self, participant: Participant) -> None:
        if self.cluster is not None:
            await self._pair_in_cluster(participant)
            return
        queue = self._waiting.get(participant.room)
        if not queue:
            self._add_local_waiting(participant)
            return
        partner = queue.popleft()
        self._drop_empty_queue(participant.room)
        await self._start_call(self._new_call(partner, participant))

    async def _pair_in_cluster(self, participant: Participant) -> None:
        """Pair through the shared queue; a partner elsewhere means a redirect."""
        assert self.cluster is not None
        entry = self._entry(participant)
        try:
            # A popped entry of this node whose participant is gone is stale;
            # retry a few times, then wait.
            for _ in range(3):
                found = await self.cluster.pair_or_wait(entry)
                if found is None:
                    participant.shared_entry = entry
                    self._add_local_waiting(participant)
                    return
                if found.node != self.cluster.node_id:
                    await self._redirect(participant, entry, found)
                    return
                partner = self.participants.get(found.participant_id)
                if partner is not None and partner.active and self._is_waiting(partner):
                    self._remove_local_waiting(partner)
                    await self._start_call(self._new_call(partner, participant))
                    return
            self._add_local_waiting(participant)
        except ClusterUnavailable as exc:
            logger.warning("pairing failed: %s", exc)
            error = _shared_state_unavailable()
            participant.send(messages.error(error.code, error.message))
            await self.leave(participant, reason="disconnected")

    async def _redirect(
        self, participant: Participant, entry: Entry, found: Entry
    ) -> None:
        assert self.cluster is not None
        token = await self.cluster.reserve(newcomer=entry, partner=found)
        url = await self.cluster.node_url(found.node)
        if url is None:
            raise ClusterUnavailable(f"node {found.node!r} vanished while pairing")
        logger.info("partner waits on another node; redirecting")
        participant.send({"type": "redirect", "url": url, "token": token})
        # The participant lives on at the partner's node; here it is gone.
        self._forget(participant)
        await participant.close_media()
        participant.outbox = None

    def _new_call(self, first: Participant, second: Participant) -> Call:
        call = Call(
            a=first,
            b=second,
            engine=self.config.engine,
            unavailable_reason=self.config.unavailable_reason,
            caption_final_s=self.config.caption_final_s,
        )
        first.call = call
        second.call = call
        self.calls[call.id] = call
        return call

    async def _start_call(self, call: Call, first: Participant | None = None) -> None:
        """Send `paired` to both sides (`first` first) and start the media."""
        metrics.calls_started.inc()
        self._update_gauges()
        order = (call.b, call.a) if first is call.b else (call.a, call.b)
        for person in order:
            other = call.partner_of(person)
            person.send(
                {"type": "paired", "call_id": call.id, "partner": other.public_info()}
            )
        await call.start()

    def _add_local_waiting(self, participant: Participant) -> None:
        self._waiting.setdefault(participant.room, deque()).append(participant)
        participant.send({"type": "waiting"})
        logger.info("waiting for a partner")
        self._update_gauges()

    def _remove_local_waiting(
        self, participant: Participant, *, shared: bool = False
    ) -> bool:
        """Take a participant out of the waiting queue; True if it was there.

        With `shared`, its entry also leaves the cluster's queue.
        """
        queue = self._waiting.get(participant.room)
        if queue is None or participant not in queue:
            return False
        queue.remove(participant)
        self._drop_empty_queue(participant.room)
        entry, participant.shared_entry = participant.shared_entry, None
        if shared and entry is not None and self.cluster is not None:
            self._spawn(self._remove_shared_entry(entry))
        self._update_gauges()
        return True

    async def _remove_shared_entry(self, entry: Entry) -> None:
        assert self.cluster is not None
        try:
            await self.cluster.remove_waiting(entry)
        except ClusterUnavailable as exc:
            logger.info("waiting entry left in Redis until its node check: %s", exc)

    def _entry(self, participant: Participant) -> Entry:
        assert self.cluster is not None
        return Entry(
            participant_id=participant.id,
            node=self.cluster.node_id,
            language=participant.language,
            name=participant.name,
            room=participant.room,
            hear_original=participant.hear_original,
            ip=participant.ip,
        )

    async def _register(self, participant: Participant) -> None:
        self.participants[participant.id] = participant
        self._tokens[participant.resume_token] = participant
        await self._publish_token(participant.resume_token)

    async def _publish_token(self, token: str) -> None:
        if self.cluster is None:
            return
        ttl = int(self.config.max_call_s + self.config.resume_grace_s + 60)
        try:
            await self.cluster.publish_token(token, ttl)
        except ClusterUnavailable as exc:
            logger.info("resume token not shared, so resume works here only: %s", exc)

    def _resumed_message(
        self, participant: Participant, call: Call | None
    ) -> dict[str, Any]:
        return {
            "type": "resumed",
            "participant_id": participant.id,
            "call_id": call.id if call else None,
            "resume_token": participant.resume_token,
            "ice_servers": self.config.ice_servers.for_peer(participant.id),
        }

    def _is_waiting(self, participant: Participant) -> bool:
        return participant in self._waiting.get(participant.room, ())

    def _drop_empty_queue(self, room: str | None) -> None:
        if room in self._waiting and not self._waiting[room]:
            del self._waiting[room]

    # Presence and the grace period

    def _presence_changed(self, participant: Participant) -> None:
        call = participant.call
        if not participant.present and participant.grace is None:
            loop = asyncio.get_running_loop()
            participant.grace = loop.call_later(
                self.config.resume_grace_s, self._grace_expired, participant
            )
            logger.info(
                "participant unreachable (signaling %s, media %s); holding %.0f s",
                "up" if participant.signaling_up else "down",
                "down"
                if participant.media_down
                else ("up" if participant.leg is not None else "not set up"),
                self.config.resume_grace_s,
            )
            if call is not None:
                call.partner_of(participant).send({"type": "partner_reconnecting"})
        elif participant.present and participant.grace is not None:
            participant.grace.cancel()
            participant.grace = None
            logger.info("participant reachable again")
            if call is not None:
                call.partner_of(participant).send({"type": "partner_returned"})

    def _grace_expired(self, participant: Participant) -> None:
        participant.grace = None
        if not participant.active:
            return
        call_id_var.set(participant.call.id if participant.call else "-")
        participant_id_var.set(participant.id)
        logger.info("grace period over; removing the participant")
        self._spawn(self.leave(participant, reason="disconnected"))

    def _media_failed(self, participant: Participant, leg: MediaLeg) -> None:
        if participant.leg is not leg or participant.media_down:
            return
        self._mark_media_down(participant, "ICE failed")

    def _mark_media_down(self, participant: Participant, reason: str) -> None:
        participant_id_var.set(participant.id)
        logger.info("media dropped: %s", reason)
        participant.media_down = True
        participant.media_down_since = asyncio.get_running_loop().time()
        self._presence_changed(participant)

    async def _run_watchdog(self) -> None:
        """Check media and call limits every WATCHDOG_INTERVAL_S."""
        loop = asyncio.get_running_loop()
        previous = loop.time()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            now = loop.time()
            try:
                self._roll_budget_day()
                await self._enforce_call_limits(now - previous)
                self._check_media(now)
                if self.cluster is not None:
                    await self._tend_cluster()
            except Exception:
                logger.exception("watchdog check failed")
            previous = now

    async def _tend_cluster(self) -> None:
        """Heartbeat, drop dead nodes' entries, and requeue lost local ones.

        A local waiting participant whose entry is neither queued nor
        reserved was popped for a redirect whose holder never came: it goes
        back to the front of the queue.
        """
        assert self.cluster is not None
        await self.cluster.heartbeat()
        if not self.cluster.healthy:
            return
        try:
            removed = await self.cluster.purge_dead_nodes()
            if removed:
                logger.info("removed %d waiting entries of lost nodes", removed)
            for participant in self.waiting_participants():
                entry = participant.shared_entry
                if entry is None:
                    # Queued while Redis was down: share it now.
                    participant.shared_entry = entry = self._entry(participant)
                    await self.cluster.requeue_front(entry)
                elif not await self.cluster.is_waiting_or_reserved(entry):
                    logger.info("redirected partner never came; waiting again")
                    await self.cluster.requeue_front(entry)
        except ClusterUnavailable as exc:
            logger.warning("cluster upkeep failed: %s", exc)

    def _check_media(self, now: float) -> None:
        """Mark media as dropped after MEDIA_TIMEOUT_S without inbound audio."""
        for participant in list(self.participants.values()):
            if participant.leg is None or participant.call is None:
                continue
            last_frame = participant.tap.last_frame_at or 0.0
            if participant.media_down:
                if last_frame > participant.media_down_since:
                    participant.media_down = False
                    self._presence_changed(participant)
            elif now - max(last_frame, participant.leg_started_at) > (
                self.config.media_timeout_s
            ):
                self._mark_media_down(
                    participant,
                    f"no inbound audio for {self.config.media_timeout_s:.0f} s",
                )

    # Bookkeeping

    def _rotate_token(self, participant: Participant, *, used: str) -> None:
        stale = {participant.previous_token, participant.resume_token} - {used}
        for token in stale:
            if token is not None:
                self._tokens.pop(token, None)
        participant.previous_token = used
        participant.resume_token = secrets.token_urlsafe(24)
        self._tokens[participant.resume_token] = participant
        self._spawn(self._publish_token(participant.resume_token))

    def _forget(self, participant: Participant) -> None:
        """Make the participant unreachable: no id, no tokens, no timer."""
        self.participants.pop(participant.id, None)
        participant.active = False
        for token in (participant.resume_token, participant.previous_token):
            if token is not None:
                self._tokens.pop(token, None)
        if participant.grace is not None:
            participant.grace.cancel()
            participant.grace = None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _update_gauges(self) -> None:
        metrics.waiting.set(self.waiting_count)
        metrics.active_calls.set(len(self.calls))
        if self.calls:
            self.no_calls.clear()
        else:
            self.no_calls.set()


def _shared_state_unavailable() -> ProtocolError:
    return ProtocolError(
        "server_busy", "The server cannot reach its shared state; try again shortly."
    )


def _resume_failed() -> ProtocolError:
    return ProtocolError(
        "resume_failed", "The resume token is invalid or expired; join again."
    )
