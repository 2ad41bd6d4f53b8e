"""A participant's WebRTC media connection, terminated by aiortc."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from media import metrics
from media.outbound import ListenerMixer, OutboundAudioTrack
from media.sdp import BadSdp, check_offer

logger = logging.getLogger(__name__)

# How long `MediaLeg.close` waits for aiortc. Closing frees a TURN relay with
# a request that retries for about 30 s when the TURN server is unreachable,
# so the rest of that wait happens in the background.
CLOSE_WAIT_S = 2.0

# Candidate gathering slower than this means a STUN or TURN server did not
# respond: aioice waits 5 s for each before it goes on without it.
SLOW_GATHERING_S = 2.0


@dataclass
class TurnStatus:
    """The outcome of the newest answer gathered with a TURN server, if any."""

    last_outcome: str | None = None
    last_at: float | None = None


# Shared by the process, like the Prometheus metrics; /api/status shows it.
turn_status = TurnStatus()

# Closes still running after CLOSE_WAIT_S, referenced until they end.
_closing: set[asyncio.Task[None]] = set()

FrameConsumer = Callable[[av.AudioFrame], None]


class InboundTap:
    """The destination of a participant's decoded microphone frames.

    The tap outlives media connections: a new offer feeds the same tap, so
    its consumer (a call direction) does not notice the switch. Frames
    with no consumer are dropped, so a participant waiting for a partner
    costs no memory.
    """

    def __init__(self) -> None:
        self.consumer: FrameConsumer | None = None
        self.frames = 0
        self.dropped = 0
        self.last_frame_at: float | None = None

    def deliver(self, frame: av.AudioFrame) -> None:
        self.frames += 1
        self.last_frame_at = asyncio.get_running_loop().time()
        if self.consumer is None:
            self.dropped += 1
            return
        self.consumer(frame)


class MediaLeg:
    """One `RTCPeerConnection`, created for one client offer."""

    def __init__(
        self,
        *,
        ice_servers: list[dict[str, Any]],
        mixer: ListenerMixer,
        tap: InboundTap,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        servers = [
            RTCIceServer(
                urls=entry["urls"],
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
            for entry in ice_servers
        ]
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._uses_turn = any(
            url.startswith("turn")
            for server in servers
            for url in ([server.urls] if isinstance(server.urls, str) else server.urls)
        )
        self._mixer = mixer
        self._tap = tap
        self._on_failed = on_failed
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP with candidates."""
        check_offer(offer_sdp)
        try:
            await self._pc.setRemoteDescription(
                RTCSessionDescription(sdp=offer_sdp, type="offer")
            )
        # aiortc's SDP parser (1.16) signals bad input with whatever its code
        # trips on, assert statements included, so any failure here is the
        # client's SDP.
        except Exception as exc:
            logger.debug("offer not applied: %r", exc)
            raise BadSdp(f"The offer could not be applied: {exc!r}") from exc
        audio = [t for t in self._pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise BadSdp("The offer has no audio section.")
        self._mixer.reset()
        self._pc.addTrack(OutboundAudioTrack(self._mixer))
        try:
            answer = await self._pc.createAnswer()
        except ValueError as exc:
            # For example no codec in common with the offer.
            raise BadSdp(f"No answer fits the offer: {exc}") from exc
        started = time.monotonic()
        await self._pc.setLocalDescription(answer)
        sdp = str(self._pc.localDescription.sdp)
        self._check_gathering(sdp, time.monotonic() - started)
        return sdp

    def _check_gathering(self, sdp: str, elapsed_s: float) -> None:
        """Log when a STUN or TURN server slowed down or failed the answer."""
        if elapsed_s > SLOW_GATHERING_S:
            logger.warning(
                "gathering ICE candidates took %.1f s: a STUN or TURN server in "
                "ICE_SERVERS or TURN_URLS did not respond",
                elapsed_s,
            )
        if not self._uses_turn:
            return
        outcome = "relay" if " typ relay" in sdp else "missing"
        metrics.turn_gathering.labels(outcome).inc()
        turn_status.last_outcome = outcome
        turn_status.last_at = time.time()
        if outcome == "missing":
            logger.warning(
                "no TURN relay candidate in the answer: the TURN server was "
                "unreachable or rejected the credentials (check TURN_URLS and "
                "TURN_SECRET)"
            )

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Add a trickled candidate; null (end of candidates) needs nothing."""
        if candidate is None or not candidate.get("candidate"):
            return
        text = str(candidate["candidate"])
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        try:
            parsed = candidate_from_sdp(text)
        except (ValueError, IndexError) as exc:
            raise BadSdp(f"The ICE candidate is invalid: {exc}") from exc
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self._pc.addIceCandidate(parsed)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        closing = asyncio.create_task(self._pc.close(), name="media-close")
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.shield(closing)
        except TimeoutError:
            logger.warning(
                "media connection still closing after %g s (a TURN server that "
                "does not answer?); finishing in the background",
                CLOSE_WAIT_S,
            )
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio" or self._pump is not None:
            return
        self._pump = asyncio.create_task(self._pump_frames(track), name="inbound-pump")

    async def _pump_frames(self, track: Any) -> None:
        """Read every decoded frame, so aiortc's unbounded queue stays empty."""
        try:
            while True:
                frame = await track.recv()
                self._tap.deliver(frame)
        except MediaStreamError:
            logger.debug("inbound track ended")
        except Exception:
            logger.exception("inbound audio pump failed")

    async def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        logger.info("media connection state: %s", state)
        if state == "failed" and self._on_failed is not None and not self._closed:
            self._on_failed()
