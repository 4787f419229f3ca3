"""Settings: the typed config of SPEC §1.1: its sections and keys, their defaults, and the
range each value must fall in.

How one is built from the defaults, YAML files, the environment and flags is `config_sources`.
Every error names the key. There is no module-level settings object: `create_app(settings)`
takes one and handlers reach it through the app.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A config key is unknown or its value is bad; the message names the key."""


@dataclass(frozen=True)
class SessionSettings:
    max_duration_s: float | None = None
    idle_timeout_s: float | None = None
    max_metadata_kb: float = 16.0


@dataclass(frozen=True)
class WsSettings:
    connect_timeout_s: float = 60.0
    reconnect_grace_s: float = 10.0
    max_message_mb: float = 10.0
    # Messages per second one socket may send (bursts up to twice that); past it the server
    # reads that socket more slowly and says RATE_LIMITED once. 0 = no bound.
    max_messages_per_s: float = 200.0


@dataclass(frozen=True)
class HttpSettings:
    """Bounds on what one HTTP request may cost before any handler logic runs (issue 12)."""

    # A connection whose request headers are not complete this many seconds after it opened
    # (or after the first byte of its next request) is closed: half-sent or silent ones.
    idle_timeout_s: float = 15.0
    # An idle keep-alive connection (a response sent, nothing of the next request yet) is
    # closed after this many seconds: longer than clients keep theirs (aiohttp's 15 s), so the
    # client closes first and never reuses a connection the server is closing.
    keepalive_timeout_s: float = 75.0
    # Open connections at most (HTTP and WebSocket), and never more than half of what the
    # open-file limit leaves after one listen backlog. At the cap the oldest idle connection
    # (or socket still waiting for session.init) is closed to make room; when none is idle,
    # the new one gets 503 UNAVAILABLE and is closed.
    max_connections: int = 1024
    # A request body that sends nothing for this long is refused (408).
    body_timeout_s: float = 30.0
    # Most parts in a multipart body, or fields in a urlencoded one.
    max_form_parts: int = 16
    # Most levels of nested arrays and objects in a JSON body (and a WebSocket message).
    max_json_depth: int = 32
    # Most values (counted as `,` `[` `{`, before decoding) in a JSON body or socket message.
    max_json_items: int = 10_000
    # Largest JSON body, in KB, of a route that takes no image (POST /v1/sessions); a larger
    # Content-Length is refused (413) before a byte of the body is read.
    max_json_kb: float = 256.0


@dataclass(frozen=True)
class UploadSettings:
    # Let image_url fetch loopback, private and link-local addresses (tests; a LAN set-up).
    allow_private_urls: bool = False
    # Most pixels an uploaded image may declare, checked before it is decoded.
    max_megapixels: float = 25.0
    # Uploads processed at once; more wait their turn.
    max_concurrent: int = 2


@dataclass(frozen=True)
class SpeechSettings:
    silence_gap_ms: int = 500
    max_buffer_s: float = 30.0


@dataclass(frozen=True)
class VideoSettings:
    fps: int = 25
    # Bounds on what `session.init` may ask for (issue 12): frame area in pixels and fps.
    max_pixels: int = 1920 * 1080
    max_fps: int = 60


@dataclass(frozen=True)
class DevicesSettings:
    use_cuda: bool = True
    cuda_sessions: int = 16
    cpu_sessions: int = 4


@dataclass(frozen=True)
class EngineSettings:
    deterministic: bool = False
    seed: int = 0
    # Load the engine in the background at start-up; tests that never render set this off.
    preload: bool = True
    # Neural plug-ins (SPEC §9), one folder each; see models/README.md.
    models_dir: Path = Path("./models")
    # One memory budget for the engine's caches: per-size assets and the feature tiles.
    cache_mb: int = 512


@dataclass(frozen=True)
class RecordingSettings:
    enabled: bool = True


@dataclass(frozen=True)
class DailySettings:
    api_key: str | None = None
    api_url: str = "https://api.daily.co/v1"
    display_name: str = "AI Avatar (AH)"
    empty_room_timeout_s: float = 30.0


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    data_dir: Path = Path("./data")
    log_level: str = "info"
    rate_limit_per_minute: int = 600
    max_request_mb: float = 16.0
    session: SessionSettings = field(default_factory=SessionSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    upload: UploadSettings = field(default_factory=UploadSettings)
    ws: WsSettings = field(default_factory=WsSettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    video: VideoSettings = field(default_factory=VideoSettings)
    devices: DevicesSettings = field(default_factory=DevicesSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    daily: DailySettings = field(default_factory=DailySettings)

    @property
    def base_url(self) -> str:
        """`public_url`, or `http://{host}:{port}` when unset, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def ws_base_url(self) -> str:
        base = self.base_url
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :]
        return "ws://" + base[len("http://") :] if base.startswith("http://") else base


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Checks beyond the type: key -> (predicate, what a good value looks like).
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "port": (lambda v: 0 <= v <= 65535, "an integer 0-65535"),
    "log_level": (lambda v: v in _LOG_LEVELS, "one of " + ", ".join(_LOG_LEVELS)),
    "rate_limit_per_minute": (lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    "max_request_mb": (lambda v: v > 0, "a number > 0"),
    "public_url": (
        lambda v: v is None or v.startswith(("http://", "https://")),
        "an http:// or https:// URL",
    ),
    "session.max_duration_s": (lambda v: v is None or v > 0, "null or a number > 0"),
    "session.idle_timeout_s": (lambda v: v is None or v > 0, "null or a number > 0"),
    "session.max_metadata_kb": (lambda v: v > 0, "a number > 0"),
    "http.idle_timeout_s": (lambda v: v > 0, "a number > 0"),
    "http.keepalive_timeout_s": (lambda v: v > 0, "a number > 0"),
    "http.max_connections": (lambda v: v >= 1, "an integer >= 1"),
    "http.body_timeout_s": (lambda v: v > 0, "a number > 0"),
    "http.max_form_parts": (lambda v: v >= 1, "an integer >= 1"),
    "http.max_json_depth": (lambda v: 1 <= v <= 500, "an integer 1-500"),
    "http.max_json_items": (lambda v: v >= 1, "an integer >= 1"),
    "http.max_json_kb": (lambda v: v > 0, "a number > 0"),
    "upload.max_megapixels": (lambda v: v > 0, "a number > 0"),
    "upload.max_concurrent": (lambda v: v >= 1, "an integer >= 1"),
    "ws.max_messages_per_s": (lambda v: v >= 0, "a number >= 0 (0 = no bound)"),
    "ws.connect_timeout_s": (lambda v: v > 0, "a number > 0"),
    "ws.reconnect_grace_s": (lambda v: v >= 0, "a number >= 0"),
    "ws.max_message_mb": (lambda v: v > 0, "a number > 0"),
    "speech.silence_gap_ms": (lambda v: v > 0, "an integer > 0"),
    "speech.max_buffer_s": (lambda v: v > 0, "a number > 0"),
    "video.fps": (lambda v: 10 <= v <= 60, "an integer 10-60"),
    "video.max_pixels": (lambda v: 128 * 128 <= v <= 1920 * 1920, "an integer 16384-3686400"),
    "video.max_fps": (lambda v: 10 <= v <= 60, "an integer 10-60"),
    "engine.cache_mb": (lambda v: v >= 16, "an integer >= 16"),
    "devices.cuda_sessions": (lambda v: v >= 0, "an integer >= 0"),
    "devices.cpu_sessions": (lambda v: v >= 0, "an integer >= 0"),
    "daily.api_url": (lambda v: v.startswith(("http://", "https://")), "an http(s) URL"),
    "daily.empty_room_timeout_s": (lambda v: v > 0, "a number > 0"),
}


def check_value(key: str, value: Any) -> None:
    """ConfigError naming `key` when `value`, already of the key's type, is out of its range."""
    check = _CHECKS.get(key)
    if check and not check[0](value):
        raise ConfigError(f"config key '{key}': bad value {value!r}, expected {check[1]}")


def field_types(cls: Any) -> dict[str, Any]:
    """{field name: type} of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def section_types() -> dict[str, Any]:
    """{section name: its dataclass}, e.g. `"ws": WsSettings`."""
    return {name: tp for name, tp in field_types(Settings).items() if dataclasses.is_dataclass(tp)}


def config_keys() -> list[str]:
    """Every dotted key, in declaration order (used by the docs test and `--set` help)."""
    keys: list[str] = []
    for name, tp in field_types(Settings).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(f"{name}.{sub}" for sub in field_types(tp))
        else:
            keys.append(name)
    return keys
