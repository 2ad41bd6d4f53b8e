"""Settings parsing and validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.config import SETTINGS_HELP, Settings, SettingsError


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.port == 3000
    assert settings.host == "0.0.0.0"
    assert settings.translation_model == "gpt-realtime-translate"
    assert settings.realtime_transcription_model == "gpt-realtime-whisper"
    assert settings.max_message_bytes == 65536
    assert settings.caption_final_ms == 1000
    assert settings.ice_servers == ()
    assert settings.translation_enabled is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "70000", "PORT='70000' is invalid: expected an integer from 1"),
        ("PORT", "abc", "PORT='abc' is invalid"),
        ("LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO"),
        ("OPENAI_BASE_URL", "ftp://x", "expected an http:// or https:// URL"),
        ("ICE_SERVERS", "{", "ICE_SERVERS is invalid JSON"),
        ("ICE_SERVERS", '[{"urls": "http://x"}]', "invalid url 'http://x'"),
        ("MAX_MESSAGE_BYTES", "10", "MAX_MESSAGE_BYTES='10' is invalid"),
        ("CORS_ORIGINS", "not a url", "invalid origin 'not a url'"),
        ("CORS_ORIGINS", "ftp://x", "invalid origin 'ftp://x'"),
        ("CORS_ORIGINS", "http://x:99999", "invalid origin 'http://x:99999'"),
        ("CORS_ORIGINS", "https://a.example/path", "invalid origin"),
    ],
)
def test_settings_invalid_value(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert expected in str(info.value)


def test_settings_parse_lists() -> None:
    settings = Settings.from_env(
        {
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "ICE_SERVERS": '[{"urls": ["stun:stun.example.org:3478"]}]',
        }
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.ice_servers == ({"urls": ["stun:stun.example.org:3478"]},)


def test_settings_env_file_below_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nLOG_LEVEL=debug\n")
    settings = Settings.from_env({"PORT": "5000"}, env_file)
    assert settings.port == 5000
    assert settings.log_level == "DEBUG"


def test_settings_base_url_without_key_enables_translation() -> None:
    settings = Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert settings.translation_enabled is True
    assert settings.api_key_for_sdk == "no-key-required"


def test_main_invalid_setting_exits_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=tmp_path,
        env={"PORT": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: PORT='0' is invalid: expected an integer from 1 to 65535"
    ]


def test_main_help_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name in ("PORT", "OPENAI_API_KEY", "ICE_SERVERS", "CAPTION_FINAL_MS"):
        assert name in result.stdout


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    for setting in SETTINGS_HELP:
        assert f"# {setting.name}=" in text, setting.name


def test_main_missing_env_file_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--env-file", "missing.env"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--env-file 'missing.env' was not found" in result.stderr


def test_settings_cors_origins_normalized() -> None:
    settings = Settings.from_env({"CORS_ORIGINS": "https://a.example/, *"})
    assert settings.cors_origins == ("https://a.example", "*")
