"""Thousands of malformed messages against a running server, beside a real call.

The generator is seeded, so a failure can be replayed. Fuzz clients join rooms
of their own, so they can never be paired with the call under watch.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from tests.conftest import ServerFactory
from tests.fake_openai import FakeOpenAI
from tests.support.netns import assert_loopback_only
from tests.support.peer import ClientPeer, SignalingClient, join_and_connect
from tests.support.speech import speech_sample, window_rms

SEED = 20261204
MESSAGES = 3000
WARM_UP_MESSAGES = 500
SDP_MUTATIONS = 150
CLIENTS = 6
TIMEOUT = 10.0
# Coarse bound on growth of the test process (server included) over the run.
MAX_RSS_GROWTH_MB = 50

TYPES = ("join", "offer", "candidate", "resume", "settings", "leave", "ping")
VALUES: tuple[object, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    "en",
    "x" * 70,
    "\u0000\ud7ff\U0001f600",
    [],
    {},
    [None],
    {"candidate": 5},
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")


def malformed_messages(rng: random.Random, count: int) -> Iterator[str | bytes]:
    """Yield `count` frames, each invalid in one of several ways."""
    for _ in range(count):
        kind = rng.randrange(9)
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:
            text = json.dumps({"type": rng.choice(TYPES), "language": "en"})
            yield text[: rng.randrange(len(text))]
        elif kind == 2:
            depth = rng.choice((50, 1000, 20_000))
            yield "[" * depth + "]" * depth
        elif kind == 3:
            yield json.dumps(rng.choice(VALUES))
        elif kind == 4:
            fields = {
                rng.choice(("type", "language", "sdp", "token", "room", "name")): (
                    rng.choice(VALUES)
                )
                for _ in range(rng.randrange(1, 5))
            }
            yield json.dumps(fields)
        elif kind == 5:
            message: dict[str, object] = {"type": rng.choice(TYPES)}
            for field in ("language", "sdp", "token", "candidate", "hear_original"):
                if rng.random() < 0.5:
                    message[field] = rng.choice(VALUES)
            yield json.dumps(message)
        elif kind == 6:
            yield json.dumps({"type": "ping", "pad": "y" * rng.randrange(5000, 70_000)})
        elif kind == 7:
            yield json.dumps({"type": "x" * rng.randrange(1, 10_000)})
        else:
            yield json.dumps({"type": "ping"})


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    lines = sdp.splitlines()
    for _ in range(rng.randrange(1, 6)):
        index = rng.randrange(len(lines))
        action = rng.randrange(5)
        if action == 0:
            del lines[index]
        elif action == 1:
            lines.insert(index, lines[rng.randrange(len(lines))])
        elif action == 2:
            line = lines[index]
            cut = rng.randrange(len(line) + 1)
            lines[index] = line[:cut] + chr(rng.randrange(32, 127)) + line[cut + 1 :]
        elif action == 3:
            lines[index] = lines[index].replace(" ", "  ", 1)
        else:
            lines.insert(index, "m=video 9 UDP/TLS/RTP/SAVPF 96")
    return "\r\n".join(lines) + "\r\n"


async def fuzz_client(
    ws_url: str, local_ip: str, frames: list[str | bytes], room: str
) -> int:
    """Send `frames` from `local_ip`, reconnecting when the server closes."""
    replies = 0
    connector = aiohttp.TCPConnector(local_addr=(local_ip, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        position = 0
        while position < len(frames):
            async with session.ws_connect(ws_url) as ws:
                await ws.send_str(
                    json.dumps({"type": "join", "language": "en", "room": room})
                )
                while position < len(frames) and not ws.closed:
                    frame = frames[position]
                    position += 1
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                    received = await ws.receive(timeout=TIMEOUT)
                    if received.type != aiohttp.WSMsgType.TEXT:
                        break
                    replies += 1
    return replies


async def sdp_fuzz_client(ws_url: str, rng: random.Random, offer: str) -> list[str]:
    """Send mutated offers after a join; return the reply types."""
    replies: list[str] = []
    client = await SignalingClient.connect(ws_url)
    try:
        await client.send({"type": "join", "language": "de", "room": "fuzz-sdp"})
        await client.expect("joined", TIMEOUT)
        for _ in range(SDP_MUTATIONS):
            await client.send({"type": "offer", "sdp": mutate_sdp(rng, offer)})
            reply = await client.receive(TIMEOUT)
            while reply["type"] == "waiting":
                reply = await client.receive(TIMEOUT)
            replies.append(reply.get("code", reply["type"]))
    finally:
        await client.close()
    return replies


async def http_fuzz(base_url: str, rng: random.Random) -> list[int]:
    statuses = []
    paths = ["/api/status", "/api/health", "/api/sessions", "/metrics", "/ws", "/"]
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            path = rng.choice(paths) + rng.choice(("", "?x=%00", "/..", "%2e%2e/"))
            method = rng.choice(("GET", "POST", "PUT", "OPTIONS", "DELETE"))
            headers = {"Origin": rng.choice(("https://evil.example", "null", ""))}
            async with session.request(
                method, base_url + path, headers=headers, data=b"z" * rng.randrange(99)
            ) as response:
                statuses.append(response.status)
    return statuses


async def test_fuzz_beside_real_call(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    assert_loopback_only()
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        WS_CONNECTS_PER_MIN="100000",
        MESSAGES_PER_S="10000",
        MESSAGE_BURST="10000",
    )
    rng = random.Random(SEED)
    english, russian = speech_sample("en"), speech_sample("ru")
    speaker = ClientPeer(english.samples, loop=True)
    listener = ClientPeer(russian.samples, loop=True)
    speaker_signaling = await SignalingClient.connect(server.ws_url)
    listener_signaling = await SignalingClient.connect(server.ws_url)
    probe = ClientPeer()
    try:
        await join_and_connect(speaker_signaling, speaker, "en", timeout_s=TIMEOUT)
        await join_and_connect(listener_signaling, listener, "ru", timeout_s=TIMEOUT)
        recorder = await listener.wait_recorder(TIMEOUT)
        await recorder.wait_for_duration(2.0, timeout_s=TIMEOUT)

        async def run_batch(count: int, tag: str) -> int:
            frames = list(malformed_messages(rng, count))
            share = len(frames) // CLIENTS + 1
            results = await asyncio.gather(
                *(
                    fuzz_client(
                        server.ws_url,
                        f"127.0.0.{10 + index}",
                        frames[index * share : (index + 1) * share],
                        f"fuzz-{tag}-{index}",
                    )
                    for index in range(CLIENTS)
                )
            )
            return sum(results)

        await run_batch(WARM_UP_MESSAGES, "warm")
        warmed = rss_mb()
        before_s = recorder.duration_s
        replies = await run_batch(MESSAGES, "main")
        offer = await probe.make_offer()
        sdp_replies = await sdp_fuzz_client(server.ws_url, rng, offer)
        statuses = await http_fuzz(server.url, rng)
        grown = rss_mb() - warmed

        assert replies > MESSAGES // 2
        assert set(sdp_replies) <= {"answer", "bad_sdp"}
        assert "bad_sdp" in sdp_replies
        assert all(status < 500 for status in statuses), statuses
        assert grown < MAX_RSS_GROWTH_MB, f"RSS grew {grown:.1f} MB"

        # The real call kept flowing: speech arrived during the fuzz run.
        await recorder.wait_for_duration(recorder.duration_s + 1.0, timeout_s=TIMEOUT)
        heard = recorder.samples()[int(before_s * 48_000) :]
        assert window_rms(heard, 48_000).max() > 500
        assert listener_signaling.of_type("partner_left") == []
        assert not listener_signaling.closed
    finally:
        for peer in (speaker, listener, probe):
            await peer.close()
        await speaker_signaling.close()
        await listener_signaling.close()
