"""Config (SPEC §1, §1.1): precedence, environment names, reserved names, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agenthuman_local.config import ConfigError, Settings, config_keys
from agenthuman_local.config_sources import DEFAULT_CONFIG_PATH, load_settings, parse_set


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_built_in_defaults_match_the_spec_table() -> None:
    s = load_settings(environ={}, default_path=None)
    assert (s.host, s.port, s.public_url, s.data_dir) == ("127.0.0.1", 8080, None, Path("./data"))
    assert (s.rate_limit_per_minute, s.max_request_mb) == (600, 16.0)
    assert (s.session.max_duration_s, s.session.idle_timeout_s) == (None, None)
    assert (s.ws.connect_timeout_s, s.ws.reconnect_grace_s, s.ws.max_message_mb) == (60, 10, 10)
    assert (s.speech.silence_gap_ms, s.speech.max_buffer_s, s.video.fps) == (500, 30, 25)
    assert (s.devices.use_cuda, s.devices.cuda_sessions, s.devices.cpu_sessions) == (True, 16, 4)
    assert (s.engine.deterministic, s.engine.seed, s.recording.enabled) == (False, 0, True)
    assert s.daily.api_key is None and s.daily.api_url == "https://api.daily.co/v1"
    assert (s.daily.display_name, s.daily.empty_room_timeout_s) == ("AI Avatar (AH)", 30)
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.ws_base_url == "ws://127.0.0.1:8080"


def test_shipped_default_yaml_equals_the_built_in_defaults() -> None:
    assert load_settings(environ={}) == load_settings(environ={}, default_path=None)


def test_default_yaml_documents_every_key() -> None:
    lines = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").splitlines()
    section = ""
    seen = set()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([a-z_]+):", line)
        if not match:
            continue
        indent, name = match.groups()
        if not indent and line.rstrip().endswith(":"):
            section = name
            continue
        key = f"{section}.{name}" if indent else name
        assert lines[i - 1].strip().startswith("#"), f"{key} has no comment in default.yaml"
        seen.add(key)
    assert seen == set(config_keys())


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "port: 1000\nvideo:\n  fps: 30\nws:\n  reconnect_grace_s: 3\n")
    env = {"AGENTHUMAN_PORT": "2000", "AGENTHUMAN_VIDEO__FPS": "40"}
    s = load_settings(cfg, environ=env, overrides={"port": "3000"})
    assert s.port == 3000  # flag > env > file
    assert s.video.fps == 40  # env > file
    assert s.ws.reconnect_grace_s == 3  # file > default.yaml
    assert s.ws.connect_timeout_s == 60  # default.yaml


def test_env_names_and_types() -> None:
    env = {
        "AGENTHUMAN_HOST": "0.0.0.0",
        "AGENTHUMAN_SESSION__MAX_DURATION_S": "90",
        "AGENTHUMAN_DEVICES__USE_CUDA": "false",
        "AGENTHUMAN_DAILY__API_KEY": "secret",
        "AGENTHUMAN_PUBLIC_URL": "https://avatar.example.com/",
    }
    s = load_settings(environ=env)
    assert s.host == "0.0.0.0"
    assert s.session.max_duration_s == 90.0
    assert s.devices.use_cuda is False
    assert s.daily.api_key == "secret"
    assert s.base_url == "https://avatar.example.com"
    assert s.ws_base_url == "wss://avatar.example.com"


def test_env_null_resets_a_nullable_key(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "session:\n  max_duration_s: 60\n")
    s = load_settings(cfg, environ={"AGENTHUMAN_SESSION__MAX_DURATION_S": "null"})
    assert s.session.max_duration_s is None


def test_reserved_and_unrelated_env_names_are_ignored() -> None:
    env = {
        "AGENTHUMAN_API_KEY": "ah_live_x",
        "AGENTHUMAN_AVATAR": "avat_x",
        "AGENTHUMAN_NOT_A_KEY": "1",
        "AGENTHUMAN_VIDEO__NOPE": "1",
        "PORT": "1",
    }
    assert load_settings(environ=env) == load_settings(environ={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("nope: 1\n", "nope"),
        ("video:\n  nope: 1\n", "video.nope"),
        ("video: 25\n", "video"),
    ],
)
def test_unknown_keys_in_a_file_are_errors(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_settings(write(tmp_path / "c.yaml", text), environ={})


def test_unknown_set_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'video.nope'"):
        parse_set(["video.nope=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set(["video.fps"])
    assert parse_set(["video.fps=30", "daily.display_name=A=B"]) == {
        "video.fps": "30",
        "daily.display_name": "A=B",
    }


@pytest.mark.parametrize(
    ("layer", "key"),
    [
        ({"port": "http"}, "port"),
        ({"port": "70000"}, "port"),
        ({"video.fps": "5"}, "video.fps"),
        ({"video.fps": "25.5"}, "video.fps"),
        ({"devices.use_cuda": "maybe"}, "devices.use_cuda"),
        ({"log_level": "loud"}, "log_level"),
        ({"rate_limit_per_minute": "-1"}, "rate_limit_per_minute"),
        ({"public_url": "ftp://x"}, "public_url"),
        ({"ws.connect_timeout_s": "0"}, "ws.connect_timeout_s"),
    ],
)
def test_bad_values_name_the_key(layer: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_settings(environ={}, overrides=layer)


def test_bad_yaml_types_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'devices.use_cuda'"):
        load_settings(write(tmp_path / "c.yaml", "devices:\n  use_cuda: 'yes'\n"), environ={})
    with pytest.raises(ConfigError, match="'port'"):
        load_settings(write(tmp_path / "c.yaml", "port: true\n"), environ={})


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path / "c.yaml", "a: [\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path / "c.yaml", "- 1\n"), environ={})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("layer", "said"),
    [
        ({"port": "http"}, "expected an integer, got 'http'"),
        ({"video.fps": "25.5"}, "expected an integer, got '25.5'"),
        ({"ws.connect_timeout_s": "soon"}, "expected a number, got 'soon'"),
    ],
)
def test_a_number_that_is_not_one_says_what_was_expected(layer: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_settings(environ={}, overrides=layer)


def test_numbers_from_text_and_yaml_take_their_field_type(tmp_path: Path) -> None:
    s = load_settings(environ={}, overrides={"ws.connect_timeout_s": " 7 ", "port": "9001"})
    assert s.ws.connect_timeout_s == 7.0 and isinstance(s.ws.connect_timeout_s, float)
    assert s.port == 9001 and isinstance(s.port, int)
    s = load_settings(write(tmp_path / "c.yaml", "ws:\n  connect_timeout_s: 3\n"), environ={})
    assert s.ws.connect_timeout_s == 3.0 and isinstance(s.ws.connect_timeout_s, float)
