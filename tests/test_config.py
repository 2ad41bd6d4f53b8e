"""Settings parsing and validation."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from server.config import (
    SETTINGS_HELP,
    Settings,
    SettingsError,
    env_example,
    env_file_warnings,
)
from tests.support.netns import assert_loopback_only
from tests.support.services import ROOT, free_port, run_server_to_exit


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
    assert settings.playout_headroom_ms == 0


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
        ("PLAYOUT_HEADROOM_MS", "1001", "expected an integer from 0 to 1000"),
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
    result = run_server_to_exit(cwd=tmp_path, env={"PORT": "0"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: PORT='0' is invalid: expected an integer from 1 to 65535"
    ]


def test_main_help_lists_every_setting_with_default() -> None:
    result = run_server_to_exit("--help")
    # argparse wraps nothing in the epilog, so each setting is one line.
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line}
    for setting in SETTINGS_HELP:
        assert setting.name in lines, setting.name
        assert lines[setting.name].endswith(f"(default: {setting.default_text})")
    assert "--self-signed" in result.stdout


def test_env_example_is_generated_from_the_settings() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "run: python -m server --env-example > .env.example"
    for setting in SETTINGS_HELP:
        assert f"# {setting.name}={setting.default}\n" in text, setting.name
    assert "# default: 30 seconds\n# RESUME_GRACE_S=30\n" in text
    assert "# default: 65536 bytes\n# MAX_MESSAGE_BYTES=65536\n" in text


def test_tls_and_turn_settings_checked() -> None:
    cases = {
        "TURN_URLS and TURN_SECRET go together": {"TURN_URLS": "turn:127.0.0.1"},
        "TURN_TTL_S is set but TURN_SECRET is not": {"TURN_TTL_S": "60"},
        "TURN_SECRET is too short": {
            "TURN_URLS": "turn:127.0.0.1",
            "TURN_SECRET": "short",
        },
        "TURN_URLS has an invalid url 'stun:127.0.0.1'": {
            "TURN_URLS": "turn:127.0.0.1,stun:127.0.0.1"
        },
        "TURN_URLS has an invalid url 'turn:'": {
            "TURN_URLS": "turn:",
            "TURN_SECRET": "0123456789abcdef",
        },
        "TURN_URLS has an invalid url 'turn:a.example?transport=sctp'": {
            "TURN_URLS": "turn:a.example?transport=sctp",
            "TURN_SECRET": "0123456789abcdef",
        },
        "TURN_URLS has an invalid url 'turn:a.example:70000'": {
            "TURN_URLS": "turn:a.example:70000",
            "TURN_SECRET": "0123456789abcdef",
        },
        "ICE_SERVERS has an invalid url 'stun:'": {
            "ICE_SERVERS": '[{"urls": "stun:"}]'
        },
        "ICE_SERVERS has an invalid url 'stun:a?transport=udp'": {
            "ICE_SERVERS": '[{"urls": "stun:a?transport=udp"}]'
        },
        "TURN_URLS has an invalid url 'turn:[::1]:3478'": {
            "TURN_URLS": "turn:[::1]:3478",
            "TURN_SECRET": "0123456789abcdef",
        },
        "TURN_URLS has an invalid url 'turns:a.example?transport=udp'": {
            "TURN_URLS": "turns:a.example?transport=udp",
            "TURN_SECRET": "0123456789abcdef",
        },
        "ICE_SERVERS has a turn: entry without username and credential": {
            "ICE_SERVERS": '[{"urls": "turn:a.example:3478", "username": "u"}]'
        },
        "TURN_SECRET is invalid: it contains bytes that are not UTF-8 text": {
            "TURN_URLS": "turn:a.example",
            "TURN_SECRET": "0123456789abcdef\udcff",
        },
        "TLS_CERT_FILE='/dev/zero' is invalid: not a regular file": {
            "TLS_CERT_FILE": "/dev/zero",
            "TLS_KEY_FILE": "/dev/zero",
        },
        "TLS_SELF_SIGNED='maybe' is invalid": {"TLS_SELF_SIGNED": "maybe"},
        "TURN_TTL_S='1' is invalid": {
            "TURN_URLS": "turn:127.0.0.1",
            "TURN_SECRET": "0123456789abcdef",
            "TURN_TTL_S": "1",
        },
    }
    for message, env in cases.items():
        with pytest.raises(SettingsError, match=re.escape(message)):
            Settings.from_env(env)
    settings = Settings.from_env(
        {
            "TURN_URLS": " turn:a.example:3478?transport=udp , turns:a.example:5349 ",
            "TURN_SECRET": "0123456789abcdef",
            "TLS_SELF_SIGNED": "yes",
        }
    )
    assert settings.turn_urls == (
        "turn:a.example:3478?transport=udp",
        "turns:a.example:5349",
    )
    assert settings.tls_enabled


def test_console_script_is_declared() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["callbridge"] == "server.__main__:main"


def test_main_missing_env_file_is_an_error(tmp_path: Path) -> None:
    result = run_server_to_exit("--env-file", "missing.env", cwd=tmp_path)
    assert result.returncode == 2
    assert "--env-file 'missing.env' was not found" in result.stderr


def test_settings_cors_origins_normalized() -> None:
    settings = Settings.from_env({"CORS_ORIGINS": "https://a.example/, *"})
    assert settings.cors_origins == ("https://a.example", "*")


def test_console_script_starts_the_same_program() -> None:
    script = Path(sys.executable).parent / "callbridge"
    if not script.exists():
        pytest.skip(
            "the project is not installed in this environment (pip install -e .)"
        )
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith("usage: callbridge")
    assert "TURN_SECRET" in result.stdout


def test_empty_variable_leaves_env_file_value(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nOPENAI_API_KEY=sk-file\n")
    settings = Settings.from_env({"PORT": "", "OPENAI_API_KEY": " "}, env_file)
    assert settings.port == 4000
    assert settings.openai_api_key == "sk-file"


def test_range_error_has_no_exponent() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "TURN_URLS": "turn:a",
                "TURN_SECRET": "0123456789abcdef",
                "TURN_TTL_S": "4",
            }
        )
    assert str(raised.value) == (
        "TURN_TTL_S='4' is invalid: expected a number from 5 to 2592000"
    )


def test_ignored_env_file_lines_are_warned_once(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PROT=4000\nnot valid sk-secret\nHOST=127.0.0.1\n")
    assert env_file_warnings(tmp_path / ".env") == [
        f"{tmp_path / '.env'} sets PROT, which is not a setting (see --help)",
        f"{tmp_path / '.env'} line 2 could not be parsed and is ignored: "
        "expected NAME=VALUE",
    ]
    # A port in use makes the server stop right after its start-up warnings.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_server_to_exit(cwd=tmp_path, env={"PORT": port})
    assert result.returncode == 1
    assert ".env sets PROT, which is not a setting (see --help)" in result.stderr
    # Once, from the server: python-dotenv's own warning is left out.
    assert result.stderr.count("could not be parsed") == 1
    assert "could not parse" not in result.stderr
    assert "sk-secret" not in result.stderr
    assert "HOST" not in result.stderr.split("cannot listen")[0]


def test_main_env_file_folder_is_an_error(tmp_path: Path) -> None:
    result = run_server_to_exit("--env-file", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == f"error: --env-file '{tmp_path}' is a folder\n"


def test_main_help_names_the_module_command() -> None:
    result = run_server_to_exit("--help")
    assert result.stdout.startswith("usage: python -m server")


def test_env_file_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"TURN_SECRET=abc\xff\xfe0123456789abcdef\n")
    result = run_server_to_exit(cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: .env could not be read as UTF-8 text")


def test_listening_on_every_interface_names_localhost(tmp_path: Path) -> None:
    # The server binds 0.0.0.0 here, which must reach loopback only.
    assert_loopback_only()
    port = str(free_port())
    log_file = tmp_path / "server.log"
    expected = (
        f"listening on http://0.0.0.0:{port} on every interface; on this machine, "
        f"open http://localhost:{port}/"
    )
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT), "HOST": "0.0.0.0", "PORT": port},
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 20
        while expected not in log_file.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log_file.read_text()
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert expected in log_file.read_text()
