"""A test WebRTC client: an aiortc peer that plays a file and records what it hears,
and a WebSocket client for the signaling protocol of the call server.

Peers use no STUN or TURN server, so their only ICE candidates are host
candidates. Run tests that connect peers through tests/run-in-netns, where the
only host candidate is 127.0.0.2 (see tests/support/netns.py).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from .speech import SAMPLE_RATE, WINDOW_S, Samples

logger = logging.getLogger(__name__)

SAMPLES_PER_FRAME = int(SAMPLE_RATE * WINDOW_S)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

MAX_RECORDING_S = 120.0
MAX_MESSAGES_IN_ERROR = 30


class FileAudioTrack(MediaStreamTrack):
    """An audio track that plays mono int16 48 kHz samples as 20 ms frames.

    Frames are paced in real time, so frame n is returned n * 20 ms after the
    first call to recv. The track plays leading_silence_s of
    silence, then the samples, then silence for as long as it is read. With
    loop=True it repeats the leading silence and the samples instead.
    """

    kind = "audio"

    def __init__(
        self,
        samples: Samples | None = None,
        *,
        leading_silence_s: float = 0.0,
        loop: bool = False,
    ) -> None:
        super().__init__()
        self._samples = np.zeros(0, dtype=np.int16) if samples is None else samples
        self._leading_samples = round(leading_silence_s * SAMPLE_RATE)
        self._repeat = loop and len(self._samples) > 0
        self._pts = 0
        self._clock_start: float | None = None
        self.started_at: float | None = None
        """time.monotonic() when recv returned the frame with the first sample.

        That sample lies up to 20 ms into the frame unless leading_silence_s
        is a multiple of 20 ms.
        """
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError

        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        else:
            await asyncio.sleep(self._clock_start + self._pts / SAMPLE_RATE - now)

        chunk, has_speech = self._chunk(self._pts)
        if has_speech and self.started_at is None:
            self.started_at = time.monotonic()

        frame = av.AudioFrame.from_ndarray(
            chunk.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += SAMPLES_PER_FRAME
        self.frames_sent += 1
        return frame

    def _chunk(self, start: int) -> tuple[Samples, bool]:
        """Return the frame that starts at sample start, and whether it has speech."""
        cycle = self._leading_samples + len(self._samples)
        if self._repeat:
            start %= cycle
        chunk = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
        offset = start - self._leading_samples
        has_speech = False
        # With loop, one frame may span the end of one cycle and the start of
        # the next, so fill it piece by piece.
        filled = 0
        while filled < SAMPLES_PER_FRAME:
            if offset < 0:
                step = min(-offset, SAMPLES_PER_FRAME - filled)
            elif offset < len(self._samples):
                step = min(len(self._samples) - offset, SAMPLES_PER_FRAME - filled)
                chunk[filled : filled + step] = self._samples[offset : offset + step]
                has_speech = True
            elif self._repeat:
                offset = -self._leading_samples
                continue
            else:
                break
            filled += step
            offset += step
        return chunk, has_speech


class AudioRecorder:
    """Records a remote audio track as mono int16 48 kHz samples.

    Reading starts at construction, in a task that this object owns and that
    stop() cancels, so construct it inside a running event loop. Frames after
    max_duration_s of audio are counted in frames_dropped but not kept.
    """

    def __init__(
        self, track: MediaStreamTrack, *, max_duration_s: float = MAX_RECORDING_S
    ) -> None:
        self.track = track
        self.max_samples = round(max_duration_s * SAMPLE_RATE)
        self.frames_received = 0
        self.frames_dropped = 0
        self.error: BaseException | None = None
        """The unexpected exception that ended recording, if any."""
        self._chunks: list[Samples] = []
        self._sample_count = 0
        # (time.monotonic() of arrival, index of the frame's first sample)
        self._arrivals: list[tuple[float, int]] = []
        self._resampler = av.AudioResampler(
            format="s16", layout="mono", rate=SAMPLE_RATE
        )
        self.ended = asyncio.Event()
        # Set after every stored frame and at the end, to wake wait_for_duration.
        self._progress = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"record-{track.id}")

    @property
    def sample_count(self) -> int:
        return self._sample_count

    @property
    def duration_s(self) -> float:
        return self._sample_count / SAMPLE_RATE

    def samples(self) -> Samples:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    def arrival_time(self, sample_index: int) -> float:
        """Return time.monotonic() at which the frame with sample_index arrived."""
        if not 0 <= sample_index < self._sample_count:
            raise IndexError(
                f"sample index {sample_index} is outside the recording "
                f"of {self._sample_count} samples"
            )
        # The last frame whose first sample is at or before sample_index.
        starts = [start for _, start in self._arrivals]
        position = int(np.searchsorted(starts, sample_index, side="right")) - 1
        return self._arrivals[position][0]

    async def wait_for_duration(self, duration_s: float, timeout_s: float) -> None:
        """Wait until duration_s of audio has been recorded."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.duration_s < duration_s and not self.ended.is_set():
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout_s} s with {self.duration_s:.2f} s of "
                f"audio recorded, expected {duration_s:.2f} s"
            ) from None
        if self.duration_s < duration_s:
            raise RuntimeError(
                f"the remote track ended after {self.duration_s:.2f} s of audio, "
                f"expected {duration_s:.2f} s"
            ) from self.error

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                if not isinstance(frame, av.AudioFrame):
                    raise TypeError(f"expected an audio frame, received {frame!r}")
                self._store(frame)
        except MediaStreamError:
            logger.debug("remote track %s ended", self.track.id)
        except Exception as error:
            logger.exception("recording remote track %s failed", self.track.id)
            self.error = error
        finally:
            self.ended.set()
            self._progress.set()

    def _store(self, frame: av.AudioFrame) -> None:
        arrived_at = time.monotonic()
        self.frames_received += 1
        if self._sample_count >= self.max_samples:
            self.frames_dropped += 1
            return
        for resampled in self._resampler.resample(frame):
            samples = np.asarray(resampled.to_ndarray(), dtype=np.int16).reshape(-1)
            self._arrivals.append((arrived_at, self._sample_count))
            self._chunks.append(samples)
            self._sample_count += len(samples)
        self._progress.set()


class ClientPeer:
    """An aiortc peer connection with one outgoing FileAudioTrack.

    When the remote audio track arrives, an AudioRecorder starts recording it.
    Use make_offer and accept_answer to call a server, or make_answer to
    answer another ClientPeer directly.
    """

    def __init__(
        self,
        samples: Samples | None = None,
        *,
        leading_silence_s: float = 0.0,
        loop: bool = False,
    ) -> None:
        self.track = FileAudioTrack(
            samples, leading_silence_s=leading_silence_s, loop=loop
        )
        self.recorder: AudioRecorder | None = None
        # An empty list, because with iceServers=None aiortc 1.16 gathers a
        # candidate from stun.l.google.com:19302.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._recorder_started = asyncio.Event()
        self._connection_changed = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._connection_changed.set)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            logger.warning("ignoring remote %s track %s", track.kind, track.id)
            return
        if self.recorder is not None:
            logger.warning("ignoring second remote audio track %s", track.id)
            return
        self.recorder = AudioRecorder(track)
        self._recorder_started.set()

    async def make_offer(self) -> str:
        """Add the audio track and return an offer with its ICE candidates."""
        self.pc.addTrack(self.track)
        offer = await self.pc.createOffer()
        # aiortc gathers every ICE candidate before setLocalDescription returns.
        await self.pc.setLocalDescription(offer)
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=sdp, type="answer")
        )

    async def make_answer(self, offer_sdp: str) -> str:
        """Accept an offer, add the audio track and return the answer."""
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=offer_sdp, type="offer")
        )
        self.pc.addTrack(self.track)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return self.pc.localDescription.sdp

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait for connection state "connected"; raise if it becomes "failed"."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pc.connectionState != "connected":
                    if self.pc.connectionState in ("failed", "closed"):
                        raise ConnectionError(
                            f"peer connection is {self.pc.connectionState!r}, "
                            "expected 'connected'"
                        )
                    self._connection_changed.clear()
                    await self._connection_changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout_s} s waiting for the peer connection "
                f"to connect: connection state {self.pc.connectionState!r}, "
                f"ICE connection state {self.pc.iceConnectionState!r}"
            ) from None

    async def wait_recorder(self, timeout_s: float) -> AudioRecorder:
        """Wait for the remote audio track and return its recorder."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._recorder_started.wait()
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout_s} s waiting for a remote audio track"
            ) from None
        assert self.recorder is not None
        return self.recorder

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.stop()
        self.track.stop()
        await self.pc.close()


class SignalingClient:
    """A WebSocket client for the call server's JSON signaling protocol.

    Every message received is appended to messages. receive and expect return
    messages in arrival order, but expect skips (and keeps for later) messages
    of other types, so a test need not know in which order the server sends
    messages that do not depend on each other.
    """

    def __init__(
        self, session: aiohttp.ClientSession, websocket: aiohttp.ClientWebSocketResponse
    ) -> None:
        self._session = session
        self._websocket = websocket
        self.messages: list[dict[str, Any]] = []
        # Received but not yet returned by receive or expect, oldest first.
        self._unread: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        url_or_port: str | int,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
    ) -> SignalingClient:
        """Open a WebSocket to a URL, or to ws://127.0.0.1:PORT/ws for a port."""
        if isinstance(url_or_port, int):
            url = f"ws://127.0.0.1:{url_or_port}/ws"
        else:
            url = url_or_port
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout_s):
                websocket = await session.ws_connect(url, headers=headers)
        except BaseException:
            await session.close()
            raise
        return cls(session, websocket)

    @property
    def closed(self) -> bool:
        return self._websocket.closed

    @property
    def close_code(self) -> int | None:
        return self._websocket.close_code

    async def send(self, message: dict[str, Any]) -> None:
        await self._websocket.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        """Send text as it is, for tests of invalid messages."""
        await self._websocket.send_str(text)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        """Return every message received so far with that type, read or not."""
        return [message for message in self.messages if message.get("type") == type_]

    async def receive(self, timeout_s: float) -> dict[str, Any]:
        """Return the oldest message that receive or expect has not returned yet."""
        if self._unread:
            return self._unread.pop(0)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._receive_new()
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout_s} s waiting for a message. "
                f"{self._describe_seen()}"
            ) from None

    async def expect(self, type_: str, timeout_s: float) -> dict[str, Any]:
        """Return the oldest unread message of type type_, waiting for it.

        Unread messages of other types stay unread for later calls.
        """
        for index, message in enumerate(self._unread):
            if message.get("type") == type_:
                return self._unread.pop(index)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._receive_new()
                    if message.get("type") == type_:
                        return message
                    self._unread.append(message)
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout_s} s waiting for a {type_!r} message. "
                f"{self._describe_seen()}"
            ) from None

    async def _receive_new(self) -> dict[str, Any]:
        received = await self._websocket.receive()
        if received.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            raise ConnectionError(
                f"WebSocket closed with code {self._websocket.close_code}. "
                f"{self._describe_seen()}"
            )
        if received.type is not aiohttp.WSMsgType.TEXT:
            raise ValueError(
                f"expected a text frame, received {received.type.name} "
                f"{received.data!r}. {self._describe_seen()}"
            )
        message = json.loads(received.data)
        if not isinstance(message, dict):
            raise ValueError(f"expected a JSON object, received {received.data!r}")
        self.messages.append(message)
        return message

    def _describe_seen(self) -> str:
        if not self.messages:
            return "No messages received so far."
        recent = self.messages[-MAX_MESSAGES_IN_ERROR:]
        seen = ", ".join(json.dumps(_summarize(m)) for m in recent)
        left_out = len(self.messages) - len(recent)
        if left_out:
            return f"Last {len(recent)} of {len(self.messages)} messages: {seen}"
        return f"Messages received so far: {seen}"

    async def close(self) -> None:
        try:
            await self._websocket.close()
        finally:
            await self._session.close()


def _summarize(message: dict[str, Any]) -> dict[str, Any]:
    # SDP text is long and rarely explains a signaling failure, so leave it out.
    return {
        key: "<sdp>" if key == "sdp" and isinstance(value, str) else value
        for key, value in message.items()
    }


async def join_and_connect(
    signaling: SignalingClient,
    peer: ClientPeer,
    language: str,
    *,
    name: str | None = None,
    room: str | None = None,
    hear_original: bool | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Join a call, exchange offer and answer, wait until connected.

    Returns the "joined" message. The "waiting" and "paired" messages stay
    unread in signaling for the test to expect.

    The peer keeps its own empty ICE server list and ignores the ice_servers
    of "joined", so that tests never contact a STUN or TURN server.
    """
    join: dict[str, Any] = {"type": "join", "language": language}
    if name is not None:
        join["name"] = name
    if room is not None:
        join["room"] = room
    if hear_original is not None:
        join["hear_original"] = hear_original
    await signaling.send(join)
    joined = await signaling.expect("joined", timeout_s)

    await signaling.send({"type": "offer", "sdp": await peer.make_offer()})
    answer = await signaling.expect("answer", timeout_s)
    await peer.accept_answer(answer["sdp"])
    await peer.wait_connected(timeout_s)
    return joined
