"""The call page in a real browser.

Debian's headless Chromium, driven by Playwright, loads the page from the real
server. Its fake microphone plays espeak-ng speech, so two browsers can hold a
whole call through the server and the fake OpenAI. Tests of the page's own
protocol handling (redirect, captions, banners) reply on its WebSocket from
the test through Playwright's WebSocket routing instead.

Run through tests/run-in-netns, so that WebRTC finds only loopback addresses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    WebSocket,
    WebSocketRoute,
    async_playwright,
    expect,
)

from tests.conftest import RunningServer, ServerFactory
from tests.fake_openai import FakeOpenAI
from tests.support.netns import assert_loopback_only
from tests.support.services import RedisServer, TurnServer, free_port
from tests.support.speech import speech_sample

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    # Offer raw loopback addresses as ICE candidates, not mDNS names that the
    # server's ICE agent would have to resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Fail every host name lookup without a DNS query. The tests use IP
    # addresses only, and Chromium's background lookups stay off the network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE 127.0.0.2",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)

ARTIFACTS = Path(__file__).parent / "artifacts"

# Time for two pages to join, pair and connect their media.
CALL_TIMEOUT_MS = 20_000
# Time for speech, its captions and its audio to cross the call.
SPEECH_TIMEOUT_MS = 15_000
# RMS of the partner's voice in the page (full scale is 1.0). espeak-ng speech
# from Chromium's fake microphone measures about 0.37 in the page, and the
# silence between phrases is near zero.
SPEECH_LEVEL = 0.02
# Lifetime of the TURN credentials in the relay test: long enough for both
# pages to join and allocate, short enough to wait for their expiry.
TURN_TTL_S = 15

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed: apt-get install -y chromium",
)

PageFactory = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(tmp_path: Path) -> AsyncIterator[PageFactory]:
    """Start Chromium processes on demand; each returns its first page.

    `capture` is the WAV file the fake microphone plays in a loop. It is an
    option of the browser process, so each speaker needs a browser of its own.
    """
    contexts: list[BrowserContext] = []
    console: list[str] = []
    page_errors: list[str] = []

    async with async_playwright() as playwright:

        async def launch(
            capture: Path | None = None, label: str = "page", locale: str = "en-US"
        ) -> Page:
            args = list(CHROMIUM_FLAGS)
            if capture is not None:
                args.append(f"--use-file-for-fake-audio-capture={capture}")
            context = await playwright.chromium.launch_persistent_context(
                tmp_path / f"chromium-{len(contexts)}",
                executable_path=CHROMIUM,
                headless=True,
                args=args,
                viewport={"width": 900, "height": 900},
                locale=locale,
            )
            contexts.append(context)
            page = context.pages[0] if context.pages else await context.new_page()
            watch_page(page, label, console, page_errors)
            return page

        try:
            yield launch
        finally:
            for context in contexts:
                await context.close()
            print("\n".join(console))
    assert not page_errors, f"uncaught errors in the page: {page_errors}"


def watch_page(
    page: Page, label: str, console: list[str], page_errors: list[str]
) -> None:
    def on_console(message: ConsoleMessage) -> None:
        console.append(f"{label} {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: page_errors.append(f"{label}: {error}"))


def status(page: Page) -> Locator:
    return page.locator("#status")


async def join(
    page: Page, url: str, *, language: str, name: str, room: str | None = None
) -> None:
    await page.goto(url)
    await page.select_option("#language", language)
    await page.fill("#name", name)
    if room is not None:
        await page.fill("#room", room)
    await page.click("#join")


async def wait_for_remote_speech(page: Page) -> None:
    """Wait until the page has measured speech on the partner's audio track."""
    await page.wait_for_function(
        f"window.callbridge.levels().remotePeak > {SPEECH_LEVEL}",
        polling=200,
        timeout=SPEECH_TIMEOUT_MS,
    )


async def reset_remote_peak(page: Page) -> None:
    await page.evaluate("window.callbridge.resetPeaks()")


async def record_partner_banner(page: Page) -> None:
    """Log in the page each time the partner banner is shown or hidden.

    The banner of a quick reconnect lasts a fraction of a second, shorter
    than a poll from the test might catch.
    """
    await page.evaluate(
        """() => {
            const banner = document.getElementById('partner-banner');
            window.bannerLog = [];
            new MutationObserver(() => window.bannerLog.push(!banner.hidden))
                .observe(banner, { attributes: true, attributeFilter: ['hidden'] });
        }"""
    )


async def partner_banner_log(page: Page) -> list[bool]:
    log: list[bool] = await page.evaluate("window.bannerLog")
    return log


async def saved_token(page: Page) -> str | None:
    saved = await page.evaluate("sessionStorage.getItem('callbridge.call')")
    if saved is None:
        return None
    token: str = json.loads(saved)["token"]
    return token


async def start_translating_server(
    start_server: ServerFactory, fake_openai: FakeOpenAI, **env: str
) -> RunningServer:
    """Start the server with the fake OpenAI as its translation service.

    Tests request `fake_openai` before `start_server`, so the server shuts
    down first and closes its calls while the fake still serves them.
    """
    return await start_server(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        CAPTION_FINAL_MS="400",
        **env,
    )


async def open_call(open_page: PageFactory, server: RunningServer) -> tuple[Page, Page]:
    """Open two pages that join one room and reach "in a call"."""
    assert_loopback_only()
    alice = await open_page(speech_sample("en").path, "alice")
    boris = await open_page(speech_sample("ru").path, "boris")
    await join(alice, server.url, language="en", name="Alice", room="r1")
    await expect(status(alice)).to_have_attribute("data-phase", "waiting")
    await join(boris, f"{server.url}/?room=r1", language="ru", name="Boris")
    await expect(status(alice)).to_have_text(
        "In a call with Boris (Русский)", timeout=CALL_TIMEOUT_MS
    )
    await expect(status(boris)).to_have_text(
        "In a call with Alice (English)", timeout=CALL_TIMEOUT_MS
    )
    return alice, boris


async def test_call_between_two_pages(
    fake_openai: FakeOpenAI, start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_translating_server(start_server, fake_openai)
    assert_loopback_only()
    alice = await open_page(speech_sample("en").path, "alice")
    boris = await open_page(speech_sample("ru").path, "boris")

    await join(alice, server.url, language="en", name="Alice", room="r1")
    await expect(status(alice)).to_have_attribute("data-phase", "waiting")
    await expect(status(alice)).to_contain_text("Waiting for a partner: 0:0")
    await expect(alice.locator("#waiting-note")).to_contain_text("nothing is stored")
    await expect(alice.locator("#invite-link")).to_have_value(f"{server.url}/?room=r1")

    await boris.goto(f"{server.url}/?room=r1")
    await expect(boris.locator("#room")).to_have_value("r1")
    await join(boris, f"{server.url}/?room=r1", language="ru", name="Boris")
    await expect(status(alice)).to_have_text(
        "In a call with Boris (Русский)", timeout=CALL_TIMEOUT_MS
    )
    await expect(status(boris)).to_have_text(
        "In a call with Alice (English)", timeout=CALL_TIMEOUT_MS
    )

    for page in (alice, boris):
        partner_text = page.locator(
            '.utterance[data-speaker="partner"] [data-kind="translation"]'
        )
        await expect(partner_text.first).not_to_be_empty(timeout=SPEECH_TIMEOUT_MS)
        await wait_for_remote_speech(page)
    await expect(alice.locator("#translation-banner")).to_be_hidden()

    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=ARTIFACTS / "call.png", full_page=True)

    await alice.click("#leave")
    await expect(status(alice)).to_have_text("Call ended. You left the call.")
    await expect(status(boris)).to_have_text("Call ended. Alice left the call.")
    assert await saved_token(alice) is None

    # Join again from the same pages, without a reload.
    await alice.click("#join")
    await boris.click("#join")
    await expect(status(alice)).to_have_attribute(
        "data-phase", "in-call", timeout=CALL_TIMEOUT_MS
    )
    await expect(status(boris)).to_have_attribute(
        "data-phase", "in-call", timeout=CALL_TIMEOUT_MS
    )


async def test_dropped_signaling_keeps_call(
    fake_openai: FakeOpenAI, start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_translating_server(start_server, fake_openai)
    alice, boris = await open_call(open_page, server)
    await record_partner_banner(boris)
    token = await saved_token(alice)

    alice_console: list[str] = []
    alice.on("console", lambda message: alice_console.append(message.text))
    await alice.evaluate("window.callbridge.session.channel.socket.close()")
    await expect(status(alice)).to_have_attribute(
        "data-phase", "in-call", timeout=CALL_TIMEOUT_MS
    )
    await boris.wait_for_function("window.bannerLog.length >= 2", timeout=10_000)
    assert await partner_banner_log(boris) == [True, False]
    assert await saved_token(alice) not in (None, token)

    # The media connection was never touched: Alice still hears Boris.
    await reset_remote_peak(alice)
    await wait_for_remote_speech(alice)
    assert any("[resume]" in line for line in alice_console)
    assert not any("[offer]" in line for line in alice_console)


async def test_grace_period_ends_call(
    fake_openai: FakeOpenAI, start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_translating_server(
        start_server, fake_openai, RESUME_GRACE_S="3"
    )
    alice, boris = await open_call(open_page, server)

    await alice.context.close()
    await expect(boris.locator("#partner-banner")).to_be_visible(timeout=10_000)
    await expect(status(boris)).to_have_text(
        "Call ended. Alice lost the connection and did not come back.",
        timeout=10_000,
    )
    await expect(boris.locator("#partner-banner")).to_be_hidden()


async def test_reload_resumes_call(
    fake_openai: FakeOpenAI, start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_translating_server(start_server, fake_openai)
    alice, boris = await open_call(open_page, server)
    await record_partner_banner(boris)
    token = await saved_token(alice)

    await alice.reload()
    await expect(status(alice)).to_have_text(
        "In a call with Boris (Русский)", timeout=CALL_TIMEOUT_MS
    )
    assert await saved_token(alice) not in (None, token)
    await boris.wait_for_function("window.bannerLog.length >= 2", timeout=10_000)
    assert await partner_banner_log(boris) == [True, False]

    # Without a click since the reload the browser may block playback.
    enable_audio = alice.locator("#enable-audio")
    if await enable_audio.is_visible():
        await enable_audio.click()
    await wait_for_remote_speech(alice)
    await reset_remote_peak(boris)
    await wait_for_remote_speech(boris)


class FakeNode:
    """A signaling server played by the test through Playwright's WebSocket routing.

    It records what the page sends and replies with `replies(message)`.
    """

    def __init__(
        self, replies: Callable[[dict[str, Any]], list[dict[str, Any]]]
    ) -> None:
        self.received: list[dict[str, Any]] = []
        self.socket: WebSocketRoute | None = None
        self._replies = replies

    def accept(self, socket: WebSocketRoute) -> None:
        self.socket = socket
        socket.on_message(self._on_message)

    def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None, "the page has not connected"
        self.socket.send(json.dumps(message))

    def _on_message(self, text: str | bytes) -> None:
        message = json.loads(text)
        self.received.append(message)
        for reply in self._replies(message):
            self.send(reply)


def joined(token: str) -> dict[str, Any]:
    return {
        "type": "joined",
        "participant_id": "p_1",
        "resume_token": token,
        "ice_servers": [],
    }


PAIRED = {
    "type": "paired",
    "call_id": "c_1",
    "partner": {"participant_id": "p_2", "language": "ru", "name": "Boris"},
}


async def wait_for_message(page: Page, node: FakeNode, type_: str) -> dict[str, Any]:
    for _ in range(100):
        for message in node.received:
            if message["type"] == type_:
                return message
        await page.wait_for_timeout(100)
    raise AssertionError(f"no {type_!r} message; received {node.received}")


def answer_leading_nowhere(offer: str) -> str:
    """Return an SDP answer that the page accepts but cannot connect to.

    Its only ICE candidate is the discard port on loopback, where nothing
    listens, so media never flows and the page keeps its connection attempt.
    """
    lines = []
    for line in offer.split("\r\n"):
        if line.startswith(("a=candidate", "a=end-of-candidates", "a=ice-options")):
            continue
        if line.startswith("a=ice-ufrag"):
            line = "a=ice-ufrag:fake"
        elif line.startswith("a=ice-pwd"):
            line = "a=ice-pwd:fakefakefakefakefakefake"
        elif line.startswith("a=setup"):
            line = "a=setup:active"
        lines.append(line)
        if line.startswith("a=mid"):
            lines.append("a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host")
    return "\r\n".join(lines)


async def test_redirect_resumes_on_other_node(
    start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_server()
    # Playwright routing serves these sockets, so nothing listens there.
    second_url = f"ws://127.0.0.2:{server.port}/ws"
    third_url = f"ws://127.0.0.2:{server.port + 1}/ws"

    # The first node accepts the join and even the offer before it finds the
    # partner on another node, so the media made with it must be dropped.
    def first_replies(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message["type"] == "join":
            return [joined("t-first")]
        if message["type"] == "offer":
            return [
                {"type": "answer", "sdp": answer_leading_nowhere(message["sdp"])},
                {"type": "redirect", "url": second_url, "token": "t-redirect"},
            ]
        return []

    def second_replies(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message == {"type": "resume", "token": "t-redirect"}:
            resumed = joined("t-second") | {"type": "resumed", "call_id": "c_1"}
            return [resumed, PAIRED]
        if message["type"] == "offer":
            return [{"type": "answer", "sdp": answer_leading_nowhere(message["sdp"])}]
        if message["type"] == "resume":
            return [{"type": "redirect", "url": third_url, "token": "t-third"}]
        return []

    def third_replies(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message["type"] == "resume":
            return [joined("t-final") | {"type": "resumed", "call_id": "c_1"}]
        return []

    first = FakeNode(first_replies)
    second = FakeNode(second_replies)
    third = FakeNode(third_replies)
    page = await open_page()
    await page.route_web_socket(server.ws_url, first.accept)
    await page.route_web_socket(second_url, second.accept)
    await page.route_web_socket(third_url, third.accept)

    # A redirect in reply to a join: resume there, then a fresh offer.
    await join(page, server.url, language="en", name="Alice")
    offer = await wait_for_message(page, second, "offer")
    assert second.received[0] == {"type": "resume", "token": "t-redirect"}
    assert offer["sdp"].startswith("v=0")
    assert [m["type"] for m in first.received] == ["join", "offer"]
    await expect(status(page)).to_have_text("Connecting audio with Boris…")
    assert await saved_token(page) == "t-second"

    # A redirect in reply to a resume: the media connection stays.
    assert second.socket is not None
    await second.socket.close(code=1001)
    resume = await wait_for_message(page, third, "resume")
    assert resume == {"type": "resume", "token": "t-third"}
    assert second.received[-1] == {"type": "resume", "token": "t-second"}
    await expect(status(page)).to_have_text("Connecting audio with Boris…")
    await page.wait_for_timeout(1000)
    assert [m["type"] for m in third.received] == ["resume"]
    assert await saved_token(page) == "t-final"


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


async def test_redirect_between_real_nodes(
    redis_server: RedisServer, start_server: ServerFactory, open_page: PageFactory
) -> None:
    assert_loopback_only()
    ports = [free_port(), free_port()]
    origins = [f"http://127.0.0.1:{port}" for port in ports]
    # Each page comes from its own node, and a browser sends that origin to
    # the node it is redirected to, so each node must allow the other.
    nodes = [
        await start_server(
            PORT=str(port),
            REDIS_URL=redis_server.url,
            PUBLIC_URL=origin,
            NODE_ID=f"node-{index}",
            CORS_ORIGINS=",".join(origins),
        )
        for index, (port, origin) in enumerate(zip(ports, origins, strict=True))
    ]
    alice = await open_page(speech_sample("en").path, "alice")
    boris = await open_page(speech_sample("ru").path, "boris")
    await join(alice, nodes[0].url, language="en", name="Alice", room="r1")
    await expect(status(alice)).to_have_attribute("data-phase", "waiting")
    await join(boris, nodes[1].url, language="ru", name="Boris", room="r1")

    await expect(status(boris)).to_have_text(
        "In a call with Alice (English)", timeout=CALL_TIMEOUT_MS
    )
    await expect(status(alice)).to_have_text(
        "In a call with Boris (Русский)", timeout=CALL_TIMEOUT_MS
    )
    await wait_for_remote_speech(boris)
    await wait_for_remote_speech(alice)
    url = await boris.evaluate("window.callbridge.session.channel.url")
    assert url == nodes[0].ws_url


async def test_call_through_turn_relay_only(
    turn_server: TurnServer, start_server: ServerFactory, open_page: PageFactory
) -> None:
    """Pages limited to relay candidates, as behind a strict NAT, still talk.

    The TURN credentials that each page received expire after TURN_TTL_S.
    """
    assert_loopback_only()
    server = await start_server(
        TURN_URLS=turn_server.url,
        TURN_SECRET=turn_server.secret,
        TURN_TTL_S=str(TURN_TTL_S),
    )
    alice = await open_page(speech_sample("en").path, "alice")
    boris = await open_page(speech_sample("ru").path, "boris")
    received: list[dict[str, Any]] = []
    for page in (alice, boris):
        page.on("websocket", lambda socket: record_frames(socket, received))
        await page.add_init_script(KEEP_PEER_CONNECTIONS)
    await join(alice, f"{server.url}/?ice=relay", language="en", name="Alice")
    await expect(status(alice)).to_have_attribute("data-phase", "waiting")
    await join(boris, f"{server.url}/?ice=relay", language="ru", name="Boris")
    for page in (alice, boris):
        await expect(status(page)).to_contain_text("In a call", timeout=CALL_TIMEOUT_MS)
        await wait_for_remote_speech(page)

    for page in (alice, boris):
        assert await page.evaluate(SELECTED_LOCAL_CANDIDATE_TYPE) == "relay"
    # Each page allocated its relay with the credentials it received, as the
    # coturn log shows the user of each allocation.
    joined = [message for message in received if message["type"] == "joined"]
    page_users = {
        server_list[0]["username"]
        for server_list in (message["ice_servers"] for message in joined)
    }
    assert len(page_users) == 2
    log = turn_server.log()
    for user in page_users:
        assert f"user <{user}>: incoming packet ALLOCATE processed, success" in log

    entry = joined[0]["ice_servers"][0]
    expires_at = int(entry["username"].split(":")[0])
    assert expires_at <= time.time() + TURN_TTL_S
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 1.5)
    with pytest.raises(stun.TransactionFailed, match="401"):
        await turn_server.allocate(entry["username"], entry["credential"])


# Keeps each RTCPeerConnection the page makes in `window.peerConnections`.
KEEP_PEER_CONNECTIONS = """
    window.peerConnections = [];
    const Original = window.RTCPeerConnection;
    window.RTCPeerConnection = function (...args) {
        const pc = new Original(...args);
        window.peerConnections.push(pc);
        return pc;
    };
    window.RTCPeerConnection.prototype = Original.prototype;
"""

# The candidate type of the local end of the newest connection's pair in use.
SELECTED_LOCAL_CANDIDATE_TYPE = """async () => {
    const stats = await window.peerConnections.at(-1).getStats();
    let transport;
    stats.forEach((report) => { if (report.type === 'transport') transport = report; });
    const pair = stats.get(transport.selectedCandidatePairId);
    return stats.get(pair.localCandidateId).candidateType;
}"""


async def test_failed_media_gets_new_offer(
    fake_openai: FakeOpenAI,
    start_server: ServerFactory,
    open_page: PageFactory,
    server_log: list[logging.LogRecord],
) -> None:
    """A media connection that fails is replaced by a new offer in the call.

    Chromium takes about 30 s to call a dead connection failed, so the test
    makes the page's connection report "failed" itself.
    """
    server = await start_translating_server(start_server, fake_openai)
    assert_loopback_only()
    alice = await open_page(speech_sample("en").path, "alice")
    boris = await open_page(speech_sample("ru").path, "boris")
    await alice.add_init_script(KEEP_PEER_CONNECTIONS)
    await join(alice, server.url, language="en", name="Alice", room="r1")
    await join(boris, server.url, language="ru", name="Boris", room="r1")
    await expect(status(alice)).to_contain_text("In a call", timeout=CALL_TIMEOUT_MS)
    await wait_for_remote_speech(alice)
    await wait_for_remote_speech(boris)

    await alice.evaluate(REPORT_FAILED)
    await alice.wait_for_function(
        "window.peerConnections.length === 2 && "
        "window.peerConnections[1].connectionState === 'connected'",
        polling=200,
        timeout=CALL_TIMEOUT_MS,
    )
    await reset_remote_peak(alice)
    await reset_remote_peak(boris)
    await wait_for_remote_speech(alice)
    await wait_for_remote_speech(boris)
    await expect(status(alice)).to_contain_text("In a call with Boris")
    messages = [record.getMessage() for record in server_log]
    assert "offer answered (replaced media)" in messages


# Makes the newest connection report the state "failed", as Chromium does
# when ICE finds no working path any more.
REPORT_FAILED = """() => {
    const pc = window.peerConnections.at(-1);
    Object.defineProperty(pc, 'connectionState', { get: () => 'failed' });
    pc.dispatchEvent(new Event('connectionstatechange'));
}"""


def record_frames(socket: WebSocket, received: list[dict[str, Any]]) -> None:
    """Append each JSON message that the page receives on `socket`."""

    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str):
            received.append(json.loads(payload))

    socket.on("framereceived", on_frame)


async def test_reload_after_call_ended_offers_join(
    start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_server()
    expired = {
        "type": "error",
        "code": "resume_failed",
        "message": "The resume token is invalid or expired; join again.",
    }
    node = FakeNode(lambda message: [expired] if message["type"] == "resume" else [])
    page = await open_page()
    await page.route_web_socket(server.ws_url, node.accept)
    await page.goto(server.url)
    await page.evaluate(
        """sessionStorage.setItem('callbridge.call', JSON.stringify({
            token: 't-old', language: 'ru', name: 'Alice', room: 'r9',
            hearOriginal: true, muted: false, partner: null, callId: 'c_1',
            savedAt: Date.now(),
        }))"""
    )
    await page.reload()
    await expect(status(page)).to_contain_text("The call could not be resumed")
    assert node.received[0] == {"type": "resume", "token": "t-old"}
    await expect(page.locator("#join")).to_be_visible()
    await expect(page.locator("#language")).to_have_value("ru")
    await expect(page.locator("#room")).to_have_value("r9")
    assert await saved_token(page) is None


async def test_captions_banners_and_controls(
    start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_server()

    def replies(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [joined("t-1"), PAIRED] if message["type"] == "join" else []

    node = FakeNode(replies)
    page = await open_page(locale="ru-RU")
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.route_web_socket(server.ws_url, node.accept)
    await page.goto(server.url)
    await expect(page.locator("#language")).to_have_value("ru")
    await expect(page.locator("#language option[value=ja]")).to_have_text("日本語")
    await join(page, server.url, language="en", name="Alice")
    await expect(status(page)).to_have_text("Connecting audio with Boris…")
    join_message = node.received[0]
    assert join_message == {
        "type": "join",
        "language": "en",
        "name": "Alice",
        "hear_original": False,
    }

    def caption(kind: str, text: str, final: bool, speaker: str = "partner") -> None:
        node.send(
            {
                "type": "caption",
                "call_id": "c_1",
                "speaker": speaker,
                "kind": kind,
                "language": "ru" if kind == "original" else "en",
                "utterance_id": "u7",
                "text": text,
                "final": final,
            }
        )

    caption("original", "Привет", final=False)
    caption("original", "Привет, как", final=False)
    caption("translation", "Hello, how", final=False)
    row = page.locator('.utterance[data-speaker="partner"][data-utterance="u7"]')
    original = row.locator('[data-kind="original"]')
    await expect(original).to_have_text("Привет, как")
    await expect(original).to_have_class("text partial")
    caption("original", "Привет, как дела?", final=True)
    await expect(original).to_have_text("Привет, как дела?")
    await expect(original).to_have_class("text")
    await expect(row.locator('[data-kind="translation"]')).to_have_text("Hello, how")
    caption("original", "Hello there", final=True, speaker="self")
    await expect(page.locator(".utterance")).to_have_count(2)
    await expect(row.locator(".who")).to_have_text("Boris")

    banner = page.locator("#translation-banner")
    node.send(
        {
            "type": "translation",
            "state": "degraded",
            "engine": "pipeline",
            "reason": "Reconnecting to the translation service.",
        }
    )
    await expect(banner).to_contain_text("Reconnecting to the translation service.")
    node.send({"type": "translation", "state": "ready", "engine": "realtime"})
    await expect(banner).to_be_hidden()

    node.send({"type": "partner_reconnecting"})
    await expect(page.locator("#partner-banner")).to_contain_text("connection dropped")
    node.send({"type": "partner_returned"})
    await expect(page.locator("#partner-banner")).to_be_hidden()

    await page.click("#hear-original")
    settings = await wait_for_message(page, node, "settings")
    assert settings == {"type": "settings", "hear_original": True}

    await page.click("#mute")
    await expect(page.locator("#muted-label")).to_be_visible()
    enabled = await page.evaluate("window.callbridge.session.microphone.track.enabled")
    assert enabled is False

    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"

    node.send({"type": "partner_left", "reason": "max_duration"})
    await expect(status(page)).to_have_text(
        "Call ended. The call reached its maximum length."
    )
    await expect(page.locator("#join")).to_be_visible()


async def test_failures_shown_in_page(
    start_server: ServerFactory, open_page: PageFactory
) -> None:
    server = await start_server()
    page = await open_page()
    notice = page.locator("#notice")

    await page.route("**/api/status", lambda route: route.abort())
    await page.goto(server.url)
    await expect(notice).to_contain_text("Cannot reach the server")
    await page.unroute("**/api/status")
    await page.click("#retry")
    await expect(notice).to_be_hidden()
    await expect(page.locator("#join")).to_be_enabled()

    await page.add_init_script(
        """navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException('denied', 'NotAllowedError'));"""
    )
    await page.reload()
    await page.click("#join")
    await expect(notice).to_contain_text("Microphone access was denied")
    await expect(status(page)).to_be_hidden()

    no_webrtc = await page.context.new_page()
    await no_webrtc.add_init_script("delete window.RTCPeerConnection;")
    await no_webrtc.goto(server.url)
    await expect(no_webrtc.locator("#notice")).to_contain_text(
        "does not support WebRTC"
    )
    await expect(no_webrtc.locator("#join")).to_be_disabled()
