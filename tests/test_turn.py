"""Time-limited TURN credentials, checked against a real coturn server.

The server signs a username and password for each participant with
TURN_SECRET; coturn, started here on loopback with the same secret, must
accept them until they expire and refuse them after. Run through
tests/run-in-netns, like every test that opens WebRTC or TURN sockets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import stun
from aiortc import RTCPeerConnection
from prometheus_client.parser import text_string_to_metric_families

from media.peer import CLOSE_WAIT_S
from server.config import TURN_QUEUE_ALLOWANCE_S, Settings
from signaling.ice import IceServers, turn_credentials
from tests.conftest import RunningServer, ServerFactory
from tests.support.certs import write_certificate
from tests.support.netns import assert_loopback_only
from tests.support.peer import ClientPeer, SignalingClient, join_and_connect
from tests.support.services import TurnServer, free_port

TIMEOUT = 10.0
STUN_URL = "stun:127.0.0.1:3478"


async def start_with_turn(
    start_server: ServerFactory, turn_server: TurnServer, **env: str
) -> RunningServer:
    stun_url = f"stun:127.0.0.1:{turn_server.port}"
    return await start_server(
        ICE_SERVERS=f'[{{"urls": "{stun_url}"}}]',
        TURN_URLS=turn_server.url,
        TURN_SECRET=turn_server.secret,
        **env,
    )


async def join(
    server: RunningServer, clients: list[SignalingClient], language: str = "en"
) -> tuple[SignalingClient, dict[str, Any]]:
    client = await SignalingClient.connect(server.ws_url)
    clients.append(client)
    await client.send({"type": "join", "language": language})
    return client, await client.expect("joined", TIMEOUT)


async def connect_media(
    server: RunningServer, clients: list[SignalingClient]
) -> tuple[dict[str, Any], str]:
    """Join, connect an aiortc peer and close it; return `joined` and the answer."""
    signaling = await SignalingClient.connect(server.ws_url)
    clients.append(signaling)
    peer = ClientPeer()
    try:
        joined = await join_and_connect(signaling, peer, "en")
    finally:
        await peer.close()
    return joined, signaling.of_type("answer")[0]["sdp"]


async def get_status(server: RunningServer) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/api/status") as response,
    ):
        status: dict[str, Any] = await response.json()
        return status


async def relay_missing_count(server: RunningServer) -> float:
    """Read the counter of answers that got no relay candidate from /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/metrics") as response,
    ):
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "callbridge_turn_gathering_total" and sample.labels == {
                "outcome": "missing"
            }:
                return sample.value
    return 0.0


async def allocate(turn_server: TurnServer, entry: dict[str, Any]) -> None:
    """Ask coturn for a relay address with the credentials of `entry`."""
    await turn_server.allocate(entry["username"], entry["credential"])


def expiry_of(entry: dict[str, Any]) -> int:
    return int(entry["username"].split(":", 1)[0])


def test_credentials_match_coturn_scheme() -> None:
    # Expected password from the shell, independent of this code:
    # echo -n "1767225600:alice" | openssl dgst -sha1 -hmac turn-shared-secret \
    #   -binary | base64
    username, password = turn_credentials("turn-shared-secret", "alice", 1767225600)
    assert username == "1767225600:alice"
    assert password == "w2XZTBd9ZzVn1zdnGsqqJT/XpRo="


def test_ice_servers_without_turn_are_the_static_list() -> None:
    static = ({"urls": [STUN_URL]},)
    servers = IceServers(static=static)
    listed = servers.for_peer("p1")
    assert listed == [{"urls": [STUN_URL]}]
    listed[0]["urls"] = "changed"
    assert servers.for_peer("p1") == [{"urls": [STUN_URL]}]


def test_ice_servers_sign_for_each_peer() -> None:
    servers = IceServers(
        turn_urls=("turn:127.0.0.1:3478?transport=udp",),
        turn_secret="secret",
        turn_ttl_s=90,
        clock=lambda: 1000.0,
    )
    entry = servers.for_peer("p1")[0]
    assert entry["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    assert entry["username"] == "1090:p1"
    assert entry["credential"] == turn_credentials("secret", "p1", 1090)[1]
    assert servers.for_peer("p2")[0]["credential"] != entry["credential"]


def test_default_lifetime_covers_longest_call_and_grace() -> None:
    settings = Settings.from_env(
        {
            "TURN_URLS": "turn:127.0.0.1:3478",
            "TURN_SECRET": "0123456789abcdef",
            "MAX_CALL_S": "5400",
            "RESUME_GRACE_S": "45",
        }
    )
    assert settings.turn_credential_ttl_s == TURN_QUEUE_ALLOWANCE_S + 5400 + 45
    assert settings.turn_credential_ttl_s >= settings.max_call_s + 45
    explicit = Settings.from_env(
        {
            "TURN_URLS": "turn:127.0.0.1:3478",
            "TURN_SECRET": "0123456789abcdef",
            "TURN_TTL_S": "120",
        }
    )
    assert explicit.turn_credential_ttl_s == 120


async def test_joined_and_resumed_carry_fresh_credentials(
    turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
) -> None:
    assert_loopback_only()
    server = await start_with_turn(start_server, turn_server, TURN_TTL_S="600")
    started = time.time()
    first, joined = await join(server, clients)
    turn_entry, stun_entry = joined["ice_servers"]
    assert stun_entry == {"urls": f"stun:127.0.0.1:{turn_server.port}"}
    assert turn_entry["urls"] == [turn_server.url]
    assert turn_entry["username"].endswith(":" + joined["participant_id"])
    assert started + 600 - 1 <= expiry_of(turn_entry) <= time.time() + 600
    await allocate(turn_server, turn_entry)

    await first.close()
    # Usernames carry whole seconds, so a later resume gets a later expiry.
    await asyncio.sleep(1.1)
    again = await SignalingClient.connect(server.ws_url)
    clients.append(again)
    await again.send({"type": "resume", "token": joined["resume_token"]})
    resumed = await again.expect("resumed", TIMEOUT)
    fresh = resumed["ice_servers"][0]
    assert fresh["username"].endswith(":" + joined["participant_id"])
    assert expiry_of(fresh) > expiry_of(turn_entry)
    assert fresh["credential"] != turn_entry["credential"]
    await allocate(turn_server, fresh)


async def test_credentials_expire_as_configured(
    turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
) -> None:
    assert_loopback_only()
    server = await start_with_turn(start_server, turn_server, TURN_TTL_S="5")
    _, joined = await join(server, clients)
    entry = joined["ice_servers"][0]
    await allocate(turn_server, entry)

    await asyncio.sleep(max(0.0, expiry_of(entry) - time.time()) + 1.5)
    with pytest.raises(stun.TransactionFailed, match="401"):
        await allocate(turn_server, entry)
    assert f"user <{entry['username']}>" in turn_server.log()

    wrong = dict(entry, credential=turn_credentials("other", "x", 2**31)[1])
    wrong["username"] = f"{2**31}:x"
    with pytest.raises(stun.TransactionFailed, match="401"):
        await allocate(turn_server, wrong)


async def test_server_peer_uses_turn_relay(
    turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
) -> None:
    """The server's own aiortc peer allocates a relay with its own credentials."""
    assert_loopback_only()
    server = await start_with_turn(start_server, turn_server)
    joined, answer = await connect_media(server, clients)
    relay_lines = [line for line in answer.splitlines() if "typ relay" in line]
    assert relay_lines, answer
    assert all(" 127.0.0.1 " in line for line in relay_lines)
    server_user = f":server-{joined['participant_id']}>"
    assert server_user in turn_server.log()
    turn = (await get_status(server))["dependencies"]["turn"]
    assert turn["state"] == "configured"
    assert turn["urls"] == [turn_server.url]
    assert turn["last_gathering"] == "relay"


@pytest.fixture
async def tls_turn_server(tmp_path: Path) -> AsyncIterator[TurnServer]:
    """A coturn server that also accepts TLS, with a certificate for 127.0.0.1."""
    certificate = write_certificate(
        tmp_path, common_name="127.0.0.1", prefix="turn", ip_address="127.0.0.1"
    )
    server = TurnServer(tmp_path, certificate=certificate)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("scheme", ["turn-tcp", "turns"])
async def test_server_peer_relays_over_tcp(
    scheme: str,
    tls_turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's peer reaches the TURN server over TCP and over TLS."""
    assert_loopback_only()
    # aioice checks the certificate of a turns: server against the default
    # CA store, which OpenSSL reads from SSL_CERT_FILE when it is set.
    assert tls_turn_server.certificate is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_turn_server.certificate[0]))
    url = tls_turn_server.tcp_url if scheme == "turn-tcp" else tls_turn_server.tls_url
    server = await start_server(TURN_URLS=url, TURN_SECRET=tls_turn_server.secret)

    joined, answer = await connect_media(server, clients)

    relay_lines = [line for line in answer.splitlines() if "typ relay" in line]
    assert relay_lines, answer
    log = tls_turn_server.log()
    # coturn logs "tcp or tls connected" for a stream client, and a cipher in
    # the session line only for TLS.
    assert "tcp or tls connected" in log
    server_user = f":server-{joined['participant_id']}>"
    sessions = [
        line for line in log.splitlines() if server_user in line and ": new," in line
    ]
    assert sessions, log
    assert all(("cipher=" in line) == (scheme == "turns") for line in sessions)
    turn = (await get_status(server))["dependencies"]["turn"]
    assert turn["last_gathering"] == "relay"


async def test_untrusted_turns_certificate_gets_no_relay(
    tls_turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
) -> None:
    """A turns: server whose certificate is not trusted is not used."""
    assert_loopback_only()
    server = await start_server(
        TURN_URLS=tls_turn_server.tls_url, TURN_SECRET=tls_turn_server.secret
    )

    joined, answer = await connect_media(server, clients)

    assert "typ relay" not in answer
    assert f":server-{joined['participant_id']}>" not in tls_turn_server.log()
    turn = (await get_status(server))["dependencies"]["turn"]
    assert turn["last_gathering"] == "missing"


async def test_close_does_not_wait_for_lost_turn_server(
    turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
    server_log: list[logging.LogRecord],
) -> None:
    """A TURN server that stopped responding does not hold up a closing call."""
    assert_loopback_only()
    server = await start_with_turn(start_server, turn_server)
    joined, _ = await connect_media(server, clients)
    await turn_server.stop()
    leg = server.hub.participants[joined["participant_id"]].leg
    assert leg is not None
    # Freeing the relay alone would retry for about 30 s.
    async with asyncio.timeout(CLOSE_WAIT_S + 3):
        await leg.close()
    assert any("still closing" in record.getMessage() for record in server_log)


async def test_static_turn_password_is_warned_about(
    start_server: ServerFactory, server_log: list[logging.LogRecord]
) -> None:
    entry = '{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "p"}'
    await start_server(ICE_SERVERS=f"[{entry}]")
    warnings = [r.getMessage() for r in server_log if r.levelno == logging.WARNING]
    assert any("ICE_SERVERS contains a TURN password" in m for m in warnings)


async def test_unreachable_turn_server_is_logged(
    start_server: ServerFactory,
    clients: list[SignalingClient],
    server_log: list[logging.LogRecord],
) -> None:
    """Media still connects directly, and the log explains the slow answers."""
    assert_loopback_only()
    server = await start_server(
        TURN_URLS=f"turn:127.0.0.1:{free_port()}?transport=udp",
        TURN_SECRET=TurnServer.secret,
    )
    before = await relay_missing_count(server)
    _, answer = await connect_media(server, clients)
    assert " typ relay" not in answer
    assert await relay_missing_count(server) == before + 1
    turn = (await get_status(server))["dependencies"]["turn"]
    assert turn["last_gathering"] == "missing"
    warnings = [r.getMessage() for r in server_log if r.levelno == logging.WARNING]
    assert any(m.startswith("gathering ICE candidates took") for m in warnings)
    assert any(m.startswith("no TURN relay candidate") for m in warnings)


def open_server_peers() -> int:
    """Count the server's aiortc connections that are not closed."""
    return sum(
        1
        for thing in gc.get_objects()
        if isinstance(thing, RTCPeerConnection) and thing.connectionState != "closed"
    )


async def start_with_slow_answers(start_server: ServerFactory) -> RunningServer:
    """A server whose answers take about 5 s: its TURN server never responds."""
    return await start_server(
        TURN_URLS=f"turn:127.0.0.1:{free_port()}?transport=udp",
        TURN_SECRET=TurnServer.secret,
    )


async def test_offer_of_departed_participant_is_dropped(
    start_server: ServerFactory,
    clients: list[SignalingClient],
    server_log: list[logging.LogRecord],
) -> None:
    """Leaving on another socket while an offer is answered leaves no media."""
    assert_loopback_only()
    server = await start_with_slow_answers(start_server)
    first, joined = await join(server, clients)
    peer = ClientPeer()
    try:
        await first.send({"type": "offer", "sdp": await peer.make_offer()})
        second = await SignalingClient.connect(server.ws_url)
        clients.append(second)
        await second.send({"type": "resume", "token": joined["resume_token"]})
        await second.expect("resumed", TIMEOUT)
        await second.send({"type": "leave"})
        # The answer takes about 5 s; poll for up to TIMEOUT.
        for _ in range(int(TIMEOUT * 10)):
            if any("dropped" in record.getMessage() for record in server_log):
                break
            await asyncio.sleep(0.1)
    finally:
        await peer.close()
    assert any("dropped" in record.getMessage() for record in server_log)
    assert joined["participant_id"] not in server.hub.participants
    assert open_server_peers() == 0


async def test_offer_from_before_resume_gets_no_answer(
    start_server: ServerFactory, clients: list[SignalingClient]
) -> None:
    """Only the offer made on the resumed socket is answered there."""
    assert_loopback_only()
    server = await start_with_slow_answers(start_server)
    first, joined = await join(server, clients)
    old_peer, new_peer = ClientPeer(), ClientPeer()
    try:
        await first.send({"type": "offer", "sdp": await old_peer.make_offer()})
        second = await SignalingClient.connect(server.ws_url)
        clients.append(second)
        await second.send({"type": "resume", "token": joined["resume_token"]})
        await second.expect("resumed", TIMEOUT)
        await second.send({"type": "offer", "sdp": await new_peer.make_offer()})
        answer = await second.expect("answer", TIMEOUT)
        await new_peer.accept_answer(answer["sdp"])
        await new_peer.wait_connected(TIMEOUT)
        # The old offer was sent first, so its answer would have come first.
        await asyncio.sleep(1.0)
        assert len(second.of_type("answer")) == 1
    finally:
        await old_peer.close()
        await new_peer.close()


async def test_signed_turn_entry_comes_first(
    turn_server: TurnServer,
    start_server: ServerFactory,
    clients: list[SignalingClient],
) -> None:
    """A TURN entry in ICE_SERVERS does not hide TURN_URLS from aiortc."""
    assert_loopback_only()
    rejected = (
        f'{{"urls": "turn:127.0.0.1:{turn_server.port}", '
        '"username": "static", "credential": "wrong"}'
    )
    server = await start_server(
        ICE_SERVERS=f"[{rejected}]",
        TURN_URLS=turn_server.url,
        TURN_SECRET=turn_server.secret,
    )
    joined, answer = await connect_media(server, clients)
    assert joined["ice_servers"][0]["urls"] == [turn_server.url]
    assert joined["ice_servers"][1]["username"] == "static"
    assert " typ relay" in answer
