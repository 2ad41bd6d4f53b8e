"""The listener's audio: a mixer of translated and original speech, and the
clock-paced track that sends it as 20 ms frames."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from media import metrics
from media.audio import (
    OUTPUT_RATE,
    SAMPLES_PER_FRAME,
    TIME_BASE,
    Pcm,
    mix,
    output_frame,
)

logger = logging.getLogger(__name__)

# Bit rate of the Opus packets sent to listeners: ample for mono speech.
OPUS_BITRATE = 32_000

# Translated speech arrives in bursts faster than real time, so its queue must
# hold a whole phrase; past this it drops the oldest audio.
TRANSLATED_CAPACITY_S = 20.0
# The realtime engine keeps sending all-zero audio between phrases, so its
# stream never pauses, and each late delta would delay the rest of the call by
# the gap it left. The gaps are counted (up to MAX_GAP_DEBT_S) and later taken
# back from all-zero frames, at most MAX_SILENT_FRAMES_SKIPPED extra frames per
# frame sent. Speech is never skipped; a pause inside a phrase is shortened
# only where it is digital silence. A stream that stays empty for
# STREAM_PAUSE_FRAMES has paused, and its debt is void.
MAX_GAP_DEBT_S = 1.0
MAX_SILENT_FRAMES_SKIPPED = 4
STREAM_PAUSE_FRAMES = 10
# A mixer with a maximum headroom (PLAYOUT_HEADROOM_MS, off by default) keeps
# part of the debt against the next late delta, as a jitter buffer adapts its
# delay. After a run of short frames that follows another within
# RECURRING_GAP_FRAMES, the headroom grows to the debt, up to that maximum.
# Each HEADROOM_DECAY_FRAMES without a gap it shrinks by one frame, and that
# frame is then taken back. It is off by default, because in the benchmark it
# added 40 to 50 ms at p95 and removed few gaps (BENCHMARKS.md).
HEADROOM_DECAY_FRAMES = 500
RECURRING_GAP_FRAMES = 500
# The original voice is live. Its queue absorbs bursts from the inbound
# jitter buffer up to ORIGINAL_CAPACITY_S, but a backlog above
# ORIGINAL_TARGET_S that lasts ORIGINAL_TRIM_AFTER_FRAMES pulls is cut back,
# so the voice does not stay behind after a burst.
ORIGINAL_CAPACITY_S = 0.3
ORIGINAL_TARGET_S = 0.06
ORIGINAL_TRIM_AFTER_FRAMES = 25
# Gains of the original voice under translated speech, as interpreters duck it:
# lower while the translation speaks, a little louder in its pauses.
DUCK_GAIN_SPEAKING = 0.2
DUCK_GAIN_PAUSE = 0.5
SPEAKING_RMS = 300.0
# A track more than this far behind its clock resynchronises instead of
# sending a burst of frames to catch up.
MAX_LATE_S = 0.2


class SampleQueue:
    """A bounded FIFO of mono int16 samples that drops the oldest when full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[Pcm] = deque()
        self._size = 0
        self.dropped_samples = 0

    def __len__(self) -> int:
        return self._size

    def push(self, pcm: Pcm) -> None:
        if pcm.size == 0:
            return
        if pcm.size > self.capacity:
            self.dropped_samples += pcm.size - self.capacity
            pcm = pcm[-self.capacity :]
        self._chunks.append(pcm)
        self._size += pcm.size
        overflow = self._size - self.capacity
        if overflow > 0:
            self.dropped_samples += overflow
            self._discard(overflow)

    def pull(self, count: int) -> tuple[Pcm, int]:
        """Take up to `count` samples, zero-padded; also return how many were real."""
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            chunk = self._chunks[0]
            take = min(count - filled, chunk.size)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == chunk.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        self._size -= filled
        return out, filled

    def trim_to(self, size: int) -> None:
        """Drop the oldest samples until at most `size` remain."""
        if self._size > size:
            excess = self._size - size
            self.dropped_samples += excess
            self._discard(excess)

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0

    def _discard(self, count: int) -> None:
        while count > 0 and self._chunks:
            chunk = self._chunks[0]
            if chunk.size <= count:
                self._chunks.popleft()
                count -= chunk.size
                self._size -= chunk.size
            else:
                self._chunks[0] = chunk[count:]
                self._size -= count
                count = 0


class ListenerMixer:
    """The audio one listener hears, fed by the partner's direction.

    Translated speech plays at full volume. The original voice plays at
    `original_gain`: 1.0 when there is no translation, ducked under the
    translation when the listener asked to hear it, and 0 otherwise.
    """

    def __init__(self, *, max_headroom_s: float = 0.0) -> None:
        self.translated = SampleQueue(int(TRANSLATED_CAPACITY_S * OUTPUT_RATE))
        self.max_headroom = int(max_headroom_s * OUTPUT_RATE)
        self.original = SampleQueue(int(ORIGINAL_CAPACITY_S * OUTPUT_RATE))
        self.original_mode = "full"  # "full", "ducked" or "off"
        self.frames_pulled = 0
        # Short frames, pauses of the stream included.
        self.translated_underruns = 0
        # Short frames in runs that the stream ended, so without its pauses.
        self.gap_frames = 0
        self.silent_frames_skipped = 0
        # Samples of gap debt that are kept, not taken back.
        self.headroom = 0
        self._gap_debt = 0
        # Short frames pulled in a row, the current run of gaps.
        self._gap_run_frames = 0
        # frames_pulled when the last run of gaps ended.
        self._last_gap_run_at: int | None = None
        self._pulls_without_gap = 0
        self._empty_pulls = 0
        self._original_backlog_frames = 0

    def push_translated(self, pcm: Pcm) -> None:
        self.translated.push(pcm)

    def push_original(self, pcm: Pcm) -> None:
        if self.original_mode == "off":
            return
        self.original.push(pcm)

    def set_original_mode(self, mode: str) -> None:
        if mode not in ("full", "ducked", "off"):
            raise ValueError(f"unknown original voice mode {mode!r}")
        self.original_mode = mode
        if mode == "off":
            self.original.clear()

    def reset(self) -> None:
        """Forget queued audio and gaps, for a new media connection."""
        self.translated.clear()
        self.original.clear()
        self.headroom = self._gap_debt = self._gap_run_frames = 0
        self._last_gap_run_at = None

    def pull_frame(self) -> Pcm:
        self.frames_pulled += 1
        translated = self._pull_translated()
        if self.original_mode == "off" or len(self.original) == 0:
            return translated
        original, _ = self.original.pull(SAMPLES_PER_FRAME)
        self._limit_original_backlog()
        if self.original_mode == "full":
            return mix(translated, original, 1.0)
        speaking = float(np.sqrt(np.mean(translated.astype(np.float32) ** 2)))
        gain = DUCK_GAIN_SPEAKING if speaking > SPEAKING_RMS else DUCK_GAIN_PAUSE
        return mix(translated, original, gain)

    def _pull_translated(self) -> Pcm:
        frame, real = self.translated.pull(SAMPLES_PER_FRAME)
        self._count_gap(real)
        skipped = 0
        while (
            skipped < MAX_SILENT_FRAMES_SKIPPED
            and self._gap_debt - self.headroom >= SAMPLES_PER_FRAME
            and len(self.translated) >= SAMPLES_PER_FRAME
            and not frame.any()
        ):
            frame, _ = self.translated.pull(SAMPLES_PER_FRAME)
            self._gap_debt -= SAMPLES_PER_FRAME
            self.silent_frames_skipped += 1
            skipped += 1
        return frame

    def _count_gap(self, real: int) -> None:
        if real == SAMPLES_PER_FRAME:
            self._empty_pulls = 0
            self._end_gap_run()
            self._decay_headroom()
            return
        self.translated_underruns += 1
        self._empty_pulls = self._empty_pulls + 1 if real == 0 else 0
        if self._empty_pulls >= STREAM_PAUSE_FRAMES:
            self._gap_debt = self._gap_run_frames = 0
            self._decay_headroom()
            return
        self._pulls_without_gap = 0
        self._gap_run_frames += 1
        self._gap_debt = min(
            self._gap_debt + SAMPLES_PER_FRAME - real,
            int(MAX_GAP_DEBT_S * OUTPUT_RATE),
        )

    def _end_gap_run(self) -> None:
        """Count a run of short frames that the stream ended and, when runs
        recur, grow the headroom to the debt in whole frames."""
        if self._gap_run_frames == 0:
            return
        self.gap_frames += self._gap_run_frames
        metrics.translated_gaps.inc(self._gap_run_frames)
        self._gap_run_frames = 0
        previous, self._last_gap_run_at = self._last_gap_run_at, self.frames_pulled
        if previous is None or self.frames_pulled - previous > RECURRING_GAP_FRAMES:
            # A lone gap, such as the second chunk of a phrase coming a little
            # late, is taken back, so that it adds no lasting delay.
            return
        frames = -(-self._gap_debt // SAMPLES_PER_FRAME)
        needed = frames * SAMPLES_PER_FRAME
        self.headroom = min(max(self.headroom, needed), self.max_headroom)

    def _decay_headroom(self) -> None:
        self._pulls_without_gap += 1
        if self._pulls_without_gap >= HEADROOM_DECAY_FRAMES and self.headroom > 0:
            self.headroom = max(0, self.headroom - SAMPLES_PER_FRAME)
            self._pulls_without_gap = 0

    def _limit_original_backlog(self) -> None:
        target = int(ORIGINAL_TARGET_S * OUTPUT_RATE)
        if len(self.original) <= target:
            self._original_backlog_frames = 0
            return
        self._original_backlog_frames += 1
        if self._original_backlog_frames >= ORIGINAL_TRIM_AFTER_FRAMES:
            self.original.trim_to(target)
            self._original_backlog_frames = 0


class OpusEncoder:
    """Encode 20 ms mono frames to Opus packets, one packet per frame.

    aiortc's own encoder turns each mono frame into stereo and encodes it at
    96 kbit/s on a worker thread, and first computes the frame's audio level
    in a pure-Python loop. Mono speech at OPUS_BITRATE needs about half of
    that CPU time (see BENCHMARKS.md), and a track that returns packets skips
    the rest. An Opus receiver plays mono packets in a stereo stream.
    """

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = OPUS_BITRATE
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = OUTPUT_RATE
        self._codec.time_base = TIME_BASE
        self._codec.options = {"application": "voip"}

    def encode(self, frame: av.AudioFrame) -> av.Packet[Any]:
        packets = self._codec.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(f"libopus returned {len(packets)} packets for a frame")
        packet = packets[0]
        # The RTP timestamp follows the frame, not the encoder's delay.
        packet.pts = frame.pts
        packet.time_base = TIME_BASE
        return packet


class OutboundAudioTrack(MediaStreamTrack):
    """Send a mixer's audio as 20 ms Opus packets paced by the clock.

    The clock, not the producer, decides when a frame goes out: a burst of
    translated audio waits in the mixer, and an empty mixer yields silence.
    """

    kind = "audio"

    def __init__(self, mixer: ListenerMixer) -> None:
        super().__init__()
        self._mixer = mixer
        self._encoder = OpusEncoder()
        self._start: float | None = None
        self._pts = 0
        self.late_resyncs = 0

    async def recv(self) -> av.Packet[Any]:
        """Return the next 20 ms as one Opus packet, at its time on the clock."""
        return self._encoder.encode(await self.next_frame())

    async def next_frame(self) -> av.AudioFrame:
        """Wait for the next 20 ms on the clock and return it as 48 kHz mono."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += SAMPLES_PER_FRAME
            delay = self._start + self._pts / OUTPUT_RATE - now
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -MAX_LATE_S:
                self.late_resyncs += 1
                metrics.frames_late.inc()
                self._start = now - self._pts / OUTPUT_RATE
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("outbound track %.0f ms late, resynced", -delay * 1000)
        metrics.frames_sent.inc()
        return output_frame(self._mixer.pull_frame(), self._pts)
