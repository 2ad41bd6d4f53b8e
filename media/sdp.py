"""Checks on client SDP before aiortc parses it."""

from __future__ import annotations

MAX_SDP_BYTES = 32 * 1024
MAX_SDP_LINES = 500


class BadSdp(ValueError):
    """An offer or candidate the server cannot use; the message states why."""


def check_offer(sdp: str) -> None:
    """Raise BadSdp unless `sdp` is a plausible offer with one audio section."""
    if len(sdp.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadSdp(f"The SDP is larger than {MAX_SDP_BYTES} bytes.")
    lines = sdp.splitlines()
    if len(lines) > MAX_SDP_LINES:
        raise BadSdp(f"The SDP has more than {MAX_SDP_LINES} lines.")
    if not lines or lines[0].strip() != "v=0":
        raise BadSdp("The SDP must start with v=0.")
    media = [line for line in lines if line.startswith("m=")]
    if len(media) != 1:
        raise BadSdp(f"The SDP must have exactly one media section, not {len(media)}.")
    if not media[0].startswith("m=audio "):
        raise BadSdp("The SDP's media section must be audio.")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise BadSdp("The SDP has no DTLS fingerprint.")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise BadSdp("The SDP has no ICE credentials.")
