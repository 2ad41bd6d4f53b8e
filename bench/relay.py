"""The baseline: a plain aiortc relay that forwards each peer's decoded audio
frames to its partner, with no translation, no resampling and no pacing.
Each frame is copied once into an exact-size buffer (see `_exact_copy`).

It implements only the part of the call protocol that the benchmark uses:
`join` with a room, `offer` and `leave` from the client, and `joined`,
`waiting`, `paired`, `answer` and `partner_left` from the server, plus
GET /api/health. Run it with `python -m bench.relay --port PORT`. It listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import secrets
from typing import Any

import av
from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

logger = logging.getLogger("bench.relay")

QUEUE_FRAMES = 10
"""Frames (200 ms) a listener's queue holds; past that the oldest is dropped."""


class RelayTrack(MediaStreamTrack):
    """Frames from the partner, as they arrive, renumbered for this listener.

    The queue is bounded: when the encoder falls behind, the oldest frame is
    dropped and counted.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.AudioFrame] = asyncio.Queue(QUEUE_FRAMES)
        self.dropped = 0
        self._pts = 0

    def put(self, frame: av.AudioFrame) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        # The partner's pts follow the partner's RTP clock; this track needs
        # its own continuous timeline.
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, frame.sample_rate)
        self._pts += frame.samples
        return frame


def _exact_copy(frame: av.AudioFrame) -> av.AudioFrame:
    """Copy a decoded frame into a buffer of exactly its samples.

    aiortc 1.16's Opus decoder returns frames whose buffer is sized for the
    longest Opus packet (120 ms). Its sender computes the audio level in a
    Python loop over the whole buffer, which takes 0.54 ms per forwarded frame
    against 0.11 ms for an exact copy of 960 stereo samples (bench/costs.py
    times the first). The copy itself takes 0.006 ms and keeps that quirk out
    of the baseline. Samples, format and rate stay as decoded.
    """
    copy = av.AudioFrame.from_ndarray(
        frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
    )
    copy.sample_rate = frame.sample_rate
    return copy


class Participant:
    def __init__(self, ws: web.WebSocketResponse, room: str | None) -> None:
        self.id = "p_" + secrets.token_hex(6)
        self.ws = ws
        self.room = room
        self.partner: Participant | None = None
        self.outbound = RelayTrack()
        self.pc: RTCPeerConnection | None = None
        self.pump: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_json(message)

    async def answer(self, sdp: str) -> str:
        await self.close_media()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        pc.addTrack(self.outbound)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.pump is None:
            self.pump = asyncio.create_task(self._forward(track), name="relay-pump")

    async def _forward(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    raise TypeError(f"expected an audio frame, received {frame!r}")
                if self.partner is not None:
                    self.partner.outbound.put(_exact_copy(frame))
        except MediaStreamError:
            logger.debug("inbound track of %s ended", self.id)

    async def close_media(self) -> None:
        pump, self.pump = self.pump, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        pc, self.pc = self.pc, None
        if pc is not None:
            await pc.close()


class Relay:
    """Pair participants per room and relay audio between partners."""

    def __init__(self) -> None:
        self.waiting: dict[str | None, Participant] = {}

    async def join(self, participant: Participant) -> None:
        await participant.send(
            {
                "type": "joined",
                "participant_id": participant.id,
                "resume_token": "",
                "ice_servers": [],
            }
        )
        partner = self.waiting.pop(participant.room, None)
        if partner is None:
            self.waiting[participant.room] = participant
            await participant.send({"type": "waiting"})
            return
        partner.partner = participant
        participant.partner = partner
        call_id = "c_" + secrets.token_hex(6)
        for person, other in ((partner, participant), (participant, partner)):
            info = {"participant_id": other.id, "language": "", "name": None}
            await person.send({"type": "paired", "call_id": call_id, "partner": info})

    async def leave(self, participant: Participant, reason: str) -> None:
        if self.waiting.get(participant.room) is participant:
            del self.waiting[participant.room]
        partner, participant.partner = participant.partner, None
        await participant.close_media()
        if partner is not None:
            partner.partner = None
            await partner.send({"type": "partner_left", "reason": reason})
            await partner.close_media()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        participant: Participant | None = None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                kind = data.get("type")
                if kind == "join" and participant is None:
                    participant = Participant(ws, data.get("room"))
                    await self.join(participant)
                elif kind == "offer" and participant is not None:
                    sdp = await participant.answer(str(data["sdp"]))
                    await participant.send({"type": "answer", "sdp": sdp})
                elif kind == "leave" and participant is not None:
                    await self.leave(participant, "left")
                    participant = None
                elif kind == "ping":
                    await ws.send_json({"type": "pong"})
        finally:
            if participant is not None:
                await self.leave(participant, "disconnected")
        return ws


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    relay = Relay()
    app = web.Application()
    app.router.add_get("/ws", relay.handle)
    app.router.add_get("/api/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description="Plain aiortc audio relay, the benchmark's baseline.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    web.run_app(
        create_app(), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
