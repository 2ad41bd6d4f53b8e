"""Prometheus metrics of the process, in prometheus-client's default registry.

Module-level, as prometheus-client intends: every layer counts into the same
registry and `/metrics` renders it. Tests read differences, never absolutes,
because several servers may run in one test process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "callbridge"

# NOTE: an assumed price per minute of translated speech, for the cost
# estimate only; check the provider's current price list before relying on it.
ESTIMATED_USD_PER_REALTIME_MIN = 0.06

turn_gathering = Counter(
    f"{PREFIX}_turn_gathering_total",
    "Server answers gathered with a TURN server configured, by whether the "
    "answer got a relay candidate (outcome relay or missing)",
    ["outcome"],
)
connections = Gauge(f"{PREFIX}_connections", "Open signaling WebSockets")
waiting = Gauge(f"{PREFIX}_waiting_participants", "Participants waiting for a partner")
active_calls = Gauge(f"{PREFIX}_active_calls", "Calls in progress")
calls_started = Counter(f"{PREFIX}_calls_started_total", "Calls started")
calls_ended = Counter(
    f"{PREFIX}_calls_ended_total", "Calls ended, by reason", ["reason"]
)
upstream_sessions = Counter(
    f"{PREFIX}_upstream_sessions_total",
    "Upstream translation sessions ended, by engine and outcome",
    ["engine", "outcome"],
)
upstream_requests = Counter(
    f"{PREFIX}_upstream_requests_total",
    "Upstream API requests, by engine, endpoint and outcome",
    ["engine", "endpoint", "outcome"],
)
upstream_errors = Counter(
    f"{PREFIX}_upstream_error_events_total",
    "Error events received from upstream sessions, by engine and code",
    ["engine", "code"],
)
translated_audio = Counter(
    f"{PREFIX}_translated_audio_seconds_total",
    "Seconds of translated speech received from upstream",
    ["engine"],
)
estimated_cost = Counter(
    f"{PREFIX}_estimated_cost_usd_total",
    "Estimated upstream cost in US dollars (list prices; an estimate)",
    ["engine"],
)
frames_sent = Counter(f"{PREFIX}_audio_frames_sent_total", "20 ms frames sent")
frames_late = Counter(
    f"{PREFIX}_audio_frames_late_total",
    "Outbound frames sent more than 200 ms after their time",
)
translated_gaps = Counter(
    f"{PREFIX}_translated_gap_frames_total",
    "Outbound frames that translated speech left short or empty because it "
    "came late (pauses of the stream excluded)",
)
input_dropped = Counter(
    f"{PREFIX}_input_chunks_dropped_total",
    "Speaker audio chunks dropped because no upstream session could take them",
)
signaling_dropped = Counter(
    f"{PREFIX}_signaling_messages_dropped_total",
    "Messages dropped because a client's outbox was full",
)
rate_limited = Counter(
    f"{PREFIX}_rate_limited_total", "Requests rejected by a rate limit", ["kind"]
)
latency = Histogram(
    f"{PREFIX}_translation_latency_seconds",
    "From the end of an utterance to its first translated audio (pipeline engine)",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
