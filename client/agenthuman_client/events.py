"""Every server → client message of the session socket (SPEC §8), typed.

`parse_event(obj)` maps a JSON text message to one of the dataclasses below; an unknown
`type` becomes `UnknownEvent`, so a newer server never breaks an older client. `SocketClosed`
and `SocketResumed` are the client's own: the socket went away (and will not come back), or it
came back within the server's reconnect grace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConnectionEstablished:
    session_id: str
    resumed: bool
    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class SpeakConfirmed:
    audio_samples: int  # at 16 kHz, as hosted
    buffered_ms: int
    utterance_id: str | None


@dataclass(frozen=True)
class SpeakStarted:
    utterance_id: str
    pts_ms: int  # pts of the utterance's first frame


@dataclass(frozen=True)
class SpeakEnded:
    utterance_id: str
    played_ms: int
    interrupted: bool
    pts_ms: int | None  # end of the utterance's last frame


@dataclass(frozen=True)
class InterruptConfirmed:
    utterance_id: str | None
    played_ms: int
    dropped_ms: int


@dataclass(frozen=True)
class KeepAliveAck:
    pass


@dataclass(frozen=True)
class SessionState:
    state: str  # connecting, joined_room, room_error, ending, ended
    reason: str | None


@dataclass(frozen=True)
class ServerError:
    """An `error` event: a bad message was answered and skipped, or the socket was refused."""

    code: str
    error: str


@dataclass(frozen=True)
class UnknownEvent:
    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SocketClosed:
    """The socket is gone for good: `code` is the WebSocket close code (4009 ended, …)."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class SocketResumed:
    """The socket dropped and a new one resumed the session within the grace window."""

    attempts: int


Event = (
    ConnectionEstablished
    | SpeakConfirmed
    | SpeakStarted
    | SpeakEnded
    | InterruptConfirmed
    | KeepAliveAck
    | SessionState
    | ServerError
    | UnknownEvent
    | SocketClosed
    | SocketResumed
)


def parse_event(obj: dict[str, Any]) -> Event:
    kind = obj.get("type")
    if kind == "connection.established":
        video = obj.get("video") or {}
        return ConnectionEstablished(
            obj.get("session_id", ""),
            bool(obj.get("resumed")),
            int(video.get("width", 0)),
            int(video.get("height", 0)),
            int(video.get("fps", 0)),
        )
    if kind == "agent.speak.confirmed":
        return SpeakConfirmed(
            int(obj.get("audio_samples", 0)),
            int(obj.get("buffered_ms", 0)),
            obj.get("utterance_id"),
        )
    if kind == "agent.speak_started":
        return SpeakStarted(obj["utterance_id"], int(obj.get("pts_ms", 0)))
    if kind == "agent.speak_ended":
        pts = obj.get("pts_ms")
        return SpeakEnded(
            obj["utterance_id"],
            int(obj.get("played_ms", 0)),
            bool(obj.get("interrupted")),
            int(pts) if pts is not None else None,
        )
    if kind == "agent.interrupt.confirmed":
        return InterruptConfirmed(
            obj.get("utterance_id"), int(obj.get("played_ms", 0)), int(obj.get("dropped_ms", 0))
        )
    if kind == "session.keep_alive.ack":
        return KeepAliveAck()
    if kind == "session.state":
        return SessionState(str(obj.get("state")), obj.get("reason"))
    if kind == "error":
        return ServerError(str(obj.get("code")), str(obj.get("error", "")))
    return UnknownEvent(str(kind), dict(obj))
