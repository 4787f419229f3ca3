"""Session routes (SPEC §5): parse and check the request, call the manager, shape the answer.

The era rule: a `room` field means era [C] (created and started in one call, default aspect
ratio 4:3); otherwise era [B] (created only, 16:9). Unknown request fields are ignored.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from agenthuman_local import ids, keys
from agenthuman_local.api.avatars import is_image_value, session_avatar
from agenthuman_local.api.objects import iso, session_json
from agenthuman_local.api.parsing import (
    json_object,
    optional_object,
    optional_str,
    required_str,
)
from agenthuman_local.errors import (
    EngineLoading,
    NotFound,
    PayloadTooLarge,
    UnsupportedPlatform,
    ValidationError,
)
from agenthuman_local.paths import recording_path, timeline_path
from agenthuman_local.records import Session
from agenthuman_local.sessions.manager import VIDEO_SIZES
from agenthuman_local.sessions.state import EndReason, SessionState

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
TRY_AGAIN = "try_again"
_UNSUPPORTED_PLATFORMS = frozenset({"livekit", "proxy"})


def _metadata_bytes(metadata: dict[str, Any]) -> int:
    """The size of `metadata` as it is stored and listed (compact, ASCII-escaped JSON)."""
    return len(json.dumps(metadata, separators=(",", ":")))


def _check_metadata_size(request: web.Request, metadata: dict[str, Any]) -> None:
    """`metadata` is stored and returned in every list page: at most `session.max_metadata_kb`
    of compact JSON (413). Always measured, re-encoded: the body's size is no bound (`1e5`
    comes back as `100000.0`, `é` as `\\u00e9`); encoding is cheap, as the body has at most
    `http.max_json_items` values."""
    limit = int(request.app[keys.settings_key].session.max_metadata_kb * 1024)
    if not metadata:
        return
    size = _metadata_bytes(metadata)
    if size > limit:
        raise PayloadTooLarge(
            f"metadata is {size} bytes of JSON; the limit is {limit}",
            suggestion="Keep large data in your own store and put its id in metadata "
            "(the limit is the server's session.max_metadata_kb).",
        )


def _daily_room(url: str, token: str, field: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"{field}.url", "must be an http(s) URL of a Daily room")
    return {"url": url, "name": parts.path.rstrip("/").rsplit("/", 1)[-1], "token": token}


def _room(room: dict[str, Any]) -> dict[str, Any] | None:
    """Era [C] `room` → the session's daily_room (None for `local`)."""
    platform = required_str(room, "platform", label="room.platform")
    if platform in _UNSUPPORTED_PLATFORMS:
        raise UnsupportedPlatform()
    if platform == "local":
        return None
    if platform != "daily":
        raise ValidationError("room.platform", "must be one of daily, local")
    url = required_str(room, "url", label="room.url")
    token = required_str(room, "token", label="room.token")
    return _daily_room(url, token, "room")


def _byo_daily_room(body: dict[str, Any]) -> dict[str, Any] | None:
    """Era [B] extension: bring your own Daily room `{url, token}`."""
    room = optional_object(body, "daily_room")
    if room is None:
        return None
    url = required_str(room, "url", label="daily_room.url")
    token = required_str(room, "token", label="daily_room.token")
    return _daily_room(url, token, "daily_room")


def _avatar_field(body: dict[str, Any], *, era_c: bool) -> tuple[str, str | None]:
    """(the field used, its value): an avatar id, or in era [C] an image to upload first."""
    field = "avatar" if body.get("avatar") is not None else "avatar_id"
    value = optional_str(body, field)
    if not era_c and is_image_value(value):
        raise ValidationError(
            field,
            "as an image is accepted only in a create with a room (era [C])",
            suggestion="Upload it with POST /v1/avatars/upload-face and pass its avatar_id.",
        )
    return field, value


def _aspect_ratio(body: dict[str, Any], default: str) -> str:
    value = optional_str(body, "aspect_ratio")
    if value is None:
        return default
    if value not in VIDEO_SIZES:
        raise ValidationError("aspect_ratio", "must be one of " + ", ".join(VIDEO_SIZES))
    return value


def _session_out(request: web.Request, session: Session) -> dict[str, Any]:
    app = request.app
    out = session_json(
        session, app[keys.settings_key].base_url, time.time(), app[keys.viewer_secret_key]
    )
    if session.status is SessionState.STARTED:
        # The store has the stats of ended sessions; a live one's come from the live session.
        live = request.app[keys.manager_key].live(session.session_id)
        stats = live.stats() if live is not None else None
        if stats is not None:
            out["stats"] = stats
    return out


async def create_session(request: web.Request) -> web.Response:
    account_id = request[keys.account_key]
    body = await json_object(request)
    room = optional_object(body, "room")
    era_c = room is not None
    daily_room = _room(room) if room is not None else _byo_daily_room(body)
    aspect_ratio = _aspect_ratio(body, "4:3" if era_c else "16:9")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", "must be a JSON object")
    _check_metadata_size(request, metadata)
    manager = request.app[keys.manager_key]
    if era_c and not manager.ready:  # before any upload work the create could not use
        raise EngineLoading.for_error(request.app[keys.engine_status_key].error)
    field, avatar_ref = _avatar_field(body, era_c=era_c)
    async with session_avatar(request, account_id, field, avatar_ref) as avatar:
        session, token = await manager.create(
            account_id,
            avatar=avatar,
            aspect_ratio=aspect_ratio,
            metadata=metadata,
            daily_room=daily_room,
            start=era_c,
            make_room=not era_c,
        )
    out = _session_out(request, session)
    out["access_token"] = token
    out["session_token"] = token
    if era_c:
        out["ws_uri"] = manager.ws_uri(session.session_id)
    return web.json_response(
        {
            "success": True,
            "session": out,
            "usage": manager.usage(),
            "message": "Session created successfully",
        },
        status=201,
    )


async def start_session(request: web.Request) -> web.Response:
    manager = request.app[keys.manager_key]
    session = await manager.start(request[keys.account_key], request.match_info["session_id"])
    if session is None:
        return web.json_response(
            {
                "success": True,
                "ws_uri": TRY_AGAIN,
                "expiration": None,
                "message": "The avatar engine is loading; call start again in a moment",
            }
        )
    return web.json_response(
        {
            "success": True,
            "ws_uri": manager.ws_uri(session.session_id),
            "expiration": iso(session.expiration),
            "message": "Session started successfully",
        }
    )


async def end_session(request: web.Request) -> web.Response:
    session = await request.app[keys.manager_key].end(
        request.match_info["session_id"],
        EndReason.CLIENT_REQUEST,
        account_id=request[keys.account_key],
    )
    return web.json_response(
        {
            "success": True,
            "session": _session_out(request, session),
            "message": "Session ended successfully",
        }
    )


async def get_session(request: web.Request) -> web.Response:
    session = await request.app[keys.manager_key].get(
        request[keys.account_key], request.match_info["session_id"]
    )
    return web.json_response({"success": True, "session": _session_out(request, session)})


async def get_recording(request: web.Request) -> web.StreamResponse:
    """(ext) The session's MP4; while it is started, what has been written so far (SPEC §10)."""
    session = await request.app[keys.manager_key].get(
        request[keys.account_key], request.match_info["session_id"]
    )
    settings = request.app[keys.settings_key]
    path = recording_path(settings.data_dir, session.session_id)
    size = await asyncio.to_thread(_size, path)
    if not size:
        raise NotFound(
            "This session has no recording",
            suggestion=(
                "A recording starts with the session's first session.init."
                if settings.recording.enabled
                else "Recording is off: set recording.enabled to true."
            ),
        )
    return web.FileResponse(
        path, headers={"Content-Type": "video/mp4", "Cache-Control": "no-store"}
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
    return min(limit, MAX_LIST_LIMIT)


async def list_sessions(request: web.Request) -> web.Response:
    query = request.query
    # An unknown status means all, as the hosted API does.
    status = {s.value: s for s in SessionState}.get(query.get("status", "all"))
    cursor = query.get("cursor") or None
    if cursor is not None and not ids.is_ulid_id(cursor, "sess"):
        raise ValidationError("cursor", "is not a cursor this server returned")
    sessions, next_cursor = await request.app[keys.manager_key].list_sessions(
        request[keys.account_key], status=status, limit=_limit(query.get("limit")), cursor=cursor
    )
    return web.json_response(
        {
            "success": True,
            "sessions": [_session_out(request, s) for s in sessions],
            "next_cursor": next_cursor,
        }
    )


async def get_timeline(request: web.Request) -> web.Response:
    """JSON Lines of the session's published frames and events (SPEC §10)."""
    manager = request.app[keys.manager_key]
    session_id = request.match_info["session_id"]
    await manager.get(request[keys.account_key], session_id)
    live = manager.live(session_id)
    text = live.timeline_jsonl() if live is not None else None
    if text is None:  # not kept in memory: the file (SPEC §10)
        path = timeline_path(request.app[keys.settings_key].data_dir, session_id)
        text = await asyncio.to_thread(_read_text, path)
    if text is None:
        raise NotFound("This session has no timeline yet", suggestion="Send session.init first.")
    return web.Response(text=text, content_type="application/x-ndjson")


def _read_text(path: Any) -> str | None:
    try:
        return str(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
