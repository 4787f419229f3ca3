"""An asyncio client for AgentHuman Local: REST (`AgentHuman`), the session socket
(`SessionSocket`), typed events and media. Adapters: `agenthuman_client.pipecat` (extra
`[pipecat]`) and `agenthuman_client.livekit` (extra `[livekit]`), imported only on demand.

Depends on aiohttp and numpy only: importing it never loads torch, daily or av.
"""

from agenthuman_client.events import (
    ConnectionEstablished,
    Event,
    InterruptConfirmed,
    KeepAliveAck,
    ServerError,
    SessionState,
    SocketClosed,
    SocketResumed,
    SpeakConfirmed,
    SpeakEnded,
    SpeakStarted,
    UnknownEvent,
    parse_event,
)
from agenthuman_client.media import AudioFrame, Media, UtteranceGate, VideoFrame, decode_media
from agenthuman_client.rest import (
    DEFAULT_BASE_URL,
    AgentHuman,
    ApiError,
    Session,
    StartResult,
    UploadedAvatar,
    VideoSize,
)
from agenthuman_client.socket import SessionSocket, SocketRefused

__all__ = [
    "DEFAULT_BASE_URL",
    "AgentHuman",
    "ApiError",
    "AudioFrame",
    "ConnectionEstablished",
    "Event",
    "InterruptConfirmed",
    "KeepAliveAck",
    "Media",
    "ServerError",
    "Session",
    "SessionSocket",
    "SessionState",
    "SocketClosed",
    "SocketRefused",
    "SocketResumed",
    "SpeakConfirmed",
    "SpeakEnded",
    "SpeakStarted",
    "StartResult",
    "UnknownEvent",
    "UploadedAvatar",
    "UtteranceGate",
    "VideoFrame",
    "VideoSize",
    "decode_media",
    "parse_event",
]
