"""The JSON objects of SPEC §3 (Session, Avatar, Device lists) built from store rows.

Times are ISO 8601 UTC with `Z`, to the second, as the hosted API writes them. Every URL the
server hands out starts from `settings.base_url` (`public_url`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agenthuman_local import ids
from agenthuman_local.records import Avatar, Session


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def avatar_preview_url(base_url: str, avatar_id: str) -> str:
    return f"{base_url}/v1/avatars/{avatar_id}/preview"


def avatar_image_url(base_url: str, avatar_id: str) -> str:
    return f"{base_url}/v1/avatars/{avatar_id}/image"


def avatar_json(avatar: Avatar, base_url: str) -> dict[str, Any]:
    preview = avatar_preview_url(base_url, avatar.avatar_id)
    return {
        "avatar_id": avatar.avatar_id,
        "name": avatar.name,
        "preview_url": preview,
        "preview_img_url": preview,
        "image_url": avatar_image_url(base_url, avatar.avatar_id),
        "tags": list(avatar.tags),
        "is_public": avatar.is_public,
        "created_at": iso(avatar.created_at),
    }


def viewer_url(base_url: str, session_id: str, viewer_secret: bytes) -> str:
    token = ids.viewer_token(viewer_secret, session_id)
    return f"{base_url}/v1/sessions/{session_id}/viewer?token={token}"


def session_json(
    session: Session, base_url: str, now: float, viewer_secret: bytes
) -> dict[str, Any]:
    """What GET shows; never the token or the ws_uri (create and start add those)."""
    sid = session.session_id
    return {
        "session_id": sid,
        "avatar": {
            "avatar_id": session.avatar_id,
            "name": session.avatar_name,
            "url": avatar_preview_url(base_url, session.avatar_id),
        },
        "session_type": "webrtc_video",
        "status": session.status.value,
        "created_at": iso(session.created_at),
        "started_at": iso(session.started_at),
        "ended_at": iso(session.ended_at),
        "expiration": iso(session.expiration),
        "duration": session.duration_s(now),
        "aspect_ratio": session.aspect_ratio,
        "video": {
            "width": session.video_width,
            "height": session.video_height,
            "fps": session.fps,
        },
        "daily_room": session.daily_room,
        "metadata": session.metadata,
        "end_reason": session.end_reason,
        "viewer_url": viewer_url(base_url, sid, viewer_secret),
        "stats": dict(session.stats),
    }
