"""Validation of client signaling messages."""

from __future__ import annotations

import json

import pytest

from media.languages import normalize_language
from signaling import messages
from signaling.errors import ProtocolError


def parse_error(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        messages.parse_client_message(text)
    return info.value


def test_parse_join_with_all_fields() -> None:
    message = messages.parse_client_message(
        json.dumps(
            {
                "type": "join",
                "language": "pt-BR",
                "name": "Ana",
                "room": "team_1",
                "hear_original": True,
                "extra": 1,
            }
        )
    )
    assert isinstance(message, messages.Join)
    assert message.language == "pt-BR"
    assert message.room == "team_1"
    assert message.hear_original is True


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "dance"}', "bad_message"),
        ('{"type": "join"}', "bad_message"),
        ('{"type": "join", "language": 7}', "bad_message"),
        ('{"type": "join", "language": "en", "room": "a b"}', "bad_message"),
        (
            '{"type": "join", "language": "en", "name": "' + "x" * 65 + '"}',
            "bad_message",
        ),
        ('{"type": "join", "language": "en", "hear_original": "yes"}', "bad_message"),
        ('{"type": "offer"}', "bad_message"),
        ('{"type": "offer", "sdp": ""}', "bad_message"),
        ('{"type": "candidate"}', "bad_message"),
        ('{"type": "settings", "hear_original": 1}', "bad_message"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
    ],
)
def test_parse_rejects_invalid(text: str, code: str) -> None:
    assert parse_error(text).code == code


def test_parse_error_names_field() -> None:
    error = parse_error('{"type": "join", "language": 7}')
    assert "'language'" in error.message


def test_candidate_null_is_end_of_candidates() -> None:
    message = messages.parse_client_message('{"type": "candidate", "candidate": null}')
    assert isinstance(message, messages.Candidate)
    assert message.candidate is None


@pytest.mark.parametrize(
    ("tag", "code"),
    [("en", "en"), ("pt-BR", "pt"), ("zh_Hans", "zh"), ("RU", "ru"), ("xx", None)],
)
def test_normalize_language(tag: str, code: str | None) -> None:
    assert normalize_language(tag) == code
