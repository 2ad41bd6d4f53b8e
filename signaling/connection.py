"""One signaling WebSocket: message limits, dispatch and error replies."""

from __future__ import annotations

import logging

from media import metrics
from media.logcontext import call_id_var, participant_id_var
from signaling import messages
from signaling.errors import ProtocolError
from signaling.hub import Hub
from signaling.participant import Outbox, Participant
from signaling.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

MAX_ERRORS_IN_A_ROW = 20
CLOSE_POLICY_VIOLATION = 1008


class SignalingConnection:
    """Validate each incoming message and apply it through the hub.

    The transport stays outside: the server feeds text or binary frames in
    and writes whatever lands in `outbox`.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        max_message_bytes: int,
        client_ip: str,
        rate_limit: TokenBucket,
    ) -> None:
        self.hub = hub
        self.outbox = Outbox()
        self.participant: Participant | None = None
        self.client_ip = client_ip
        self._max_message_bytes = max_message_bytes
        self._rate_limit = rate_limit
        self._errors_in_a_row = 0

    @property
    def has_participant(self) -> bool:
        return self.participant is not None and self.participant.active

    async def on_text(self, text: str) -> None:
        self._bind_log_context()
        try:
            if not self._rate_limit.allow():
                metrics.rate_limited.labels(kind="message").inc()
                raise ProtocolError("rate_limited", "Too many messages; slow down.")
            if len(text) > self._max_message_bytes or (
                len(text) * 4 > self._max_message_bytes
                and len(text.encode("utf-8", "replace")) > self._max_message_bytes
            ):
                raise ProtocolError(
                    "too_large",
                    f"The message is larger than {self._max_message_bytes} bytes.",
                )
            await self._dispatch(messages.parse_client_message(text))
        except ProtocolError as exc:
            self._reject(exc)
        else:
            self._errors_in_a_row = 0

    def on_binary(self) -> None:
        if not self._rate_limit.allow():
            metrics.rate_limited.labels(kind="message").inc()
            self._reject(ProtocolError("rate_limited", "Too many messages; slow down."))
            return
        self._reject(
            ProtocolError(
                "bad_message", "Binary frames are not accepted; send JSON text."
            )
        )

    async def on_close(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None and participant.active:
            self._bind_log_context(participant)
            logger.info("signaling closed")
            self.hub.detach(participant, self.outbox)

    async def _dispatch(self, message: messages.ClientMessage) -> None:
        if isinstance(message, messages.Ping):
            self.outbox.send({"type": "pong"})
            return
        if isinstance(message, messages.Join):
            if self.participant is not None and self.participant.active:
                raise ProtocolError("already_joined", "This connection already joined.")
            self.participant = await self.hub.join(
                message, self.outbox, ip=self.client_ip
            )
            return
        if isinstance(message, messages.Resume):
            if self.participant is not None and self.participant.active:
                raise ProtocolError("already_joined", "This connection already joined.")
            self.participant = await self.hub.resume(message.token, self.outbox)
            return
        participant = self.participant
        if participant is None or not participant.active:
            self.participant = None
            raise ProtocolError("not_joined", "Send join first.")
        if isinstance(message, messages.Offer):
            await self.hub.offer(participant, message.sdp)
        elif isinstance(message, messages.Candidate):
            await self.hub.candidate(participant, message.candidate)
        elif isinstance(message, messages.Settings):
            self.hub.set_hear_original(participant, message.hear_original)
        elif isinstance(message, messages.Leave):
            self.participant = None
            logger.info("leave")
            await self.hub.leave(participant, reason="left")

    def _reject(self, exc: ProtocolError) -> None:
        self._errors_in_a_row += 1
        logger.info("rejected message: %s (%s)", exc.code, exc.message)
        self.outbox.send(messages.error(exc.code, exc.message))
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            logger.warning(
                "closing signaling after %d errors in a row", MAX_ERRORS_IN_A_ROW
            )
            self.outbox.close(CLOSE_POLICY_VIOLATION, "too many invalid messages")

    def _bind_log_context(self, participant: Participant | None = None) -> None:
        participant = participant or self.participant
        participant_id_var.set(participant.id if participant else "-")
        call = participant.call if participant else None
        call_id_var.set(call.id if call else "-")
