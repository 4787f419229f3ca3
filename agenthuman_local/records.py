"""The records the server keeps (API keys, avatars, sessions) as plain frozen dataclasses.

The store (`store/`) reads and writes them; the manager and the API pass them around without
touching SQL. A session's state is derived from its timestamps (`sessions/state.py`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agenthuman_local.sessions.state import SessionState, derive_state

STAT_KEYS = (
    "frames_published",
    "frames_late",
    "frames_dropped",
    "audio_ms_received",
    "audio_ms_played",
    "first_frame_latency_ms",
)
# Counters start at 0; the latency stays null until a first frame exists to measure.
EMPTY_STATS: dict[str, int | None] = {k: 0 for k in STAT_KEYS} | {"first_frame_latency_ms": None}


@dataclass(frozen=True)
class ApiKey:
    prefix: str  # the key's first 16 characters (12 for older keys); the key is never stored
    account_id: str
    account_name: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class Avatar:
    avatar_id: str
    account_id: str | None  # None for the shipped public avatars
    kind: str  # 'procedural' (drawn, no assets) or 'photo' (from upload-face)
    name: str
    tags: tuple[str, ...]
    is_public: bool
    created_at: float
    image_path: str | None
    preview_path: str | None
    rig: dict[str, Any] | None


@dataclass(frozen=True)
class Session:
    session_id: str
    account_id: str
    avatar_id: str
    avatar_name: str  # kept so a session outlives the deletion of its avatar
    token_hash: str  # SHA-256 of the access/session token
    aspect_ratio: str
    video_width: int
    video_height: int
    fps: int
    metadata: dict[str, Any]
    daily_room: dict[str, Any] | None
    created_at: float  # unix seconds, like every time here
    started_at: float | None = None
    ended_at: float | None = None
    expiration: float | None = None
    end_reason: str | None = None
    device: str | None = None
    stats: Mapping[str, int | None] = field(default_factory=lambda: dict(EMPTY_STATS))

    @property
    def status(self) -> SessionState:
        return derive_state(self.started_at, self.ended_at)

    def duration_s(self, now: float) -> int:
        """Whole seconds from start to end, live while started, 0 before start."""
        if self.started_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else now
        return max(0, int(end - self.started_at))
