"""End-to-end calls whose realtime engine fails: the pipeline engine takes
over, and when it fails too the listener hears the original voice.

The fake's pipeline "speaks" an utterance by returning its uploaded audio, so a
listener who hears the partner's sentence after the fallback heard the
pipeline's output.
"""

from __future__ import annotations

import asyncio

from tests.conftest import ServerFactory
from tests.fake_openai import FakeOpenAI
from tests.support.speech import SAMPLE_RATE
from tests.test_call_e2e import (
    LEADING_SILENCE_S,
    TIMEOUT,
    OpenCall,
    assert_hears,
    drain,
    open_call,  # noqa: F401 (a fixture)
)

# Enough rejected connects for the whole test: the realtime engine is never
# tried again within it, because REALTIME_RETRY_S is 60 s.
REJECTED_CONNECTS = 1000
# The pipeline speaks a sentence after its end plus the VAD's 0.5 s silence.
PIPELINE_TAIL_S = 1.5


async def test_realtime_failure_falls_back_within_utterance(
    start_server: ServerFactory,
    fake_openai: FakeOpenAI,
    open_call: OpenCall,  # noqa: F811
) -> None:
    fake_openai.reject_connects(REJECTED_CONNECTS, 500)
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        CAPTION_FINAL_MS="400",
    )
    call = await open_call(server)
    longest = max(call.first.speech.duration_s, call.second.speech.duration_s)
    await call.record(LEADING_SILENCE_S + 2 * longest + PIPELINE_TAIL_S)

    assert_hears(call.heard_by(call.second), call.first.speech)
    assert_hears(call.heard_by(call.first), call.second.speech)

    for side in (call.first, call.second):
        await drain(side.signaling)
        states = side.signaling.of_type("translation")
        assert {"state": "degraded", "engine": "pipeline"} in [
            {"state": s["state"], "engine": s["engine"]} for s in states
        ]
        finals = [
            c
            for c in side.signaling.of_type("caption")
            if c["final"] and c["speaker"] == "partner"
        ]
        kinds = {c["kind"] for c in finals}
        assert kinds == {"original", "translation"}

    uploads = list(fake_openai.rest.uploads)
    assert sorted(u.language or "" for u in uploads) == ["en", "ru"]
    partner_translations = [
        c["text"]
        for c in call.second.signaling.of_type("caption")
        if c["kind"] == "translation" and c["speaker"] == "partner"
    ]
    assert partner_translations[-1].startswith("[ru] utterance")


async def test_full_failure_relays_original_voice(
    start_server: ServerFactory,
    fake_openai: FakeOpenAI,
    open_call: OpenCall,  # noqa: F811
) -> None:
    fake_openai.reject_connects(REJECTED_CONNECTS, 500)
    fake_openai.rest.fail_always("transcriptions", 401)
    server = await start_server(
        OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test"
    )
    call = await open_call(server, loop=True)
    listener = call.second

    async with asyncio.timeout(3 * TIMEOUT):
        while True:
            state = await listener.signaling.expect("translation", 3 * TIMEOUT)
            if state["state"] == "unavailable":
                break
    assert "HTTP 401" in state["reason"]
    error = await listener.signaling.expect("error", TIMEOUT)
    assert error["code"] == "translation_failed"

    recorder = listener.peer.recorder
    assert recorder is not None
    failed_at_s = recorder.duration_s
    cycle_s = LEADING_SILENCE_S + call.first.speech.duration_s
    await call.record(failed_at_s + 2 * cycle_s)
    after = call.heard_by(listener)[int(failed_at_s * SAMPLE_RATE) :]
    assert_hears(after, call.first.speech)
    assert len(fake_openai.rest.records_of("speech")) == 0
