"""Resume tokens, the grace period and rooms, at the protocol level."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.support.peer import SignalingClient

Connect = Callable[[], Awaitable[SignalingClient]]
TIMEOUT = 5.0
GRACE_S = 1.5


@pytest.fixture
async def server(start_server: ServerFactory) -> RunningServer:
    return await start_server(RESUME_GRACE_S=str(GRACE_S))


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    clients: list[SignalingClient] = []

    async def open_client() -> SignalingClient:
        client = await SignalingClient.connect(server.ws_url)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def paired_clients(
    connect: Connect, **join: object
) -> tuple[SignalingClient, SignalingClient, str]:
    """Join two clients into a call; return them and the first one's token."""
    first, second = await connect(), await connect()
    await first.send({"type": "join", "language": "en", **join})
    token = (await first.expect("joined", TIMEOUT))["resume_token"]
    await second.send({"type": "join", "language": "ru", **join})
    await first.expect("paired", TIMEOUT)
    await second.expect("paired", TIMEOUT)
    return first, second, token


async def resume(client: SignalingClient, token: str) -> dict[str, object]:
    await client.send({"type": "resume", "token": token})
    return await client.receive(TIMEOUT)


async def test_resume_keeps_call(connect: Connect) -> None:
    first, second, token = await paired_clients(connect)
    call_id = first.of_type("paired")[0]["call_id"]
    await first.close()
    await second.expect("partner_reconnecting", TIMEOUT)

    again = await connect()
    resumed = await resume(again, token)
    assert resumed["type"] == "resumed"
    assert resumed["call_id"] == call_id
    assert resumed["participant_id"] == first.of_type("joined")[0]["participant_id"]
    assert resumed["resume_token"] != token
    assert resumed["ice_servers"] == []
    paired = await again.expect("paired", TIMEOUT)
    assert paired["partner"]["language"] == "ru"
    await second.expect("partner_returned", TIMEOUT)
    assert second.of_type("partner_left") == []


async def test_resume_closes_older_socket(connect: Connect) -> None:
    first, _, token = await paired_clients(connect)
    again = await connect()
    assert (await resume(again, token))["type"] == "resumed"
    with pytest.raises(ConnectionError):
        for _ in range(20):
            await first.receive(TIMEOUT)
    assert first.closed


async def test_wrong_token_is_resume_failed(connect: Connect) -> None:
    await paired_clients(connect)
    client = await connect()
    reply = await resume(client, "x" * 32)
    assert reply["type"] == "error"
    assert reply["code"] == "resume_failed"


async def test_previous_token_valid_until_fresh_used(connect: Connect) -> None:
    first, _, token = await paired_clients(connect)
    await first.close()
    second_socket = await connect()
    fresh = (await resume(second_socket, token))["resume_token"]
    assert isinstance(fresh, str)
    # The `resumed` message may have been lost: the old token still works.
    third_socket = await connect()
    retried = await resume(third_socket, token)
    assert retried["type"] == "resumed"
    newest = retried["resume_token"]
    assert isinstance(newest, str)
    fourth_socket = await connect()
    assert (await resume(fourth_socket, newest))["type"] == "resumed"
    # Once a token issued after it has been used, the old one is dead.
    fifth_socket = await connect()
    reply = await resume(fifth_socket, token)
    assert reply["code"] == "resume_failed"


async def test_grace_expiry_ends_call_and_token(connect: Connect) -> None:
    first, second, token = await paired_clients(connect)
    await first.close()
    await second.expect("partner_reconnecting", TIMEOUT)
    left = await second.expect("partner_left", GRACE_S + TIMEOUT)
    assert left["reason"] == "disconnected"
    late = await connect()
    reply = await resume(late, token)
    assert reply["code"] == "resume_failed"


async def test_resume_while_waiting_requeues(
    connect: Connect, server: RunningServer
) -> None:
    first = await connect()
    await first.send({"type": "join", "language": "en"})
    token = (await first.expect("joined", TIMEOUT))["resume_token"]
    await first.expect("waiting", TIMEOUT)
    await first.close()
    again = await connect()
    resumed = await resume(again, token)
    assert resumed["call_id"] is None
    await again.expect("waiting", TIMEOUT)
    partner = await connect()
    await partner.send({"type": "join", "language": "de"})
    await again.expect("paired", TIMEOUT)
    assert server.hub.waiting_count == 0


async def test_resume_on_joined_socket_is_rejected(connect: Connect) -> None:
    first, _, token = await paired_clients(connect)
    await first.send({"type": "resume", "token": token})
    reply = await first.expect("error", TIMEOUT)
    assert reply["code"] == "already_joined"


async def test_resume_replays_translation_state(connect: Connect) -> None:
    first, _, token = await paired_clients(connect)
    await first.close()
    again = await connect()
    await resume(again, token)
    state = await again.expect("translation", TIMEOUT)
    assert state["state"] == "unavailable"


async def test_rooms_pair_only_within_room(connect: Connect) -> None:
    lobby, room_a, room_b, room_a2 = (
        await connect(),
        await connect(),
        await connect(),
        await connect(),
    )
    await lobby.send({"type": "join", "language": "en"})
    await lobby.expect("waiting", TIMEOUT)
    await room_a.send({"type": "join", "language": "en", "room": "alpha"})
    await room_a.expect("waiting", TIMEOUT)
    await room_b.send({"type": "join", "language": "fr", "room": "beta"})
    await room_b.expect("waiting", TIMEOUT)
    await room_a2.send({"type": "join", "language": "ja", "room": "alpha"})
    paired = await room_a2.expect("paired", TIMEOUT)
    assert paired["partner"]["language"] == "en"
    assert (
        paired["partner"]["participant_id"]
        == (room_a.of_type("joined")[0]["participant_id"])
    )
    assert lobby.of_type("paired") == []


async def test_settings_message_accepted_in_call(connect: Connect) -> None:
    first, _, _ = await paired_clients(connect)
    await first.send({"type": "settings", "hear_original": True})
    await first.send({"type": "ping"})
    await first.expect("pong", TIMEOUT)
    assert first.of_type("error") == []


async def test_token_absent_from_logs_and_status(
    connect: Connect, server: RunningServer, server_log: list[object]
) -> None:
    first, _, token = await paired_clients(connect)
    await first.close()
    again = await connect()
    fresh = (await resume(again, token))["resume_token"]
    text = "\n".join(record.getMessage() for record in server_log)  # type: ignore[attr-defined]
    assert token not in text
    assert isinstance(fresh, str)
    assert fresh not in text
