"""Settings read once from the environment and `.env` at start-up."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values
from dotenv.parser import parse_stream

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Part of the default TURN credential lifetime: time a participant may spend
# waiting for a partner before the call starts.
TURN_QUEUE_ALLOWANCE_S = 3600.0


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


@dataclass(frozen=True)
class Setting:
    """Documentation of one environment variable, used by `--help`."""

    name: str
    default: str
    help: str
    unit: str = ""

    @property
    def default_text(self) -> str:
        """The default as `--help` and `.env.example` state it."""
        if not self.default:
            return "unset"
        return f"{self.default} {self.unit}".rstrip()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Typed, validated server configuration."""

    host: str = "0.0.0.0"
    port: int = 3000
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    translation_model: str = "gpt-realtime-translate"
    realtime_transcription_model: str = "gpt-realtime-whisper"
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    max_message_bytes: int = 65536
    caption_final_ms: int = 1000
    ice_servers: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    resume_grace_s: float = 30.0
    media_timeout_s: float = 10.0
    log_format: str = "text"
    trusted_proxies: tuple[str, ...] = ()
    ws_connects_per_min: int = 60
    messages_per_s: float = 20.0
    message_burst: int = 40
    idle_timeout_s: float = 30.0
    max_participants: int = 500
    max_calls: int = 250
    max_call_s: float = 7200.0
    daily_budget_min: float = 0.0
    admin_token: str | None = None
    shutdown_grace_s: float = 20.0
    request_timeout_s: float = 30.0
    redis_url: str | None = None
    public_url: str | None = None
    node_id: str | None = None
    translation_engine: str = "auto"
    transcription_model: str = "gpt-4o-mini-transcribe"
    chat_model: str = "gpt-4o-mini"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "alloy"
    glossary_file: Path | None = None
    vad_start_threshold: float = 0.5
    vad_stop_threshold: float = 0.35
    vad_min_silence_ms: int = 500
    vad_min_speech_ms: int = 60
    max_utterance_s: float = 15.0
    playout_headroom_ms: int = 0
    upstream_timeout_s: float = 10.0
    upstream_max_retries: int = 2
    fallback_connect_failures: int = 3
    fallback_after_s: float = 10.0
    realtime_retry_s: float = 60.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_self_signed: bool = False
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl_s: float | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError(
                "TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither"
            )
        if self.tls_self_signed and self.tls_cert_file is not None:
            raise SettingsError(
                "TLS_SELF_SIGNED (--self-signed) and TLS_CERT_FILE exclude each "
                "other: use your certificate or a throwaway one, not both"
            )
        if bool(self.turn_urls) != bool(self.turn_secret):
            raise SettingsError(
                "TURN_URLS and TURN_SECRET go together: the server signs "
                "credentials for those URLs with that secret"
            )
        if self.turn_ttl_s is not None and not self.turn_secret:
            raise SettingsError("TURN_TTL_S is set but TURN_SECRET is not")
        if self.redis_url and not self.public_url:
            raise SettingsError(
                "PUBLIC_URL is missing: with REDIS_URL set, each node needs the "
                "address clients reach it at, for example https://node1.example.com"
            )
        if self.vad_stop_threshold > self.vad_start_threshold:
            raise SettingsError(
                f"VAD_STOP_THRESHOLD={self.vad_stop_threshold:g} is invalid: it "
                f"must not exceed VAD_START_THRESHOLD={self.vad_start_threshold:g}"
            )
        if self.max_utterance_s * 1000 < 2 * self.vad_min_silence_ms:
            raise SettingsError(
                f"MAX_UTTERANCE_S={self.max_utterance_s:g} is invalid: it must be "
                "at least twice VAD_MIN_SILENCE_MS"
            )
        if self.translation_engine in ("realtime", "pipeline") and not (
            self.translation_enabled
        ):
            raise SettingsError(
                f"TRANSLATION_ENGINE={self.translation_engine} needs OPENAI_API_KEY "
                "or OPENAI_BASE_URL"
            )

    @property
    def engine_choice(self) -> str:
        """The engine to run: `realtime`, `pipeline` or `off`.

        `auto` picks realtime when a key is set, the pipeline for a base URL
        without a key (a self-hosted server), and off otherwise.
        """
        if self.translation_engine != "auto":
            return self.translation_engine
        if self.openai_api_key:
            return "realtime"
        return "pipeline" if self.openai_base_url else "off"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_self_signed or self.tls_cert_file is not None

    @property
    def turn_credential_ttl_s(self) -> float:
        """Lifetime of the TURN credentials handed to a participant.

        This is TURN_TTL_S when set. Otherwise it covers an hour in the queue,
        the longest call and one reconnect grace period, because a TURN
        server rejects the refresh of an allocation whose credentials expired.
        """
        if self.turn_ttl_s is not None:
            return self.turn_ttl_s
        return TURN_QUEUE_ALLOWANCE_S + self.max_call_s + self.resume_grace_s

    @property
    def public_ws_url(self) -> str | None:
        """PUBLIC_URL as the WebSocket URL of this node's `/ws`."""
        if self.public_url is None:
            return None
        scheme, rest = self.public_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"

    @property
    def translation_enabled(self) -> bool:
        """Whether an upstream translation service is reachable with credentials.

        A base URL without a key is a self-hosted server that needs none.
        """
        return bool(self.openai_api_key) or bool(self.openai_base_url)

    @property
    def api_key_for_sdk(self) -> str:
        return self.openai_api_key or "no-key-required"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], env_file: Path | None = None
    ) -> Settings:
        """Build settings from `environ`, falling back to values in `env_file`.

        Variables set in the environment win over the file, except empty
        ones, which count as unset. Raises SettingsError naming the variable
        and its accepted values when one is invalid.
        """
        values = read_env_file(env_file)
        values.update({key: value for key, value in environ.items() if value.strip()})
        return cls._parse(values)

    @classmethod
    def _parse(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            return parse(name, raw)

        return cls(
            host=get("HOST", _text, cls.host),
            port=get("PORT", _int_range(1, 65535), cls.port),
            openai_api_key=get("OPENAI_API_KEY", _text, None),
            openai_base_url=get("OPENAI_BASE_URL", _url, None),
            translation_model=get("TRANSLATION_MODEL", _text, cls.translation_model),
            realtime_transcription_model=get(
                "REALTIME_TRANSCRIPTION_MODEL",
                _text,
                cls.realtime_transcription_model,
            ),
            cors_origins=get("CORS_ORIGINS", _origins, ()),
            log_level=get("LOG_LEVEL", _log_level, cls.log_level),
            max_message_bytes=get(
                "MAX_MESSAGE_BYTES", _int_range(256, 1024 * 1024), 65536
            ),
            caption_final_ms=get("CAPTION_FINAL_MS", _int_range(100, 60_000), 1000),
            ice_servers=get("ICE_SERVERS", _ice_servers, ()),
            resume_grace_s=get("RESUME_GRACE_S", _float_range(0.5, 3600), 30.0),
            media_timeout_s=get("MEDIA_TIMEOUT_S", _float_range(1, 600), 10.0),
            log_format=get("LOG_FORMAT", _choice("text", "json"), "text"),
            trusted_proxies=get("TRUSTED_PROXIES", _networks, ()),
            ws_connects_per_min=get("WS_CONNECTS_PER_MIN", _int_range(1, 100_000), 60),
            messages_per_s=get("MESSAGES_PER_S", _float_range(0.1, 10_000), 20.0),
            message_burst=get("MESSAGE_BURST", _int_range(1, 100_000), 40),
            idle_timeout_s=get("IDLE_TIMEOUT_S", _float_range(1, 3600), 30.0),
            max_participants=get("MAX_PARTICIPANTS", _int_range(2, 1_000_000), 500),
            max_calls=get("MAX_CALLS", _int_range(1, 500_000), 250),
            max_call_s=get("MAX_CALL_S", _float_range(1, 86_400), 7200.0),
            daily_budget_min=get("DAILY_BUDGET_MIN", _float_range(0, 1_440_000), 0.0),
            admin_token=get("ADMIN_TOKEN", _secret, None),
            shutdown_grace_s=get("SHUTDOWN_GRACE_S", _float_range(0, 3600), 20.0),
            request_timeout_s=get("REQUEST_TIMEOUT_S", _float_range(1, 600), 30.0),
            translation_engine=get(
                "TRANSLATION_ENGINE",
                _choice("auto", "realtime", "pipeline", "off"),
                cls.translation_engine,
            ),
            transcription_model=get(
                "TRANSCRIPTION_MODEL", _text, cls.transcription_model
            ),
            chat_model=get("CHAT_MODEL", _text, cls.chat_model),
            tts_model=get("TTS_MODEL", _text, cls.tts_model),
            tts_voice=get("TTS_VOICE", _text, cls.tts_voice),
            glossary_file=get("GLOSSARY_FILE", _glossary_file, None),
            vad_start_threshold=get(
                "VAD_START_THRESHOLD", _float_range(0.01, 0.99), 0.5
            ),
            vad_stop_threshold=get(
                "VAD_STOP_THRESHOLD", _float_range(0.01, 0.99), 0.35
            ),
            vad_min_silence_ms=get("VAD_MIN_SILENCE_MS", _int_range(100, 5000), 500),
            vad_min_speech_ms=get("VAD_MIN_SPEECH_MS", _int_range(0, 5000), 60),
            playout_headroom_ms=get("PLAYOUT_HEADROOM_MS", _int_range(0, 1000), 0),
            max_utterance_s=get("MAX_UTTERANCE_S", _float_range(2, 120), 15.0),
            upstream_timeout_s=get("UPSTREAM_TIMEOUT_S", _float_range(0.1, 600), 10.0),
            upstream_max_retries=get("UPSTREAM_MAX_RETRIES", _int_range(0, 10), 2),
            fallback_connect_failures=get(
                "FALLBACK_CONNECT_FAILURES", _int_range(1, 100), 3
            ),
            fallback_after_s=get("FALLBACK_AFTER_S", _float_range(1, 3600), 10.0),
            realtime_retry_s=get("REALTIME_RETRY_S", _float_range(1, 86_400), 60.0),
            redis_url=get("REDIS_URL", _redis_url, None),
            public_url=get("PUBLIC_URL", _url, None),
            node_id=get("NODE_ID", _node_id, None),
            tls_cert_file=get("TLS_CERT_FILE", _readable_file, None),
            tls_key_file=get("TLS_KEY_FILE", _readable_file, None),
            tls_self_signed=get("TLS_SELF_SIGNED", _boolean, False),
            turn_urls=get("TURN_URLS", _turn_urls, ()),
            turn_secret=get("TURN_SECRET", _secret, None),
            turn_ttl_s=get("TURN_TTL_S", _float_range(5, 30 * 86_400), None),
        )


SETTINGS_HELP: tuple[Setting, ...] = (
    Setting("HOST", "0.0.0.0", "address the HTTP server listens on"),
    Setting("PORT", "3000", "TCP port of the HTTP server"),
    Setting("OPENAI_API_KEY", "", "API key; without it translation is off"),
    Setting(
        "OPENAI_BASE_URL",
        "",
        "OpenAI-compatible API base URL, for example http://127.0.0.1:8000/v1",
    ),
    Setting("TRANSLATION_MODEL", "gpt-realtime-translate", "Realtime model"),
    Setting(
        "REALTIME_TRANSCRIPTION_MODEL",
        "gpt-realtime-whisper",
        "model that transcribes the speaker for the original-language captions",
    ),
    Setting(
        "CORS_ORIGINS",
        "",
        "comma-separated extra origins allowed to open /ws and read /api; * for any",
    ),
    Setting("LOG_LEVEL", "INFO", "one of " + ", ".join(LOG_LEVELS)),
    Setting("LOG_FORMAT", "text", "text, or json for one JSON object per line"),
    Setting(
        "MAX_MESSAGE_BYTES", "65536", "largest signaling message accepted", "bytes"
    ),
    Setting(
        "CAPTION_FINAL_MS",
        "1000",
        "time without new caption text before an utterance is final",
        "milliseconds",
    ),
    Setting(
        "ICE_SERVERS",
        "",
        'JSON list of STUN/TURN servers, as for RTCPeerConnection: [{"urls": ...}]; '
        "used by the page and by the server's own peers",
    ),
    Setting(
        "TURN_URLS",
        "",
        "comma-separated turn: or turns: URLs of a TURN server that shares "
        "TURN_SECRET, for example turn:turn.example.com:3478?transport=udp",
    ),
    Setting(
        "TURN_SECRET",
        "",
        "shared secret of the TURN server (coturn static-auth-secret); each "
        "participant gets its own time-limited credentials signed with it",
    ),
    Setting(
        "TURN_TTL_S",
        "",
        "lifetime of those credentials in seconds, 5 to 2592000 (30 days); "
        "unset: 3600 plus MAX_CALL_S plus RESUME_GRACE_S",
        "seconds",
    ),
    Setting("TLS_CERT_FILE", "", "PEM certificate (chain) for HTTPS and wss://"),
    Setting("TLS_KEY_FILE", "", "PEM private key of TLS_CERT_FILE"),
    Setting(
        "TLS_SELF_SIGNED",
        "false",
        "serve HTTPS with a throwaway self-signed certificate, for a test on a "
        "LAN (same as --self-signed); browsers warn about it",
    ),
    Setting(
        "RESUME_GRACE_S",
        "30",
        "time a dropped participant is held before the call ends",
        "seconds",
    ),
    Setting(
        "MEDIA_TIMEOUT_S",
        "10",
        "time without inbound audio before media counts as dropped",
        "seconds",
    ),
    Setting(
        "TRUSTED_PROXIES",
        "",
        "comma-separated proxy addresses or networks whose X-Forwarded-For is used",
    ),
    Setting(
        "WS_CONNECTS_PER_MIN",
        "60",
        "new WebSockets per client IP",
        "per minute",
    ),
    Setting(
        "MESSAGES_PER_S",
        "20",
        "signaling messages per connection",
        "per second",
    ),
    Setting(
        "MESSAGE_BURST",
        "40",
        "signaling messages a connection may send at once",
        "messages",
    ),
    Setting(
        "IDLE_TIMEOUT_S",
        "30",
        "time a WebSocket may stay open without join",
        "seconds",
    ),
    Setting("MAX_PARTICIPANTS", "500", "participants per process", "participants"),
    Setting("MAX_CALLS", "250", "calls per process", "calls"),
    Setting("MAX_CALL_S", "7200", "longest call", "seconds"),
    Setting(
        "DAILY_BUDGET_MIN",
        "0",
        "translated call time per client IP per day; 0 turns the budget off",
        "minutes",
    ),
    Setting("ADMIN_TOKEN", "", "bearer token for /api/sessions; unset turns it off"),
    Setting(
        "REQUEST_TIMEOUT_S",
        "30",
        "time a client has to send an HTTP request and a handler to answer it",
        "seconds",
    ),
    Setting(
        "SHUTDOWN_GRACE_S",
        "20",
        "time open calls may go on after SIGTERM before they are ended",
        "seconds",
    ),
    Setting(
        "REDIS_URL",
        "",
        "Redis shared by several nodes, redis://HOST:PORT/DB; unset runs alone",
    ),
    Setting(
        "PUBLIC_URL",
        "",
        "address clients reach this node at, used in redirects; needed with REDIS_URL",
    ),
    Setting("NODE_ID", "", "name of this node among several; random when unset"),
    Setting(
        "TRANSLATION_ENGINE",
        "auto",
        "realtime (falls back to pipeline), pipeline, off, or auto: realtime with "
        "a key, pipeline with only OPENAI_BASE_URL, off without either",
    ),
    Setting(
        "TRANSCRIPTION_MODEL",
        "gpt-4o-mini-transcribe",
        "pipeline engine: model of audio.transcriptions (whisper-1 works too)",
    ),
    Setting("CHAT_MODEL", "gpt-4o-mini", "pipeline engine: model that translates"),
    Setting("TTS_MODEL", "gpt-4o-mini-tts", "pipeline engine: model of audio.speech"),
    Setting("TTS_VOICE", "alloy", "pipeline engine: voice of audio.speech"),
    Setting(
        "GLOSSARY_FILE",
        "",
        "pipeline engine: UTF-8 text file of term translations added to the "
        "translation prompt (at most 64 KiB)",
    ),
    Setting(
        "VAD_START_THRESHOLD",
        "0.5",
        "Silero VAD speech probability (0.01 to 0.99) that starts an utterance",
    ),
    Setting(
        "VAD_STOP_THRESHOLD",
        "0.35",
        "speech probability below which audio counts as silence; at most the start",
    ),
    Setting(
        "VAD_MIN_SILENCE_MS",
        "500",
        "silence that ends an utterance",
        "milliseconds",
    ),
    Setting(
        "VAD_MIN_SPEECH_MS",
        "60",
        "speech an utterance needs to be sent, so that a click is not sent",
        "milliseconds",
    ),
    Setting(
        "PLAYOUT_HEADROOM_MS",
        "0",
        "most of the gaps that recurring late translated chunks leave that the "
        "listener's queue keeps against the next late one, for fewer gaps at a "
        "higher delay (200 is a start); 0 takes every gap back at the next "
        "silence",
        "milliseconds",
    ),
    Setting(
        "MAX_UTTERANCE_S",
        "15",
        "length after which an utterance is split at its quietest point",
        "seconds",
    ),
    Setting(
        "UPSTREAM_TIMEOUT_S",
        "10",
        "time one pipeline request may wait for the service before it is retried",
        "seconds",
    ),
    Setting(
        "UPSTREAM_MAX_RETRIES",
        "2",
        "retries of a request after a rate limit, timeout or server error",
        "retries",
    ),
    Setting(
        "FALLBACK_CONNECT_FAILURES",
        "3",
        "failed realtime connects in a row before a direction uses the pipeline",
        "connects",
    ),
    Setting(
        "FALLBACK_AFTER_S",
        "10",
        "time without a working realtime session before the pipeline takes over",
        "seconds",
    ),
    Setting(
        "REALTIME_RETRY_S",
        "60",
        "time between tries of the realtime engine while on the pipeline",
        "seconds",
    ),
)

assert {s.name.lower() for s in SETTINGS_HELP} == {f.name for f in fields(Settings)}, (
    "every setting needs a help entry"
)


class _WithoutParseWarnings(logging.Filter):
    """A logging filter that drops python-dotenv's own warning about a line it
    cannot parse, because env_file_warnings reports it once, after logging is
    set up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "could not parse" not in record.getMessage()


def read_env_file(env_file: Path | None) -> dict[str, str]:
    """Return the variables that `env_file` sets; none when there is no file."""
    if env_file is None or not env_file.is_file():
        return {}
    dotenv_logger = logging.getLogger("dotenv.main")
    quiet = _WithoutParseWarnings()
    dotenv_logger.addFilter(quiet)
    try:
        values = dotenv_values(env_file, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{env_file} could not be read as UTF-8 text: {exc}"
        ) from None
    finally:
        dotenv_logger.removeFilter(quiet)
    return {key: value for key, value in values.items() if value is not None}


def env_file_warnings(env_file: Path | None) -> list[str]:
    """Return a warning for each line of `env_file` that is ignored: one that
    cannot be parsed, or one that sets a name that is not a setting."""
    if env_file is None or not env_file.is_file():
        return []
    known = {setting.name for setting in SETTINGS_HELP}
    warnings = []
    with env_file.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                # The line itself may contain a secret, so only its number is shown.
                warnings.append(
                    f"{env_file} line {binding.original.line} could not be parsed "
                    "and is ignored: expected NAME=VALUE"
                )
            elif binding.key is not None and binding.key not in known:
                warnings.append(
                    f"{env_file} sets {binding.key}, which is not a setting "
                    "(see --help)"
                )
    return warnings


def env_example() -> str:
    """Return the text of `.env.example`: each setting, its default and unit."""
    lines = [
        "# Every setting of the server, with its default and unit. Copy to .env",
        "# and uncomment what you change; the environment wins over this file.",
        "# This file is made by `python -m server --env-example`.",
    ]
    for setting in SETTINGS_HELP:
        lines += [
            "",
            f"# {setting.help}",
            f"# default: {setting.default_text}",
            f"# {setting.name}={setting.default}",
        ]
    return "\n".join(lines) + "\n"


def _text(name: str, raw: str) -> str:
    return raw


def _int_range(low: int, high: int) -> Callable[[str, str], int]:
    return _number_range(int, low, high, "an integer")


def _float_range(low: float, high: float) -> Callable[[str, str], float]:
    return _number_range(float, low, high, "a number")


N = TypeVar("N", int, float)


def _number_range(
    convert: Callable[[str], N], low: N, high: N, kind: str
) -> Callable[[str, str], N]:
    def parse(name: str, raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise SettingsError(
                f"{name}={raw!r} is invalid: expected {kind} from "
                f"{_plain(low)} to {_plain(high)}"
            )
        return value

    return parse


def _plain(number: float) -> str:
    """Format a bound without an exponent: 2592000, not 2.592e+06."""
    return f"{number:.0f}" if float(number).is_integer() else f"{number:g}"


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = []
    for item in _csv(name, raw):
        if item != "*":
            parts = urlsplit(item)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            valid = (
                parts.scheme in ("http", "https")
                and bool(parts.netloc)
                and parts.path in ("", "/")
                and port_ok
            )
            if not valid:
                raise SettingsError(
                    f"{name} has an invalid origin {item!r}: expected * or "
                    "entries like https://example.com or http://localhost:8080"
                )
            item = item.rstrip("/")
        origins.append(item)
    return tuple(origins)


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise SettingsError(
                f"{name}={raw!r} is invalid: expected one of {', '.join(choices)}"
            )
        return value

    return parse


def _networks(name: str, raw: str) -> tuple[str, ...]:
    networks = []
    for item in _csv(name, raw):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(
                f"{name} has an invalid address or network {item!r}: expected "
                "entries like 10.0.0.1 or 10.0.0.0/8"
            ) from None
    return tuple(networks)


# A glossary goes into every translation prompt, so it must stay small.
MAX_GLOSSARY_BYTES = 64 * 1024


def _glossary_file(name: str, raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r} is invalid: no such file")
    size = path.stat().st_size
    if size > MAX_GLOSSARY_BYTES:
        raise SettingsError(
            f"{name}={raw!r} is invalid: {size} bytes is more than the "
            f"{MAX_GLOSSARY_BYTES} allowed"
        )
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{name}={raw!r} is invalid: it could not be read as UTF-8 text ({exc})"
        ) from None
    return path


def _readable_file(name: str, raw: str) -> Path:
    path = Path(raw)
    if path.exists() and not path.is_file():
        # Reading a FIFO blocks and reading /dev/zero never ends.
        raise SettingsError(f"{name}={raw!r} is invalid: not a regular file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SettingsError(f"{name}={raw!r} cannot be read: {reason}") from None
    return path


def _boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is invalid: expected true or false")


# STUN and TURN URIs (RFC 7064, RFC 7065): scheme, host, optional port, and
# for TURN an optional transport. IPv6 literals are left out because aiortc
# 1.16, which the server's own peers use, cannot parse them.
_ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\d{1,5}))?(?P<query>\?transport=(?P<transport>udp|tcp))?"
)


def _check_ice_url(name: str, url: object, schemes: tuple[str, ...]) -> str:
    match = _ICE_URL.fullmatch(url) if isinstance(url, str) else None
    valid = (
        match is not None
        and match["scheme"] in schemes
        and (match["port"] is None or 0 < int(match["port"]) < 65536)
        and not (match["query"] and match["scheme"].startswith("stun"))
        # aiortc skips turns: over UDP, which would need DTLS.
        and not (match["scheme"] == "turns" and match["transport"] == "udp")
    )
    if not valid:
        forms = " or ".join(f"{scheme}:HOST[:PORT]" for scheme in schemes)
        raise SettingsError(
            f"{name} has an invalid url {url!r}: expected {forms}, where HOST "
            "is a name or an IPv4 address and a turn: url may end with "
            "?transport=udp or ?transport=tcp (turns: only with tcp)"
        )
    assert isinstance(url, str)
    return url


def _turn_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = _csv(name, raw)
    for url in urls:
        _check_ice_url(name, url, ("turn", "turns"))
    return urls


def _secret(name: str, raw: str) -> str:
    if len(raw) < 16:
        raise SettingsError(f"{name} is too short: use at least 16 characters")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise SettingsError(
            f"{name} is invalid: it contains bytes that are not UTF-8 text"
        ) from None
    return raw


def _redis_url(name: str, raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            f"{name}={raw!r} is invalid: expected redis://HOST:PORT/DB or rediss://"
        )
    return raw


def _node_id(name: str, raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum() or len(raw) > 64:
        raise SettingsError(
            f"{name}={raw!r} is invalid: expected 1 to 64 of A-Z a-z 0-9 _ -"
        )
    return raw


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(
            f"{name}={raw!r} is invalid: expected an http:// or https:// URL"
        )
    return raw.rstrip("/")


def _csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"{name}={raw!r} is invalid: expected one of {', '.join(LOG_LEVELS)}"
        )
    return level


def _ice_servers(name: str, raw: str) -> tuple[dict[str, Any], ...]:
    hint = 'expected a JSON list like [{"urls": "stun:stun.example.org:3478"}]'
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise SettingsError(f"{name} is invalid JSON: {hint}") from None
    if not isinstance(value, list):
        raise SettingsError(f"{name} is invalid: {hint}")
    servers: list[dict[str, Any]] = []
    for entry in value:
        urls = entry.get("urls") if isinstance(entry, dict) else None
        url_list = [urls] if isinstance(urls, str) else urls
        if not isinstance(url_list, list) or not url_list:
            raise SettingsError(f"{name} has an entry without urls: {hint}")
        for url in url_list:
            _check_ice_url(name, url, ("stun", "stuns", "turn", "turns"))
        if any(url.startswith("turn") for url in url_list) and not (
            entry.get("username") and entry.get("credential")
        ):
            raise SettingsError(
                f"{name} has a turn: entry without username and credential, "
                "which browsers reject; use TURN_URLS with TURN_SECRET instead"
            )
        for key in ("username", "credential"):
            if key in entry and not isinstance(entry[key], str):
                raise SettingsError(f"{name}: {key} must be a string")
        servers.append(dict(entry))
    return tuple(servers)
