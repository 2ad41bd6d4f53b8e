"""Benchmark peers: an aiortc client that plays a SendPlan and logs every frame
it receives, and the signaling steps that put two of them in a call.

Peers use no STUN or TURN server. Run the benchmark through tests/run-in-netns,
where the only ICE host candidate is 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from bench.detect import Reception
from bench.plan import FRAME_SAMPLES, SAMPLE_RATE, Samples, SendPlan
from tests.support.peer import SignalingClient

logger = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class PlanTrack(MediaStreamTrack):
    """Send silence, or a SendPlan's cycle in a loop, as clock-paced 20 ms packets.

    Packet n leaves recv n * 20 ms after the first call. `play` and `pause`
    switch between the plan and silence at the next packet, so the track keeps
    its timing whatever it sends. Every marker packet's send time is logged.
    The packets are the plan's pre-encoded Opus, so aiortc sends them without
    encoding.
    """

    kind = "audio"

    def __init__(self, plan: SendPlan, *, first_frame: int) -> None:
        super().__init__()
        self._plan = plan
        self._cycle_frame = first_frame % plan.frames
        self._marker_frames = {
            start // FRAME_SAMPLES: index
            for index, start in enumerate(plan.marker_starts)
        }
        self._playing = False
        self._pts = 0
        self._clock_start: float | None = None
        self.marker_sends: list[tuple[int, float]] = []
        """(marker index in the plan, time.monotonic() when recv returned it)."""
        self.sent_chunks: list[Samples] = []
        """The plan audio sent while playing; views into the plan, not copies."""

    def play(self) -> None:
        self._playing = True

    def pause(self) -> None:
        self._playing = False

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        else:
            delay = self._clock_start + self._pts / SAMPLE_RATE - now
            if delay > 0:
                await asyncio.sleep(delay)
        marker: int | None = None
        payload = self._plan.silence
        if self._playing:
            index = self._cycle_frame
            start = index * FRAME_SAMPLES
            self.sent_chunks.append(self._plan.samples[start : start + FRAME_SAMPLES])
            payload = self._plan.packets[index]
            marker = self._marker_frames.get(index)
            self._cycle_frame = (index + 1) % self._plan.frames
        # aiortc sends a packet as it is, with its pts as the RTP timestamp.
        packet = av.Packet(payload)
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        if marker is not None:
            self.marker_sends.append((marker, time.monotonic()))
        return packet


class FrameLog:
    """Read a remote audio track and, while `recording`, keep every frame.

    Frames are read all the time, so aiortc's queue never grows; only the
    first `max_frames` recorded frames are kept, the rest are counted in
    `frames_over`. Construct it inside a running event loop: it owns a task
    that `stop` cancels.
    """

    def __init__(self, track: MediaStreamTrack, *, max_frames: int) -> None:
        self.track = track
        self.max_frames = max_frames
        self.recording = False
        self.frames_seen = 0
        self.frames_over = 0
        self.error: BaseException | None = None
        self._arrivals: list[float] = []
        self._pts: list[int] = []
        self._chunks: list[Samples] = []
        self._task = asyncio.create_task(self._run(), name=f"bench-log-{track.id}")

    def reception(self) -> Reception:
        return Reception.from_frames(self._arrivals, self._pts, self._chunks)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                arrived_at = time.monotonic()
                if not isinstance(frame, av.AudioFrame):
                    raise TypeError(f"expected an audio frame, received {frame!r}")
                self.frames_seen += 1
                if not self.recording:
                    continue
                if len(self._arrivals) >= self.max_frames:
                    self.frames_over += 1
                    continue
                channels = frame.layout.nb_channels
                # Packed s16 audio is one row of interleaved channels.
                first_channel = frame.to_ndarray()[0, ::channels]
                self._arrivals.append(arrived_at)
                self._pts.append(frame.pts if frame.pts is not None else 0)
                self._chunks.append(np.ascontiguousarray(first_channel))
        except MediaStreamError:
            logger.debug("remote track %s ended", self.track.id)
        except Exception as error:
            logger.exception("logging remote track %s failed", self.track.id)
            self.error = error


class BenchPeer:
    """An aiortc peer connection with one PlanTrack out and one FrameLog in."""

    def __init__(self, plan: SendPlan, *, first_frame: int, max_frames: int) -> None:
        self.plan = plan
        self.track = PlanTrack(plan, first_frame=first_frame)
        self.log: FrameLog | None = None
        self._max_frames = max_frames
        # An empty list, because with iceServers=None aiortc 1.16 gathers a
        # candidate from a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._changed = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._changed.set)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.log is None:
            self.log = FrameLog(track, max_frames=self._max_frames)
            self._changed.set()

    async def make_offer(self) -> str:
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=sdp, type="answer")
        )

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the connection is up and the remote track has arrived."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pc.connectionState != "connected" or self.log is None:
                    if self.pc.connectionState in ("failed", "closed"):
                        raise ConnectionError(
                            f"peer connection is {self.pc.connectionState!r}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"peer not ready after {timeout_s} s: connection state "
                f"{self.pc.connectionState!r}, remote track "
                f"{'received' if self.log else 'missing'}"
            ) from None

    async def close(self) -> None:
        if self.log is not None:
            await self.log.stop()
        self.track.stop()
        await self.pc.close()


@dataclass
class Side:
    signaling: SignalingClient
    peer: BenchPeer


@dataclass
class BenchCall:
    room: str
    first: Side
    second: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.first, self.second)


async def _open_side(
    ws_url: str, language: str, room: str, peer: BenchPeer, timeout_s: float
) -> Side:
    signaling = await SignalingClient.connect(ws_url, timeout_s=timeout_s)
    try:
        join: dict[str, Any] = {"type": "join", "language": language, "room": room}
        await signaling.send(join)
        await signaling.expect("joined", timeout_s)
        await signaling.send({"type": "offer", "sdp": await peer.make_offer()})
        answer = await signaling.expect("answer", timeout_s)
        await peer.accept_answer(answer["sdp"])
        await peer.wait_ready(timeout_s)
    except BaseException:
        await signaling.close()
        raise
    return Side(signaling, peer)


async def _wait_translation_ready(side: Side, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await side.signaling.expect("translation", timeout_s)
            if message["state"] == "ready":
                return


async def open_call(
    ws_url: str,
    *,
    room: str,
    languages: tuple[str, str],
    peers: tuple[BenchPeer, BenchPeer],
    wait_translation: bool,
    timeout_s: float,
) -> BenchCall:
    """Join two peers into `room`, connect their media and wait for pairing.

    With `wait_translation`, also wait until both listeners get a `translation`
    message in state "ready", so the call measures the steady state. The
    peers are closed if the call cannot be opened.
    """
    opened: list[Side] = []
    try:
        for language, peer in zip(languages, peers, strict=True):
            opened.append(await _open_side(ws_url, language, room, peer, timeout_s))
        for side in opened:
            await side.signaling.expect("paired", timeout_s)
        if wait_translation:
            for side in opened:
                await _wait_translation_ready(side, timeout_s)
    except BaseException:
        for side in opened:
            await side.signaling.close()
        for peer in peers:
            await peer.close()
        raise
    return BenchCall(room=room, first=opened[0], second=opened[1])


async def close_call(call: BenchCall, timeout_s: float) -> None:
    """Leave the call, then close both peers and both WebSockets."""
    try:
        async with asyncio.timeout(timeout_s):
            await call.first.signaling.send({"type": "leave"})
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        logger.warning("leave in room %s failed: %r", call.room, exc)
    for side in call.sides:
        await side.peer.close()
    for side in call.sides:
        await side.signaling.close()
