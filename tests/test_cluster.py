"""Several nodes sharing a real redis-server: pairing, resume, lost nodes and
a Redis outage."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from signaling.cluster import NODE_TTL_S
from tests.conftest import RunningServer, ServerFactory
from tests.support.netns import assert_loopback_only
from tests.support.peer import ClientPeer, SignalingClient, join_and_connect
from tests.support.services import RedisServer, free_port
from tests.support.speech import (
    MATCHED_SHARE,
    SAMPLE_RATE,
    heard_share,
    speech_sample,
)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0

StartNode = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def start_node(start_server: ServerFactory, redis_server: RedisServer) -> StartNode:
    async def start(name: str, **env: str) -> RunningServer:
        port = free_port()
        return await start_server(
            PORT=str(port),
            REDIS_URL=redis_server.url,
            PUBLIC_URL=f"http://127.0.0.1:{port}",
            NODE_ID=name,
            RESUME_GRACE_S="10",
            **env,
        )

    return start


async def connect(url: str, opened: list[SignalingClient]) -> SignalingClient:
    client = await SignalingClient.connect(url)
    opened.append(client)
    return client


async def test_pairing_across_nodes_meets_on_waiting_node(
    start_node: StartNode, clients: list[SignalingClient]
) -> None:
    assert_loopback_only()
    node1 = await start_node("node1")
    node2 = await start_node("node2")
    english, russian = speech_sample("en"), speech_sample("ru")
    first_peer = ClientPeer(english.samples, leading_silence_s=1.0)
    second_peer = ClientPeer(russian.samples, leading_silence_s=1.0)
    try:
        first = await connect(node1.ws_url, clients)
        await join_and_connect(first, first_peer, "en", timeout_s=TIMEOUT)
        await first.expect("waiting", TIMEOUT)

        second = await connect(node2.ws_url, clients)
        await second.send({"type": "join", "language": "ru"})
        await second.expect("joined", TIMEOUT)
        redirect = await second.expect("redirect", TIMEOUT)
        assert redirect["url"] == node1.ws_url
        assert node2.hub.participants == {}

        moved = await connect(redirect["url"], clients)
        await moved.send({"type": "resume", "token": redirect["token"]})
        resumed = await moved.receive(TIMEOUT)
        assert resumed["type"] == "resumed"
        call_id = resumed["call_id"]
        assert isinstance(call_id, str)
        paired = await moved.receive(TIMEOUT)
        assert paired["type"] == "paired"
        assert paired["call_id"] == call_id
        assert paired["partner"]["language"] == "en"
        assert (await first.expect("paired", TIMEOUT))["call_id"] == call_id

        await moved.send({"type": "offer", "sdp": await second_peer.make_offer()})
        await second_peer.accept_answer((await moved.expect("answer", TIMEOUT))["sdp"])
        await second_peer.wait_connected(TIMEOUT)
        recorder = await first_peer.wait_recorder(TIMEOUT)
        await recorder.wait_for_duration(
            recorder.duration_s + russian.duration_s + 2.0, timeout_s=TIMEOUT * 2
        )
        _, share = heard_share(russian.samples, recorder.samples(), SAMPLE_RATE)
        assert share >= MATCHED_SHARE

        # The token was single-use.
        again = await connect(node1.ws_url, clients)
        await again.send({"type": "resume", "token": redirect["token"]})
        assert (await again.expect("error", TIMEOUT))["code"] == "resume_failed"
    finally:
        await first_peer.close()
        await second_peer.close()


async def test_resume_on_other_node_is_redirected(
    start_node: StartNode, clients: list[SignalingClient]
) -> None:
    node1 = await start_node("node1")
    node2 = await start_node("node2")
    first = await connect(node1.ws_url, clients)
    second = await connect(node1.ws_url, clients)
    await first.send({"type": "join", "language": "en"})
    token = (await first.expect("joined", TIMEOUT))["resume_token"]
    await second.send({"type": "join", "language": "ja"})
    await second.expect("paired", TIMEOUT)
    await first.close()
    await second.expect("partner_reconnecting", TIMEOUT)

    elsewhere = await connect(node2.ws_url, clients)
    await elsewhere.send({"type": "resume", "token": token})
    redirect = await elsewhere.expect("redirect", TIMEOUT)
    assert redirect == {"type": "redirect", "url": node1.ws_url, "token": token}

    home = await connect(redirect["url"], clients)
    await home.send({"type": "resume", "token": token})
    resumed = await home.expect("resumed", TIMEOUT)
    assert resumed["call_id"] == second.of_type("paired")[0]["call_id"]
    await second.expect("partner_returned", TIMEOUT)


async def test_killed_node_waiting_participant_removed(
    start_node: StartNode, redis_server: RedisServer, clients: list[SignalingClient]
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        cwd=ROOT / "tests",
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "REDIS_URL": redis_server.url,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "NODE_ID": "doomed",
        },
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        doomed_client = None
        for _ in range(100):
            try:
                doomed_client = await connect(url, clients)
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        assert doomed_client is not None
        await doomed_client.send({"type": "join", "language": "en"})
        token = (await doomed_client.expect("joined", TIMEOUT))["resume_token"]
        await doomed_client.expect("waiting", TIMEOUT)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await asyncio.sleep(NODE_TTL_S + 1.5)

        survivor = await start_node("survivor")
        newcomer = await connect(survivor.ws_url, clients)
        await newcomer.send({"type": "join", "language": "fr"})
        await newcomer.expect("waiting", TIMEOUT)
        assert newcomer.of_type("redirect") == []

        back = await connect(survivor.ws_url, clients)
        await back.send({"type": "resume", "token": token})
        left = await back.expect("partner_left", TIMEOUT)
        assert left["reason"] == "node_lost"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_redis_outage_refuses_joins_keeps_calls(
    start_node: StartNode, redis_server: RedisServer, clients: list[SignalingClient]
) -> None:
    node = await start_node("node1")
    first = await connect(node.ws_url, clients)
    second = await connect(node.ws_url, clients)
    await first.send({"type": "join", "language": "en"})
    await second.send({"type": "join", "language": "de"})
    await first.expect("paired", TIMEOUT)

    await redis_server.stop()
    code = None
    for _ in range(50):
        late = await connect(node.ws_url, clients)
        await late.send({"type": "join", "language": "en"})
        reply = await late.receive(TIMEOUT)
        code = reply.get("code")
        if code == "server_busy":
            break
        await asyncio.sleep(0.2)
    assert code == "server_busy"
    async with (
        aiohttp.ClientSession() as session,
        session.get(node.url + "/api/health") as response,
    ):
        assert response.status == 200
    await first.send({"type": "ping"})
    await first.expect("pong", TIMEOUT)
    assert second.of_type("partner_left") == []

    await redis_server.start()
    joined = None
    for _ in range(50):
        retry = await connect(node.ws_url, clients)
        await retry.send({"type": "join", "language": "en"})
        reply = await retry.receive(TIMEOUT)
        if reply["type"] == "joined":
            joined = retry
            break
        await asyncio.sleep(0.2)
    assert joined is not None
    await joined.expect("waiting", TIMEOUT)
    async with (
        aiohttp.ClientSession() as session,
        session.get(node.url + "/api/status") as response,
    ):
        status = await response.json()
    assert status["dependencies"]["redis"]["state"] == "ok"
