"""The session WebSocket's wire format (SPEC §8): names, client commands, server events, header.

Pure: no I/O, no aiohttp. Client text messages are parsed into typed commands here, so the
handler and the runner never look at raw JSON; every rejection is a `ProtocolError` whose code is
the `error` event's `code`. Server events are built by the `*_event` functions, which are the only
place their field names are spelled.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from agenthuman_local import jsonsafe
from agenthuman_local.audio import MAX_RATE_HZ, MIN_RATE_HZ, SAMPLE_RATE_HZ
from agenthuman_local.jsonsafe import DEFAULT_LIMITS, JsonLimits

# Client → server.
SESSION_INIT = "session.init"
AGENT_SPEAK = "agent.speak"
AGENT_SPEAK_END = "agent.speak_end"
AGENT_INTERRUPT = "agent.interrupt"
AGENT_START_LISTENING = "agent.start_listening"
AGENT_STOP_LISTENING = "agent.stop_listening"
SESSION_KEEP_ALIVE = "session.keep_alive"

# Server → client.
CONNECTION_ESTABLISHED = "connection.established"
AGENT_SPEAK_CONFIRMED = "agent.speak.confirmed"
AGENT_SPEAK_STARTED = "agent.speak_started"
AGENT_SPEAK_ENDED = "agent.speak_ended"
AGENT_INTERRUPT_CONFIRMED = "agent.interrupt.confirmed"
SESSION_KEEP_ALIVE_ACK = "session.keep_alive.ack"
SESSION_STATE = "session.state"
ERROR = "error"

# Close codes (SPEC §8), checked for a bad first message in this order: 4002, 4004, 4001, 4003,
# 4009 — a wrong token never learns the session's state.
CLOSE_REPLACED = 4000
CLOSE_BAD_TOKEN = 4001
CLOSE_PROTOCOL = 4002
CLOSE_NOT_STARTED = 4003
CLOSE_UNKNOWN_SESSION = 4004
CLOSE_NO_CAPACITY = 4005  # session.init asked for a size and fps its device has no room for
CLOSE_ENDED = 4009

# `error` event codes.
E_INVALID_JSON = "INVALID_JSON"
E_UNKNOWN_TYPE = "UNKNOWN_TYPE"
E_INVALID_AUDIO = "INVALID_AUDIO"
E_ODD_BYTE_COUNT = "ODD_BYTE_COUNT"
E_INVALID_SAMPLE_RATE = "INVALID_SAMPLE_RATE"
E_VALIDATION = "VALIDATION_ERROR"
E_BUFFER_FULL = "BUFFER_FULL"
E_RATE_LIMITED = "RATE_LIMITED"  # past ws.max_messages_per_s: read more slowly, nothing dropped
E_PROTOCOL = "PROTOCOL_ERROR"
E_SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
E_UNAUTHORIZED = "UNAUTHORIZED"
E_NOT_STARTED = "SESSION_NOT_STARTED"
E_SESSION_ENDED = "SESSION_ENDED"
E_RENDER_FAILED = "RENDER_FAILED"  # an error event: the renderer raised, the session goes on
E_MEDIA_FAILED = "MEDIA_FAILED"  # the avatar could not be loaded at session.init (then 1011)
E_INVALID_VIDEO_SIZE = "INVALID_VIDEO_SIZE"  # past video.max_pixels / video.max_fps (then 4002)
E_NO_CAPACITY = "NO_CAPACITY"  # the size and fps do not fit the session's device (then 4005)

# `session.state` states of the room (the session's own end is `ended`).
STATE_CONNECTING = "connecting"
STATE_JOINED_ROOM = "joined_room"
STATE_ROOM_ERROR = "room_error"

FIRST_MESSAGE_MUST_BE_INIT = "First message must be session.init"

MIN_SAMPLE_RATE_HZ = MIN_RATE_HZ
MAX_SAMPLE_RATE_HZ = MAX_RATE_HZ
DEFAULT_SAMPLE_RATE_HZ = SAMPLE_RATE_HZ
MIN_SIDE_PX = 128
MAX_SIDE_PX = 1920
MIN_FPS = 10
MAX_FPS = 60

# Binary output messages: `kind u8, reserved u8[3], pts_ms u64, frame_index u32`, little-endian,
# 16 bytes, then the payload: a JPEG (kind 1), PCM s16le mono at the session's sample rate
# (kind 2), or raw RGB24 (kind 3): width·height·3 bytes, rows top to bottom, no padding, at the
# size of `connection.established.video`.
MEDIA_HEADER = struct.Struct("<B3xQI")
MEDIA_HEADER_BYTES = MEDIA_HEADER.size
KIND_VIDEO_JPEG = 1
KIND_AUDIO_PCM = 2
KIND_VIDEO_RGB24 = 3
KIND_VIDEO_JPEG_PATCH = 4  # the viewer page only: a JPEG of what changed (transports.patches)


class ProtocolError(Exception):
    """A client message that is answered with an `error` event (and skipped)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class OutputOptions:
    """What `output` asks the server to send back over the socket."""

    video_jpeg: bool = False
    audio: bool = False
    video_rgb24: bool = False  # raw frames, for clients on the same machine


@dataclass(frozen=True)
class SessionInit:
    session_id: str
    token: str
    era: str  # "B" (fields under `config`) or "C" (fields at the top level)
    room: dict[str, Any] | None = None
    video_width: int | None = None
    video_height: int | None = None
    fps: int | None = None
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ
    output: OutputOptions = OutputOptions()


@dataclass(frozen=True)
class Speak:
    """PCM s16le mono bytes at `sample_rate_hz` (from base64 `agent.speak` or a binary frame)."""

    pcm: bytes
    sample_rate_hz: int


@dataclass(frozen=True)
class SpeakEnd:
    pass


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Listening:
    active: bool


@dataclass(frozen=True)
class KeepAlive:
    pass


Command = SessionInit | Speak | SpeakEnd | Interrupt | Listening | KeepAlive


def _load_object(text: str | bytes, limits: JsonLimits) -> dict[str, Any]:
    try:
        obj = jsonsafe.loads(text, limits)  # NaN, Infinity, 1e999: not JSON, as in REST
    except jsonsafe.JsonTooDeep as exc:
        message = f"Message nests deeper than {limits.max_depth} levels"
        raise ProtocolError(E_INVALID_JSON, message) from exc
    except jsonsafe.JsonTooBig as exc:
        message = f"Message has more than {limits.max_items} JSON values"
        raise ProtocolError(E_INVALID_JSON, message) from exc
    except ValueError as exc:  # UnicodeDecodeError too
        raise ProtocolError(E_INVALID_JSON, "Message is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(E_INVALID_JSON, "Message must be a JSON object")
    return obj


def _int_field(
    src: dict[str, Any], name: str, lo: int, hi: int, *, even: bool = False
) -> int | None:
    value = src.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(E_VALIDATION, f"{name} must be an integer {lo}-{hi}")
    if even and value % 2:
        raise ProtocolError(E_VALIDATION, f"{name} must be even")
    return value


def check_sample_rate(value: Any) -> int:
    if value is None:
        return DEFAULT_SAMPLE_RATE_HZ
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(E_INVALID_SAMPLE_RATE, "sample_rate must be an integer")
    if not MIN_SAMPLE_RATE_HZ <= value <= MAX_SAMPLE_RATE_HZ:
        raise ProtocolError(
            E_INVALID_SAMPLE_RATE,
            f"sample_rate {value} is out of range {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ}",
        )
    return value


def _output(value: Any) -> OutputOptions:
    if value is None:
        return OutputOptions()
    if not isinstance(value, dict):
        raise ProtocolError(E_VALIDATION, "output must be an object")
    video = value.get("video")
    if video not in (None, False, "jpeg", "rgb24"):
        raise ProtocolError(E_VALIDATION, 'output.video must be "jpeg", "rgb24" or null')
    audio = value.get("audio", False)
    if not isinstance(audio, bool):
        raise ProtocolError(E_VALIDATION, "output.audio must be true or false")
    return OutputOptions(video_jpeg=video == "jpeg", audio=audio, video_rgb24=video == "rgb24")


def parse_init(text: str | bytes, *, limits: JsonLimits = DEFAULT_LIMITS) -> SessionInit:
    """The first message. Raises `ProtocolError` (close 4002) for anything but a valid init."""
    try:
        obj = _load_object(text, limits)
    except ProtocolError as exc:
        raise ProtocolError(E_PROTOCOL, FIRST_MESSAGE_MUST_BE_INIT) from exc
    if obj.get("type") != SESSION_INIT:
        raise ProtocolError(E_PROTOCOL, FIRST_MESSAGE_MUST_BE_INIT)
    config = obj.get("config")
    if isinstance(config, dict):
        era, src = "B", config
    else:
        era, src = "C", obj
    session_id = src.get("session_id")
    token = src.get("access_token", src.get("session_token"))
    if not isinstance(session_id, str) or not session_id:
        raise ProtocolError(E_PROTOCOL, "session.init needs session_id")
    if not isinstance(token, str) or not token:
        raise ProtocolError(E_PROTOCOL, "session.init needs access_token or session_token")
    room = src.get("room")
    if room is not None and not isinstance(room, dict):
        raise ProtocolError(E_PROTOCOL, "room must be an object")
    try:
        return SessionInit(
            session_id=session_id,
            token=token,
            era=era,
            room=room,
            video_width=_int_field(src, "video_width", MIN_SIDE_PX, MAX_SIDE_PX, even=True),
            video_height=_int_field(src, "video_height", MIN_SIDE_PX, MAX_SIDE_PX, even=True),
            fps=_int_field(src, "fps", MIN_FPS, MAX_FPS),
            sample_rate_hz=check_sample_rate(src.get("sample_rate")),
            output=_output(src.get("output")),
        )
    except ProtocolError as exc:
        raise ProtocolError(E_PROTOCOL, exc.message) from exc


def check_pcm(pcm: bytes) -> bytes:
    if len(pcm) % 2:
        raise ProtocolError(E_ODD_BYTE_COUNT, f"PCM s16le needs an even byte count, got {len(pcm)}")
    return pcm


def parse_text(text: str | bytes, *, limits: JsonLimits = DEFAULT_LIMITS) -> Command:
    """A text message after `session.init`. Raises `ProtocolError` naming the problem; JSON
    past `limits` (`http.max_json_depth`, `http.max_json_items`) is INVALID_JSON."""
    obj = _load_object(text, limits)
    kind = obj.get("type")
    if kind == AGENT_SPEAK:
        audio = obj.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError(E_INVALID_AUDIO, "agent.speak needs audio (base64 PCM s16le)")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(E_INVALID_AUDIO, "audio is not valid base64") from exc
        return Speak(check_pcm(pcm), check_sample_rate(obj.get("sample_rate")))
    if kind == AGENT_SPEAK_END:
        return SpeakEnd()
    if kind == AGENT_INTERRUPT:
        return Interrupt()
    if kind == AGENT_START_LISTENING:
        return Listening(True)
    if kind == AGENT_STOP_LISTENING:
        return Listening(False)
    if kind == SESSION_KEEP_ALIVE:
        return KeepAlive()
    if kind == SESSION_INIT:
        return parse_init(text, limits=limits)
    raise ProtocolError(E_UNKNOWN_TYPE, f"Unknown message type {kind!r}")


def parse_binary(data: bytes, sample_rate_hz: int) -> Speak:
    return Speak(check_pcm(data), sample_rate_hz)


# --- server events ---------------------------------------------------------------------------


def connection_established(
    session_id: str, *, resumed: bool, width: int, height: int, fps: int
) -> dict[str, Any]:
    return {
        "type": CONNECTION_ESTABLISHED,
        "session_id": session_id,
        "resumed": resumed,
        "video": {"width": width, "height": height, "fps": fps},
    }


def speak_confirmed(
    audio_samples: int, buffered_ms: int, utterance_id: str | None
) -> dict[str, Any]:
    return {
        "type": AGENT_SPEAK_CONFIRMED,
        "audio_samples": audio_samples,
        "buffered_ms": buffered_ms,
        "utterance_id": utterance_id,
    }


def speak_started(utterance_id: str, pts_ms: int) -> dict[str, Any]:
    return {"type": AGENT_SPEAK_STARTED, "utterance_id": utterance_id, "pts_ms": pts_ms}


def speak_ended(
    utterance_id: str, played_ms: int, *, interrupted: bool, pts_ms: int
) -> dict[str, Any]:
    return {
        "type": AGENT_SPEAK_ENDED,
        "utterance_id": utterance_id,
        "played_ms": played_ms,
        "interrupted": interrupted,
        "pts_ms": pts_ms,
    }


def interrupt_confirmed(
    utterance_id: str | None, played_ms: int, dropped_ms: int
) -> dict[str, Any]:
    return {
        "type": AGENT_INTERRUPT_CONFIRMED,
        "utterance_id": utterance_id,
        "played_ms": played_ms,
        "dropped_ms": dropped_ms,
    }


def keep_alive_ack() -> dict[str, Any]:
    return {"type": SESSION_KEEP_ALIVE_ACK}


def session_state(state: str, reason: str | None = None) -> dict[str, Any]:
    return {"type": SESSION_STATE, "state": state, "reason": reason}


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": ERROR, "code": code, "error": message}


def pack_media(kind: int, pts_ms: int, frame_index: int, payload: bytes) -> bytes:
    return MEDIA_HEADER.pack(kind, pts_ms, frame_index) + payload


def unpack_media(message: bytes) -> tuple[int, int, int, bytes]:
    """→ (kind, pts_ms, frame_index, payload)."""
    kind, pts_ms, frame_index = MEDIA_HEADER.unpack_from(message)
    return kind, pts_ms, frame_index, message[MEDIA_HEADER_BYTES:]
