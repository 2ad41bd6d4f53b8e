"""Rate limits, caps, timeouts, CORS, the sessions API and metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

import aiohttp
import pytest

from server.logs import REPEATS_PER_WINDOW, JsonFormatter, RepeatFilter
from signaling.ratelimit import KeyedBuckets, client_ip
from tests.conftest import RunningServer, ServerFactory
from tests.fake_openai import FakeOpenAI
from tests.support.peer import SignalingClient

TIMEOUT = 5.0
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


async def open_ws(
    server: RunningServer,
    *,
    local_ip: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """Connect from `local_ip`, so tests can look like different people."""
    connector = aiohttp.TCPConnector(local_addr=(local_ip, 0))
    session = aiohttp.ClientSession(connector=connector)
    ws = await session.ws_connect(server.ws_url, headers=headers)
    return session, ws


async def first_reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    await ws.send_str('{"type": "ping"}')
    reply = await ws.receive_json(timeout=TIMEOUT)
    assert isinstance(reply, dict)
    return reply


async def test_connect_rate_limited_per_ip(start_server: ServerFactory) -> None:
    server = await start_server(WS_CONNECTS_PER_MIN="2")
    sessions = []
    try:
        for _ in range(2):
            session, ws = await open_ws(server, local_ip="127.0.0.5")
            sessions.append(session)
            assert (await first_reply(ws))["type"] == "pong"
        session, limited = await open_ws(server, local_ip="127.0.0.5")
        sessions.append(session)
        reply = await limited.receive_json(timeout=TIMEOUT)
        assert reply["code"] == "rate_limited"
        closing = await limited.receive(timeout=TIMEOUT)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert limited.close_code == 1008
        session, other = await open_ws(server, local_ip="127.0.0.6")
        sessions.append(session)
        assert (await first_reply(other))["type"] == "pong"
    finally:
        for session in sessions:
            await session.close()


async def test_message_flood_rate_limited_then_closed(
    start_server: ServerFactory,
) -> None:
    server = await start_server(MESSAGES_PER_S="1", MESSAGE_BURST="5")
    session, ws = await open_ws(server)
    try:
        for _ in range(30):
            await ws.send_str('{"type": "ping"}')
        replies = []
        while True:
            received = await ws.receive(timeout=TIMEOUT)
            if received.type != aiohttp.WSMsgType.TEXT:
                break
            replies.append(json.loads(received.data))
        assert [r["type"] for r in replies[:5]] == ["pong"] * 5
        assert {r.get("code") for r in replies[5:]} == {"rate_limited"}
        assert ws.close_code == 1008
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),
        ("127.0.0.1", "garbage", "127.0.0.1"),
        ("192.0.2.7", "203.0.113.9", "192.0.2.7"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_ip_trusts_only_listed_proxies(
    peer: str, header: str | None, expected: str
) -> None:
    trusted = (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8"))
    assert client_ip(peer, header, trusted) == expected


async def test_forwarded_for_counts_per_client(start_server: ServerFactory) -> None:
    server = await start_server(WS_CONNECTS_PER_MIN="1", TRUSTED_PROXIES="127.0.0.1")
    sessions = []
    try:
        codes = []
        for forwarded in ("203.0.113.1", "203.0.113.2", "203.0.113.1"):
            session, ws = await open_ws(server, headers={"X-Forwarded-For": forwarded})
            sessions.append(session)
            codes.append((await first_reply(ws)).get("code", "pong"))
        assert codes == ["pong", "pong", "rate_limited"]
    finally:
        for session in sessions:
            await session.close()


async def test_forwarded_for_ignored_from_untrusted_peer(
    start_server: ServerFactory,
) -> None:
    server = await start_server(WS_CONNECTS_PER_MIN="1")
    sessions = []
    try:
        codes = []
        for forwarded in ("203.0.113.1", "203.0.113.2"):
            session, ws = await open_ws(
                server, local_ip="127.0.0.7", headers={"X-Forwarded-For": forwarded}
            )
            sessions.append(session)
            codes.append((await first_reply(ws)).get("code", "pong"))
        assert codes == ["pong", "rate_limited"]
    finally:
        for session in sessions:
            await session.close()


def test_keyed_buckets_forget_oldest_keys() -> None:
    buckets = KeyedBuckets(rate=0.001, burst=1)
    for index in range(10_005):
        buckets.allow(f"10.0.{index // 256}.{index % 256}")
    assert len(buckets._buckets) == 10_000


async def test_idle_socket_without_join_closed(start_server: ServerFactory) -> None:
    server = await start_server(IDLE_TIMEOUT_S="1")
    idle = await SignalingClient.connect(server.ws_url)
    joined = await SignalingClient.connect(server.ws_url)
    try:
        await joined.send({"type": "join", "language": "en"})
        await joined.expect("waiting", TIMEOUT)
        with pytest.raises(ConnectionError):
            await idle.receive(TIMEOUT)
        assert idle.close_code == 1000
        await joined.send({"type": "ping"})
        assert (await joined.expect("pong", TIMEOUT))["type"] == "pong"
    finally:
        await idle.close()
        await joined.close()


async def test_participant_cap_is_server_busy(start_server: ServerFactory) -> None:
    server = await start_server(MAX_PARTICIPANTS="2")
    clients = [await SignalingClient.connect(server.ws_url) for _ in range(3)]
    try:
        for client in clients[:2]:
            await client.send({"type": "join", "language": "en"})
            await client.expect("joined", TIMEOUT)
        await clients[2].send({"type": "join", "language": "en"})
        error = await clients[2].expect("error", TIMEOUT)
        assert error["code"] == "server_busy"
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/api/health") as response,
        ):
            assert response.status == 200
    finally:
        for client in clients:
            await client.close()


async def test_call_cap_is_server_busy(start_server: ServerFactory) -> None:
    server = await start_server(MAX_CALLS="1")
    clients = [await SignalingClient.connect(server.ws_url) for _ in range(4)]
    try:
        for client in clients[:3]:
            await client.send({"type": "join", "language": "en"})
            await client.expect("joined", TIMEOUT)
        await clients[2].expect("waiting", TIMEOUT)
        await clients[3].send({"type": "join", "language": "en"})
        assert (await clients[3].expect("error", TIMEOUT))["code"] == "server_busy"
    finally:
        for client in clients:
            await client.close()


async def test_max_call_length_ends_call(start_server: ServerFactory) -> None:
    server = await start_server(MAX_CALL_S="1")
    first = await SignalingClient.connect(server.ws_url)
    second = await SignalingClient.connect(server.ws_url)
    try:
        await first.send({"type": "join", "language": "en"})
        await second.send({"type": "join", "language": "fr"})
        for client in (first, second):
            left = await client.expect("partner_left", TIMEOUT)
            assert left["reason"] == "max_duration"
    finally:
        await first.close()
        await second.close()


async def test_daily_budget_ends_translated_call(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        DAILY_BUDGET_MIN="0.02",
    )
    first = await SignalingClient.connect(server.ws_url)
    second = await SignalingClient.connect(server.ws_url)
    again = await SignalingClient.connect(server.ws_url)
    try:
        await first.send({"type": "join", "language": "en"})
        await second.send({"type": "join", "language": "fr"})
        left = await first.expect("partner_left", TIMEOUT)
        assert left["reason"] == "budget_exhausted"
        await again.send({"type": "join", "language": "en"})
        assert (await again.expect("error", TIMEOUT))["code"] == "rate_limited"
    finally:
        for client in (first, second, again):
            await client.close()


async def test_cors_headers_on_api(start_server: ServerFactory) -> None:
    server = await start_server(CORS_ORIGINS="https://friend.example")
    async with aiohttp.ClientSession() as session:
        friendly = {"Origin": "https://friend.example"}
        async with session.get(server.url + "/api/status", headers=friendly) as r:
            allowed = r.headers.get("Access-Control-Allow-Origin")
        assert allowed == "https://friend.example"
        hostile = {"Origin": "https://evil.example"}
        async with session.get(server.url + "/api/status", headers=hostile) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with session.options(server.url + "/api/status", headers=friendly) as r:
            assert r.status == 204
            assert "GET" in r.headers["Access-Control-Allow-Methods"]


async def test_sessions_api_needs_token(start_server: ServerFactory) -> None:
    closed = await start_server()
    server = await start_server(ADMIN_TOKEN=ADMIN_TOKEN)
    clients = [await SignalingClient.connect(server.ws_url) for _ in range(3)]
    try:
        for language, client in zip(("en", "ru", "ja"), clients, strict=True):
            await client.send({"type": "join", "language": language})
            await client.expect("joined", TIMEOUT)
        async with aiohttp.ClientSession() as session:
            async with session.get(closed.url + "/api/sessions") as response:
                assert response.status == 404
            async with session.get(server.url + "/api/sessions") as response:
                assert response.status == 401
            wrong = {"Authorization": "Bearer nope"}
            async with session.get(server.url + "/api/sessions", headers=wrong) as r:
                assert r.status == 401
            good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with session.get(server.url + "/api/sessions", headers=good) as r:
                assert r.status == 200
                body = await r.text()
        listing = json.loads(body)
        assert len(listing["calls"]) == 1
        assert listing["waiting"][0]["language"] == "ja"
        call = listing["calls"][0]
        assert {p["language"] for p in call["participants"]} == {"en", "ru"}
        for client in clients:
            token = client.of_type("joined")[0]["resume_token"]
            assert token not in body
    finally:
        for client in clients:
            await client.close()


async def test_metrics_count_calls(start_server: ServerFactory) -> None:
    server = await start_server()

    async def metric(name: str) -> float:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/metrics") as response,
        ):
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    started = await metric("callbridge_calls_started_total")
    ended = await metric('callbridge_calls_ended_total{reason="left"}')
    first = await SignalingClient.connect(server.ws_url)
    second = await SignalingClient.connect(server.ws_url)
    try:
        await first.send({"type": "join", "language": "en"})
        await second.send({"type": "join", "language": "fr"})
        await second.expect("paired", TIMEOUT)
        assert await metric("callbridge_calls_started_total") == started + 1
        await first.send({"type": "leave"})
        await second.expect("partner_left", TIMEOUT)
        after = await metric('callbridge_calls_ended_total{reason="left"}')
        assert after == ended + 1
    finally:
        await first.close()
        await second.close()


async def test_slow_request_connection_closed(start_server: ServerFactory) -> None:
    server = await start_server(REQUEST_TIMEOUT_S="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            for _ in range(40):
                await asyncio.sleep(0.2)
                if reader.at_eof():
                    break
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
            data = await reader.read()
        assert data == b""
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


def test_repeat_filter_limits_same_error() -> None:
    repeat_filter = RepeatFilter()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("a",), None)
    passed = [repeat_filter.filter(record) for _ in range(REPEATS_PER_WINDOW + 3)]
    assert passed.count(True) == REPEATS_PER_WINDOW
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "fine", (), None)
    assert all(repeat_filter.filter(info) for _ in range(20))


def test_json_log_line() -> None:
    record = logging.LogRecord("srv", logging.INFO, __file__, 1, "hi %s", ("x",), None)
    record.context = "call=c participant=p"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hi x"
    assert entry["context"] == "call=c participant=p"
    assert entry["level"] == "INFO"
