"""The OpenAPI 3.1 document: every route with its request and response schemas.

Adding a route is one `Operation` in `OPERATIONS` (plus a schema in `openapi_schemas.SCHEMAS`
if it returns a new object). `tests/test_openapi.py` fails when a route in the router has no
operation here or the other way round, and the test client validates every response the suite
receives against the schema of its status (an error status an operation does not list:
`Error`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agenthuman_local import __version__
from agenthuman_local.api.openapi_schemas import (
    SCHEMAS,
    STRING,
    SUCCESS,
    TIME,
    JsonSchema,
    nullable,
    obj,
    ref,
)

__all__ = ["OPERATIONS", "SCHEMAS", "Operation", "build_document"]


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
    # Error statuses with a body more specific than `Error`: status → (description, schema).
    errors: dict[int, tuple[str, JsonSchema]] = field(default_factory=dict)


_CREATED = _success({"session": ref("CreatedSession"), "usage": ref("Usage"), "message": STRING})
_STARTED = _success({"ws_uri": STRING, "expiration": nullable(TIME), "message": STRING})
_ENDED = _success({"session": ref("Session"), "message": STRING})
_AVATAR_LIST = {"type": "array", "items": ref("Avatar")}
_BINARY: JsonSchema = {"type": "string", "format": "binary"}
_VIEWER_TOKEN = {"token": {"type": "string", "description": "the session's viewer token"}}

# What any request body may be refused for before it is used (issue 12).
_BODY_LIMITS: dict[int, tuple[str, JsonSchema]] = {
    400: (
        "INVALID_JSON (also: nested deeper than `http.max_json_depth`), VALIDATION_ERROR (a "
        "field, or more than `http.max_form_parts` form fields)",
        ref("Error"),
    ),
    408: ("REQUEST_TIMEOUT: the body paused longer than `http.body_timeout_s`", ref("Error")),
}
# Any refusal of a body not yet read whole comes with `Connection: close` (nothing is drained).

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
        errors={
            **_BODY_LIMITS,
            413: (
                "PAYLOAD_TOO_LARGE: the body is over `http.max_json_kb` (by its Content-Length, "
                "before it is read; the connection is then closed) or has more than "
                "`http.max_json_items` values, or `metadata` is over `session.max_metadata_kb` "
                "of compact JSON",
                ref("Error"),
            ),
            502: (
                "(ext) DAILY_API_ERROR: Daily's REST API failed while creating the session's "
                "room (SPEC §7); nothing is stored",
                ref("DailyApiError"),
            ),
        },
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
        errors={
            **_BODY_LIMITS,
            413: (
                "PAYLOAD_TOO_LARGE: the image is over 10 MB, the body (every part counted)"
                " is over `max_request_mb`, or a JSON body has more than `http.max_json_items`"
                " values",
                ref("Error"),
            ),
        },
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
    responses: dict[str, Any] = {str(op.status): success}
    for status, (description, schema) in op.errors.items():
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    responses["default"] = {
        "description": "Error (SPEC §4)",
        "content": {"application/json": {"schema": ref("Error")}},
    }
    doc: dict[str, Any] = {"summary": op.summary, "responses": responses}
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
