"""The OpenAPI 3.1 document: every route with its request and response schemas.

Adding a route is one `Operation` in `OPERATIONS` (plus a schema in `SCHEMAS` if it returns a
new object). `tests/test_openapi.py` fails when a route in the router has no operation here or
the other way round, and the test client validates every response the suite receives against
the schema of its status (any error status: `Error`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agenthuman_local import __version__

JsonSchema = dict[str, Any]


def ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, JsonSchema], *, optional: tuple[str, ...] = ()) -> JsonSchema:
    """A closed object: every property required unless listed in `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


STRING: JsonSchema = {"type": "string"}
TIME: JsonSchema = {"type": "string", "format": "date-time"}
INT: JsonSchema = {"type": "integer", "minimum": 0}
SUCCESS: JsonSchema = {"const": True}
ASPECT_RATIOS = ["4:3", "3:4", "1:1", "16:9", "9:16"]
END_REASONS = [
    "client_request",
    "websocket_closed",
    "websocket_timeout",
    "expired",
    "idle_timeout",
    "room_empty",
    "server_shutdown",
    "server_restart",
    "error",
]

_SESSION_PROPS: dict[str, JsonSchema] = {
    "session_id": {"type": "string", "pattern": "^sess_[0-9A-HJKMNP-TV-Z]{26}$"},
    "avatar": obj({"avatar_id": STRING, "name": STRING, "url": STRING}),
    "session_type": {"const": "webrtc_video"},
    "status": {"enum": ["created", "started", "ended"]},
    "created_at": TIME,
    "started_at": nullable(TIME),
    "ended_at": nullable(TIME),
    "expiration": nullable(TIME),
    "duration": INT,
    "aspect_ratio": {"enum": ASPECT_RATIOS},
    "video": obj({"width": INT, "height": INT, "fps": INT}),
    "daily_room": nullable(
        {
            "type": "object",
            "properties": {"url": STRING, "name": STRING, "token": STRING},
            "required": ["url", "name", "token"],
        }
    ),
    "metadata": {"type": "object"},
    "end_reason": nullable({"enum": END_REASONS}),
    "viewer_url": STRING,
    "stats": ref("SessionStats"),
}

_USAGE_PROPS: dict[str, JsonSchema] = {
    "concurrency": obj({"current": INT, "max": INT, "available": INT}),
    "minutes": obj({"total_remaining": {"type": "null"}}),
}

SCHEMAS: dict[str, JsonSchema] = {
    "Error": obj(
        {
            "success": {"const": False},
            "error": obj(
                {
                    "code": {"type": "string", "pattern": "^[A-Z0-9_]+$"},
                    "message": STRING,
                    "suggestion": STRING,
                    "details": {"type": "object"},
                },
                optional=("details",),
            ),
        }
    ),
    "SessionStats": obj(
        {
            "frames_published": INT,
            "frames_late": INT,
            "frames_dropped": INT,
            "audio_ms_received": INT,
            "audio_ms_played": INT,
            "first_frame_latency_ms": nullable(INT),
        }
    ),
    "Session": obj(_SESSION_PROPS),
    # The create response's session: GET's fields plus the secret (under both era names) and,
    # in era [C], the ws_uri.
    "CreatedSession": obj(
        {**_SESSION_PROPS, "access_token": STRING, "session_token": STRING, "ws_uri": STRING},
        optional=("ws_uri",),
    ),
    "Avatar": obj(
        {
            "avatar_id": STRING,
            "name": STRING,
            "preview_url": STRING,
            "preview_img_url": STRING,
            "image_url": STRING,
            "tags": {"type": "array", "items": STRING},
            "is_public": {"type": "boolean"},
            "created_at": TIME,
        }
    ),
    "Device": obj(
        {
            "name": STRING,
            "kind": {"enum": ["cuda", "cpu"]},
            "label": STRING,
            "sessions": INT,
            "capacity": INT,
        }
    ),
    "Usage": obj(_USAGE_PROPS),
    # GET /v1/usage: the Usage object plus the account's live sessions and the devices (ext).
    "UsageReport": obj(
        {
            **_USAGE_PROPS,
            "active_sessions": {"type": "array", "items": ref("Session")},
            "devices": {"type": "array", "items": ref("Device")},
        }
    ),
    "UploadFaceRequest": {
        "type": "object",
        "description": "Exactly one of file (multipart only), image_base64, image_url.",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "image_base64": {"type": "string", "description": "data-URI prefix optional"},
            "image_url": {"type": "string", "description": "http(s)"},
            "name": STRING,
        },
    },
    "CreateSessionRequest": {
        "type": "object",
        "description": "A `room` field means era [C] (created and started); else era [B].",
        "properties": {
            "avatar": {
                "type": "string",
                "description": "an avatar id, or an image (data:image/…;base64, or http(s) URL)",
            },
            "avatar_id": STRING,
            "aspect_ratio": {"enum": ASPECT_RATIOS},
            "metadata": {"type": "object"},
            "daily_room": {
                "type": "object",
                "properties": {"url": STRING, "token": STRING},
                "required": ["url", "token"],
            },
            "room": {
                "type": "object",
                "properties": {
                    "platform": {"enum": ["daily", "local", "livekit", "proxy"]},
                    "url": STRING,
                    "token": STRING,
                },
                "required": ["platform"],
            },
        },
    },
}


def _success(properties: dict[str, JsonSchema], **kw: Any) -> JsonSchema:
    return obj({"success": SUCCESS, **properties}, **kw)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # aiohttp's route path, e.g. /v1/sessions/{session_id}
    summary: str
    response: JsonSchema | None  # JSON body of the success response; None: no JSON body
    status: int = 200
    request: JsonSchema | None = None
    auth: bool = True
    query: dict[str, JsonSchema] = field(default_factory=dict)
    content_type: str = "application/json"
    request_types: tuple[str, ...] = ("application/json",)


_CREATED = _success({"session": ref("CreatedSession"), "usage": ref("Usage"), "message": STRING})
_STARTED = _success({"ws_uri": STRING, "expiration": nullable(TIME), "message": STRING})
_ENDED = _success({"session": ref("Session"), "message": STRING})
_AVATAR_LIST = {"type": "array", "items": ref("Avatar")}
_BINARY: JsonSchema = {"type": "string", "format": "binary"}
_VIEWER_TOKEN = {"token": {"type": "string", "description": "the session's viewer token"}}

OPERATIONS: list[Operation] = [
    Operation(
        "GET",
        "/healthz",
        "Liveness, engine readiness and devices",
        obj(
            {
                "status": {"const": "ok"},
                "engine": {"enum": ["loading", "ready"]},
                # (ext) why the engine stays loading: its start-up failed (see the log).
                "engine_error": STRING,
                "devices": {"type": "array", "items": ref("Device")},
            },
            optional=("engine_error",),
        ),
        auth=False,
    ),
    Operation("GET", "/openapi.json", "This document", {"type": "object"}, auth=False),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics in the text exposition format (SPEC §10)",
        STRING,
        auth=False,
        content_type="text/plain",
    ),
    Operation(
        "POST",
        "/v1/sessions",
        "Create a session (era [C]: with `room`, created and started)",
        _CREATED,
        status=201,
        request=ref("CreateSessionRequest"),
    ),
    Operation(
        "GET",
        "/v1/sessions",
        "List sessions, newest first",
        _success(
            {
                "sessions": {"type": "array", "items": ref("Session")},
                "next_cursor": nullable(STRING),
            }
        ),
        query={
            "status": {"enum": ["all", "created", "started", "ended"]},
            "limit": {"type": "integer", "minimum": 1, "description": "default 50; above 500: 500"},
            "cursor": STRING,
        },
    ),
    Operation(
        "GET", "/v1/sessions/{session_id}", "Get a session", _success({"session": ref("Session")})
    ),
    Operation("PUT", "/v1/sessions/{session_id}/start", "Start a session (idempotent)", _STARTED),
    Operation("POST", "/v1/sessions/{session_id}/start", "Start a session (idempotent)", _STARTED),
    Operation("PUT", "/v1/sessions/{session_id}/end", "End a session (idempotent)", _ENDED),
    Operation("POST", "/v1/sessions/{session_id}/end", "End a session (idempotent)", _ENDED),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/ws",
        "The session WebSocket (first message: session.init)",
        None,
        status=101,
        auth=False,
    ),
    Operation(
        "GET",
        "/v1/ws",
        "The fixed session WebSocket for era [C] clients",
        None,
        status=101,
        auth=False,
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/timeline",
        "The session's published frames and events, one JSON object per line (SPEC §10)",
        STRING,
        content_type="application/x-ndjson",
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/recording",
        "(ext) The session's MP4 (H.264 + AAC); while started, what is written so far",
        _BINARY,
        content_type="video/mp4",
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/viewer",
        "The page that plays the session (viewer_url; the token is in the URL)",
        STRING,
        auth=False,
        query=_VIEWER_TOKEN,
        content_type="text/html",
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/viewer/ws",
        "The viewer page's media socket",
        None,
        status=101,
        auth=False,
        query=_VIEWER_TOKEN,
    ),
    Operation(
        "GET",
        "/viewer/{name}",
        "The viewer page's scripts",
        STRING,
        auth=False,
        content_type="text/javascript",
    ),
    Operation(
        "GET",
        "/v1/avatars",
        "Avatars this account can use: public ones, then its own",
        _success(
            {
                "avatars": _AVATAR_LIST,
                "public_avatars": _AVATAR_LIST,
                "my_avatars": _AVATAR_LIST,
            }
        ),
        query={"parent_id": STRING, "characters_only": STRING},
    ),
    Operation("GET", "/v1/avatars/public", "Public avatars", _success({"avatars": _AVATAR_LIST})),
    # Before /v1/avatars/{avatar_id}, whose pattern also matches this path.
    Operation(
        "POST",
        "/v1/avatars/upload-face",
        "One photo with one face → a private avatar, usable at once",
        _success({"avatar_id": STRING, "preview_url": STRING, "image_url": STRING}),
        request=ref("UploadFaceRequest"),
        request_types=(
            "multipart/form-data",
            "application/json",
            "application/x-www-form-urlencoded",
        ),
    ),
    Operation("GET", "/v1/avatars/{avatar_id}", "One avatar", _success({"avatar": ref("Avatar")})),
    Operation(
        "DELETE",
        "/v1/avatars/{avatar_id}",
        "Delete an own avatar (public ones: 409)",
        _success({"avatar_id": STRING, "message": STRING}),
    ),
    Operation(
        "GET",
        "/v1/avatars/{avatar_id}/preview",
        "The avatar's 500×500 preview (no key: ids are unguessable)",
        _BINARY,
        auth=False,
        content_type="image/*",
    ),
    Operation(
        "GET",
        "/v1/avatars/{avatar_id}/image",
        "The avatar's image, at most 1200 px wide (no key)",
        _BINARY,
        auth=False,
        content_type="image/*",
    ),
    Operation(
        "GET",
        "/v1/usage",
        "Concurrency, live sessions and devices",
        _success({"usage": ref("UsageReport")}),
    ),
]


def _operation_doc(op: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": STRING}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query.items()
    ]
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        success["content"] = {op.content_type: {"schema": op.response}}
    doc: dict[str, Any] = {
        "summary": op.summary,
        "responses": {
            str(op.status): success,
            "default": {
                "description": "Error (SPEC §4)",
                "content": {"application/json": {"schema": ref("Error")}},
            },
        },
    }
    if parameters:
        doc["parameters"] = parameters
    if op.request is not None:
        doc["requestBody"] = {
            "required": False,
            "content": {kind: {"schema": op.request} for kind in op.request_types},
        }
    if not op.auth:
        doc["security"] = []
    return doc


def build_document(base_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_doc(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "AgentHuman Local", "version": __version__},
        "servers": [{"url": base_url}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
