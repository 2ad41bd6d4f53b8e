"""Signaling messages: client messages validated at the edge, server messages
built in one place."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from signaling.errors import ProtocolError

# Clients may add fields the server does not know; they are ignored.
_CONFIG = ConfigDict(extra="ignore", frozen=True)


class Join(BaseModel):
    model_config = _CONFIG
    type: Literal["join"]
    language: StrictStr = Field(min_length=1, max_length=35)
    name: StrictStr | None = Field(default=None, max_length=64)
    room: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    hear_original: StrictBool = False


class Offer(BaseModel):
    model_config = _CONFIG
    type: Literal["offer"]
    sdp: StrictStr = Field(min_length=1)


class Candidate(BaseModel):
    model_config = _CONFIG
    type: Literal["candidate"]
    candidate: dict[str, Any] | None


class Resume(BaseModel):
    model_config = _CONFIG
    type: Literal["resume"]
    token: StrictStr = Field(min_length=1, max_length=256)


class Settings(BaseModel):
    model_config = _CONFIG
    type: Literal["settings"]
    hear_original: StrictBool


class Leave(BaseModel):
    model_config = _CONFIG
    type: Literal["leave"]


class Ping(BaseModel):
    model_config = _CONFIG
    type: Literal["ping"]


ClientMessage = Join | Offer | Candidate | Resume | Settings | Leave | Ping

_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(
    Annotated[ClientMessage, Field(discriminator="type")]
)
_TYPES = frozenset(
    ("join", "offer", "candidate", "resume", "settings", "leave", "ping")
)


def parse_client_message(text: str) -> ClientMessage:
    """Validate one text frame into a typed message, or raise ProtocolError."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "The message must be a JSON object.")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "The message needs a string field 'type'.")
    if kind not in _TYPES:
        raise ProtocolError("bad_message", f"Unknown message type {kind[:40]!r}.")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "message"
        raise ProtocolError(
            "bad_message", f"Invalid field {where!r} in {kind!r}: {first['msg']}."
        ) from None
    except RecursionError:
        raise ProtocolError(
            "bad_message", "The message is nested too deeply."
        ) from None


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def translation(state: str, engine: str, reason: str) -> dict[str, Any]:
    return {"type": "translation", "state": state, "engine": engine, "reason": reason}


def caption(
    *,
    call_id: str,
    speaker: Literal["self", "partner"],
    kind: str,
    language: str,
    utterance_id: str,
    text: str,
    final: bool,
) -> dict[str, Any]:
    return {
        "type": "caption",
        "call_id": call_id,
        "speaker": speaker,
        "kind": kind,
        "language": language,
        "utterance_id": utterance_id,
        "text": text,
        "final": final,
    }
