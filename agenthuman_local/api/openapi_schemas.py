"""The OpenAPI document's component schemas (`#/components/schemas/…`) and the helpers that
build them; `api/openapi.py` lists the operations that use them.

Every schema says what the server really answers: `tests/test_openapi.py` checks them against
handler output, and `conftest.ApiClient` validates each response the suite receives.
"""

from __future__ import annotations

from typing import Any

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
        obj(
            {
                "url": STRING,
                "name": STRING,
                "token": STRING,
                "error": {
                    "type": "string",
                    "description": "(ext) why the avatar could not join, or the room could not "
                    "be deleted (SPEC §7); absent while all is well",
                },
            },
            optional=("error",),
        )
    ),
    "metadata": {"type": "object"},
    "end_reason": nullable({"enum": END_REASONS}),
    "viewer_url": STRING,
    "stats": ref("SessionStats"),
}

# Open on purpose: the server accepts `daily` and `local`, and `livekit`/`proxy` must reach the
# handler for its 400 UNSUPPORTED_PLATFORM (a closed enum would make clients refuse them first).
PLATFORM: JsonSchema = {
    "type": "string",
    "description": "Accepted: `daily` (needs `url` and `token`; the avatar joins that room) or "
    "`local` (ext: local outputs only). `livekit` and `proxy` → 400 UNSUPPORTED_PLATFORM; any "
    "other value → 400 VALIDATION_ERROR.",
    "examples": ["daily", "local"],
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
    # (ext) POST /v1/sessions → 502: Daily's REST API failed creating the session's room (§7).
    "DailyApiError": obj(
        {
            "success": {"const": False},
            "error": obj(
                {
                    "code": {"const": "DAILY_API_ERROR"},
                    "message": STRING,
                    "suggestion": STRING,
                    "details": obj(
                        {
                            "daily_status": {
                                **nullable(INT),
                                "description": "Daily's HTTP status; null: not reachable",
                            },
                            "daily_error": STRING,
                        }
                    ),
                }
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
            # In cost units (1 = a 1280x720@25 session; a session costs width x height x fps).
            "capacity": INT,
            "load": {"type": "number", "minimum": 0},
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
                    "platform": PLATFORM,
                    "url": STRING,
                    "token": STRING,
                },
                "required": ["platform"],
            },
        },
    },
}
