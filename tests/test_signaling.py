"""The signaling protocol at /ws: errors, limits, pairing and leaving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from media.audio import SAMPLES_PER_FRAME
from tests.conftest import RunningServer, ServerFactory
from tests.support.peer import SignalingClient

Connect = Callable[..., Awaitable[SignalingClient]]
TIMEOUT = 5.0


@pytest.fixture
async def server(start_server: ServerFactory) -> RunningServer:
    return await start_server(MAX_MESSAGE_BYTES="4096", RESUME_GRACE_S="1")


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    clients: list[SignalingClient] = []

    async def open_client(**kwargs: object) -> SignalingClient:
        client = await SignalingClient.connect(server.ws_url, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def expect_error(client: SignalingClient, code: str) -> dict[str, object]:
    message = await client.expect("error", TIMEOUT)
    assert message["code"] == code, message
    assert isinstance(message["message"], str)
    assert message["message"]
    return message


async def test_ping_pong(connect: Connect) -> None:
    client = await connect()
    await client.send({"type": "ping"})
    assert (await client.receive(TIMEOUT))["type"] == "pong"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ('{"type": "teleport"}', "bad_message"),
        ('{"type": "join", "language": 1}', "bad_message"),
        ('{"language": "en"}', "bad_message"),
        ('{"type": "offer", "sdp": "v=0"}', "not_joined"),
        ('{"type": "join", "language": "tlh"}', "unsupported_language"),
        ('{"type": "resume", "token": "made-up"}', "resume_failed"),
        ('{"type": "settings", "hear_original": true}', "not_joined"),
        ('{"type": "leave"}', "not_joined"),
        ('{"type": "candidate", "candidate": null}', "not_joined"),
    ],
)
async def test_error_code_and_connection_stays_usable(
    connect: Connect, text: str, code: str
) -> None:
    client = await connect()
    await client.send_raw(text)
    await expect_error(client, code)
    await client.send({"type": "ping"})
    assert (await client.expect("pong", TIMEOUT))["type"] == "pong"


async def test_binary_frame_is_bad_message(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url) as ws,
    ):
        await ws.send_bytes(b"\x00\x01")
        reply = await ws.receive_json(timeout=TIMEOUT)
        assert reply["code"] == "bad_message"
        await ws.send_str('{"type": "ping"}')
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "pong"


async def test_message_over_limit_is_too_large(connect: Connect) -> None:
    client = await connect()
    await client.send({"type": "join", "language": "en", "name": "x" * 5000})
    await expect_error(client, "too_large")
    await client.send({"type": "ping"})
    assert (await client.expect("pong", TIMEOUT))["type"] == "pong"


async def test_message_over_one_mebibyte_closes_1009(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url) as ws,
    ):
        await ws.send_str(json.dumps({"type": "ping", "pad": "x" * (1024 * 1024)}))
        closing = await ws.receive(timeout=TIMEOUT)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_twenty_errors_in_a_row_close_1008(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url) as ws,
    ):
        for _ in range(20):
            await ws.send_str("}")
        codes = []
        while True:
            received = await ws.receive(timeout=TIMEOUT)
            if received.type != aiohttp.WSMsgType.TEXT:
                break
            codes.append(json.loads(received.data)["code"])
        assert codes == ["bad_json"] * 20
        assert ws.close_code == 1008


async def test_good_message_resets_error_count(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url) as ws,
    ):
        for _ in range(19):
            await ws.send_str("}")
        await ws.send_str('{"type": "ping"}')
        for _ in range(19):
            await ws.send_str("}")
        await ws.send_str('{"type": "ping"}')
        types = [(await ws.receive_json(timeout=TIMEOUT))["type"] for _ in range(40)]
        assert types.count("pong") == 2
        assert not ws.closed


async def test_join_twice_is_already_joined(connect: Connect) -> None:
    client = await connect()
    await client.send({"type": "join", "language": "en"})
    joined = await client.expect("joined", TIMEOUT)
    assert joined["participant_id"]
    assert len(joined["resume_token"]) >= 22
    assert joined["ice_servers"] == []
    await client.send({"type": "join", "language": "en"})
    await expect_error(client, "already_joined")


@pytest.mark.parametrize(
    "sdp",
    [
        "not an sdp",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
        "a=fingerprint:sha-256 zz\r\na=setup:actpass\r\na=mid:0\r\n"
        "a=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n",
    ],
)
async def test_bad_offer_is_bad_sdp(connect: Connect, sdp: str) -> None:
    client = await connect()
    await client.send({"type": "join", "language": "en"})
    await client.expect("joined", TIMEOUT)
    await client.send({"type": "offer", "sdp": sdp})
    await expect_error(client, "bad_sdp")
    await client.send({"type": "ping"})
    assert (await client.expect("pong", TIMEOUT))["type"] == "pong"


async def test_pairing_first_come_first_served(
    connect: Connect, server: RunningServer
) -> None:
    first, second, third = await connect(), await connect(), await connect()
    await first.send({"type": "join", "language": "en", "name": "Ann"})
    await first.expect("waiting", TIMEOUT)
    await second.send({"type": "join", "language": "ru", "name": "Boris"})
    paired_second = await second.expect("paired", TIMEOUT)
    paired_first = await first.expect("paired", TIMEOUT)
    assert paired_first["call_id"] == paired_second["call_id"]
    assert paired_first["partner"]["language"] == "ru"
    assert paired_first["partner"]["name"] == "Boris"
    assert paired_second["partner"]["name"] == "Ann"
    await third.send({"type": "join", "language": "fr"})
    await third.expect("waiting", TIMEOUT)
    assert server.hub.waiting_count == 1
    assert len(server.hub.calls) == 1


async def test_no_key_call_reports_translation_unavailable(connect: Connect) -> None:
    first, second = await connect(), await connect()
    await first.send({"type": "join", "language": "en"})
    await second.send({"type": "join", "language": "de"})
    for client in (first, second):
        state = await client.expect("translation", TIMEOUT)
        assert state["state"] == "unavailable"
        assert "OPENAI_API_KEY" in state["reason"]


async def test_same_language_call_is_direct(connect: Connect) -> None:
    first, second = await connect(), await connect()
    await first.send({"type": "join", "language": "en"})
    await second.send({"type": "join", "language": "en-GB"})
    state = await second.expect("translation", TIMEOUT)
    assert state["state"] == "ready"
    assert state["engine"] == "direct"


async def test_disconnect_while_waiting_leaves_queue(
    connect: Connect, server: RunningServer
) -> None:
    first = await connect()
    await first.send({"type": "join", "language": "en"})
    await first.expect("waiting", TIMEOUT)
    await first.close()
    second = await connect()
    await second.send({"type": "join", "language": "ru"})
    await second.expect("waiting", TIMEOUT)
    assert server.hub.waiting_count == 1


async def test_disconnect_in_call_ends_it_for_partner(
    connect: Connect, server: RunningServer
) -> None:
    first, second = await connect(), await connect()
    await first.send({"type": "join", "language": "en"})
    await second.send({"type": "join", "language": "ru"})
    await first.expect("paired", TIMEOUT)
    await second.close()
    await first.expect("partner_reconnecting", TIMEOUT)
    left = await first.expect("partner_left", TIMEOUT)
    assert left["reason"] == "disconnected"
    assert not server.hub.calls
    await first.send({"type": "offer", "sdp": "v=0"})
    await expect_error(first, "not_joined")
    await first.send({"type": "join", "language": "en"})
    await first.expect("waiting", TIMEOUT)


async def test_leave_ends_call_and_allows_new_join(
    connect: Connect, server: RunningServer
) -> None:
    first, second = await connect(), await connect()
    await first.send({"type": "join", "language": "en"})
    await second.send({"type": "join", "language": "ru"})
    await second.expect("paired", TIMEOUT)
    await first.send({"type": "leave"})
    left = await second.expect("partner_left", TIMEOUT)
    assert left["reason"] == "left"
    assert not server.hub.participants
    await first.send({"type": "join", "language": "en"})
    await first.expect("waiting", TIMEOUT)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("SAME", True),
        ("https://evil.example", False),
        ("https://friend.example", True),
    ],
)
async def test_origin_check(
    start_server: ServerFactory, origin: str | None, allowed: bool
) -> None:
    server = await start_server(CORS_ORIGINS="https://friend.example")
    headers = {}
    if origin == "SAME":
        headers["Origin"] = server.url
    elif origin is not None:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(server.ws_url, headers=headers) as ws:
                await ws.send_str('{"type": "ping"}')
                opened = (await ws.receive_json(timeout=TIMEOUT))["type"] == "pong"
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403
            opened = False
    assert opened is allowed


async def test_health_and_status(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/api/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with session.get(server.url + "/api/status") as response:
            status = await response.json()
    assert status["engine"] == "off"
    codes = {language["code"] for language in status["languages"]}
    assert codes == {
        "es", "pt", "fr", "ja", "ru", "zh", "de", "ko", "hi", "id", "vi", "it", "en"
    }  # fmt: skip
    russian = next(lang for lang in status["languages"] if lang["code"] == "ru")
    assert russian["native_name"] == "Русский"
    for key in ("version", "uptime_s", "connections", "waiting", "calls"):
        assert key in status
    assert status["dependencies"]["upstream"]["state"] == "off"
    assert status["dependencies"]["turn"] == {"state": "off"}
    assert status["tls"] is False


async def test_playout_headroom_setting_reaches_mixer(
    start_server: ServerFactory, clients: list[SignalingClient]
) -> None:
    server = await start_server(PLAYOUT_HEADROOM_MS="40")
    client = await SignalingClient.connect(server.ws_url)
    clients.append(client)
    await client.send({"type": "join", "language": "en"})
    joined = await client.expect("joined", TIMEOUT)
    participant = server.hub.participants[joined["participant_id"]]
    assert participant.mixer.max_headroom == 2 * SAMPLES_PER_FRAME
