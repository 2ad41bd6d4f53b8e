"""Grouping transcript deltas into caption messages."""

from __future__ import annotations

import asyncio
from typing import Any

from signaling.captions import CaptionAssembler


def make_assembler(
    final_after_s: float = 0.05,
) -> tuple[CaptionAssembler, list[dict[str, Any]], list[dict[str, Any]]]:
    to_speaker: list[dict[str, Any]] = []
    to_listener: list[dict[str, Any]] = []
    assembler = CaptionAssembler(
        call_id="c_1",
        languages={"original": "en", "translation": "ru"},
        send_to_speaker=to_speaker.append,
        send_to_listener=to_listener.append,
        final_after_s=final_after_s,
    )
    return assembler, to_speaker, to_listener


async def test_captions_replace_text_and_share_utterance() -> None:
    assembler, to_speaker, to_listener = make_assembler(final_after_s=10)
    assembler.add("original", " Hello")
    assembler.add("original", " world")
    assembler.add("translation", "Привет")
    assert [m["text"] for m in to_speaker] == ["Hello", "Hello world", "Привет"]
    assert {m["utterance_id"] for m in to_speaker} == {to_speaker[0]["utterance_id"]}
    assert [m["speaker"] for m in to_speaker] == ["self"] * 3
    assert [m["speaker"] for m in to_listener] == ["partner"] * 3
    assert [m["language"] for m in to_listener] == ["en", "en", "ru"]
    assert not any(m["final"] for m in to_listener)
    assembler.finish()


async def test_captions_final_after_pause() -> None:
    assembler, _, to_listener = make_assembler()
    assembler.add("original", "one")
    assembler.add("translation", "один")
    # The timer fires 50 ms after the last delta; give it six times that.
    await asyncio.sleep(0.3)
    finals = [m for m in to_listener if m["final"]]
    assert [(m["kind"], m["text"]) for m in finals] == [
        ("original", "one"),
        ("translation", "один"),
    ]
    assembler.add("original", "two")
    assert to_listener[-1]["utterance_id"] != finals[0]["utterance_id"]
    assembler.finish()


async def test_captions_ignore_blank_delta() -> None:
    assembler, to_speaker, _ = make_assembler()
    assembler.add("original", "  ")
    assert to_speaker == []
    assembler.finish()
