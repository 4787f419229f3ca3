"""The OpenAPI document (SPEC §5) matches the router, and its schemas are valid JSON Schema.

That every response the suite receives fits its schema is checked by `ApiClient` in conftest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agenthuman_local.api.openapi import OPERATIONS, SCHEMAS, build_document
from agenthuman_local.app import create_app
from agenthuman_local.config import Settings
from agenthuman_local.transports.daily_rest import DailyRestError
from agenthuman_local.transports.daily_rooms import DailyApiError
from tests.conftest import ApiClient, OpenApiChecker


def router_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings, environ={})
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one beside every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        routes.add((route.method, info.get("path") or info["formatter"]))
    return routes


def test_every_route_is_documented_and_every_operation_routed(settings: Settings) -> None:
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert len(documented) == len(OPERATIONS), "an operation is listed twice"
    assert router_routes(settings) == documented


def test_document_paths_match_operations() -> None:
    doc = build_document("http://x")
    assert doc["openapi"].startswith("3.1")
    in_doc = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert in_doc == {(op.method, op.path) for op in OPERATIONS}
    for path, item in doc["paths"].items():
        for operation in item.values():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert all(f"{{{n}}}" in path for n in names)
            assert "default" in operation["responses"]


def all_schemas() -> list[dict[str, object]]:
    doc = build_document("http://x")
    found: list[dict[str, object]] = list(SCHEMAS.values())
    for item in doc["paths"].values():
        for operation in item.values():
            for response in operation["responses"].values():
                for content in response.get("content", {}).values():
                    found.append(content["schema"])
    return found


@pytest.mark.parametrize("schema", all_schemas())
def test_schemas_are_valid_json_schema(schema: dict[str, object]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_checker_rejects_a_wrong_body() -> None:
    checker = OpenApiChecker()
    checker.check("GET", "/healthz", 200, {"status": "ok", "engine": "ready", "devices": []})
    with pytest.raises(jsonschema.ValidationError):
        checker.check("GET", "/healthz", 200, {"status": "ok", "engine": "ready"})
    with pytest.raises(jsonschema.ValidationError):
        checker.check("GET", "/v1/sessions/x", 404, {"success": False, "error": {}})
    with pytest.raises(AssertionError, match="undocumented status"):
        checker.check("GET", "/healthz", 201, {})


async def test_served_without_a_key(api: ApiClient, tmp_path: Path) -> None:
    served = await api.json("GET", "/openapi.json", key=None)
    base = served["servers"][0]["url"]
    assert served == build_document(base)
    assert served["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    doc = build_document("http://x")
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def test_create_documents_the_daily_api_error_502() -> None:
    responses = build_document("http://x")["paths"]["/v1/sessions"]["post"]["responses"]
    schema = responses["502"]["content"]["application/json"]["schema"]
    assert "DAILY_API_ERROR" in responses["502"]["description"]
    # What the handler answers (daily_rooms.DailyApiError via errors.error_body) fits it ...
    for status in (400, None):  # Daily answered 400; Daily could not be reached
        error = DailyApiError(DailyRestError("POST", "/rooms", status, "invalid-request", "x"))
        assert error.status == 502
        _validator(schema).validate(error.body())
        OpenApiChecker().check("POST", "/v1/sessions", 502, error.body())
    # ... and another error code, or the details missing, does not.
    body = error.body()
    for wrong in (
        {**body, "error": {**body["error"], "code": "INTERNAL"}},
        {**body, "error": {k: v for k, v in body["error"].items() if k != "details"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            _validator(schema).validate(wrong)


def test_a_session_daily_room_may_carry_an_error_string() -> None:
    room = {"url": "https://team.daily.co/r", "name": "r", "token": "t"}
    session = _validator({"$ref": "#/components/schemas/Session"})
    dumped = {
        "session_id": "sess_01KMZHXFPBVCXA5ATK85HCP8G1",
        "avatar": {"avatar_id": "a", "name": "A", "url": "u"},
        "session_type": "webrtc_video",
        "status": "started",
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "ended_at": None,
        "expiration": None,
        "duration": 0,
        "aspect_ratio": "4:3",
        "video": {"width": 960, "height": 720, "fps": 25},
        "metadata": {},
        "end_reason": None,
        "viewer_url": "v",
        "stats": {
            "frames_published": 0,
            "frames_late": 0,
            "frames_dropped": 0,
            "audio_ms_received": 0,
            "audio_ms_played": 0,
            "first_frame_latency_ms": None,
        },
    }
    for daily_room in (None, room, {**room, "error": "join failed: InvalidUrl"}):
        session.validate({**dumped, "daily_room": daily_room})
    for daily_room in ({**room, "error": 3}, {**room, "other": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            session.validate({**dumped, "daily_room": daily_room})


async def test_room_platform_schema_matches_the_handler(api: ApiClient) -> None:
    platform = SCHEMAS["CreateSessionRequest"]["properties"]["room"]["properties"]["platform"]
    request = _validator({"$ref": "#/components/schemas/CreateSessionRequest"})
    # The values the document names are the ones the server accepts ...
    assert platform["examples"] == ["daily", "local"]
    rooms = {
        "daily": {"platform": "daily", "url": "https://acme.daily.co/r", "token": "t"},
        "local": {"platform": "local"},
    }
    for value in platform["examples"]:
        request.validate({"room": rooms[value]})
        created = await api.json("POST", "/v1/sessions", 201, json={"room": rooms[value]})
        await api.json("POST", f"/v1/sessions/{created['session']['session_id']}/end")
    # ... and livekit/proxy are not refused by the schema: they reach the handler for its 400.
    for value in ("livekit", "proxy"):
        assert value in platform["description"]
        request.validate({"room": {"platform": value}})
        body = await api.json("POST", "/v1/sessions", 400, json={"room": {"platform": value}})
        assert body["error"]["code"] == "UNSUPPORTED_PLATFORM"
