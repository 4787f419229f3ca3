"""Every failure path of SPEC §4 answers in the one error shape, with its status and code."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
from aiohttp import ClientResponse

from agenthuman_local import errors, ids, keys, store
from agenthuman_local.sessions.state import InvalidTransition, SessionState
from tests.conftest import ApiClient, MakeClient, rate_limit_at


async def assert_error(
    response: ClientResponse, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    error = body["error"]
    assert set(error) <= {"code", "message", "suggestion", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["suggestion"], str) and error["suggestion"]
    if message is not None:
        assert error["message"] == message
    assert "Traceback" not in text
    return dict(error)


async def second_account_client(api: ApiClient, name: str = "other") -> ApiClient:
    st = api.app[keys.store_key]
    key = ids.new_api_key()
    await st.add_api_key(await st.ensure_account(name), key)
    return ApiClient(api.client, key)


def test_error_body_shape() -> None:
    assert errors.error_body("X", "m", "s") == {
        "success": False,
        "error": {"code": "X", "message": "m", "suggestion": "s"},
    }
    assert errors.SessionNotFound().body()["error"]["code"] == "SESSION_NOT_FOUND"
    assert errors.ValidationError("metadata", "must be a JSON object").details == {
        "field": "metadata"
    }
    exc = InvalidTransition(SessionState.ENDED, SessionState.STARTED)
    assert (exc.status, exc.code) == (409, "INVALID_STATE")


# -- 401 ----------------------------------------------------------------------------------------


async def test_missing_key(api: ApiClient) -> None:
    for method, path in (("GET", "/v1/sessions"), ("POST", "/v1/sessions"), ("GET", "/v1/usage")):
        response = await api.request(method, path, key=None)
        await assert_error(response, 401, "UNAUTHORIZED", "API key required")


async def test_empty_key(api: ApiClient) -> None:
    response = await api.get("/v1/sessions", key="  ")
    await assert_error(response, 401, "UNAUTHORIZED", "API key required")


async def test_unknown_key(api: ApiClient) -> None:
    response = await api.get("/v1/sessions", key="ah_live_" + "x" * 32)
    await assert_error(response, 401, "UNAUTHORIZED", "Invalid API key")


async def test_revoked_key(api: ApiClient) -> None:
    other = await second_account_client(api)
    assert (await other.get("/v1/sessions")).status == 200
    await api.app[keys.store_key].revoke_api_keys(other.key[:12])  # type: ignore[index]
    await assert_error(await other.get("/v1/sessions"), 401, "UNAUTHORIZED", "Invalid API key")


# -- 404 ----------------------------------------------------------------------------------------


async def test_other_accounts_session_is_not_found(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    other = await second_account_client(api)
    for method, path in (
        ("GET", f"/v1/sessions/{sid}"),
        ("PUT", f"/v1/sessions/{sid}/start"),
        ("POST", f"/v1/sessions/{sid}/end"),
    ):
        await assert_error(await other.request(method, path), 404, "SESSION_NOT_FOUND")
    assert (await other.json("GET", "/v1/sessions"))["sessions"] == []
    # ... and the owner's session was left alone.
    assert (await api.json("GET", f"/v1/sessions/{sid}"))["session"]["status"] == "created"


async def test_unknown_session(api: ApiClient) -> None:
    for method, path in (
        ("GET", "/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("PUT", "/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV/start"),
        ("POST", "/v1/sessions/nonsense/end"),
    ):
        error = await assert_error(await api.request(method, path), 404, "SESSION_NOT_FOUND")
        assert error["message"] == "Session not found"


async def test_unknown_avatar(api: ApiClient) -> None:
    response = await api.post("/v1/sessions", json={"avatar_id": "avat_missing"})
    await assert_error(response, 404, "AVATAR_NOT_FOUND")
    await assert_error(await api.get("/v1/avatars/avat_missing"), 404, "AVATAR_NOT_FOUND")


async def test_unknown_route(api: ApiClient) -> None:
    await assert_error(await api.get("/v1/nothing-here"), 404, "NOT_FOUND")
    await assert_error(await api.get("/nothing-here", key=None), 404, "NOT_FOUND")
    await assert_error(await api.get("/v1/sessions/x/y/z"), 404, "NOT_FOUND")


# -- 405, 413 -----------------------------------------------------------------------------------


async def test_wrong_method(api: ApiClient) -> None:
    response = await api.delete("/v1/sessions")
    await assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]
    sid = (await api.create_session())["session_id"]
    await assert_error(await api.get(f"/v1/sessions/{sid}/start"), 405, "METHOD_NOT_ALLOWED")
    await assert_error(await api.post("/healthz", key=None), 405, "METHOD_NOT_ALLOWED")


async def test_oversized_body(make_client: MakeClient) -> None:
    api = await make_client(max_request_mb=0.01)
    blob = {"metadata": {"blob": "x" * 20_000}}
    await assert_error(await api.post("/v1/sessions", json=blob), 413, "PAYLOAD_TOO_LARGE")
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []


# -- 400 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    # (100 000 `[` are too many values: 413, tests/test_hardening_bodies.py)
    [b"{", b"{'a': 1}", b"\xff\xfe", b'{"a": NaN}', b"[" * 900, b'{"a": Infinity}'],
)
async def test_malformed_json(api: ApiClient, raw: bytes) -> None:
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "INVALID_JSON")


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"1", b"null", b"true"])
async def test_body_not_an_object(api: ApiClient, raw: bytes) -> None:
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["message"] == "body must be a JSON object"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"avatar_id": 5}, "avatar_id"),
        ({"avatar": ["avat_local_ada"]}, "avatar"),
        ({"aspect_ratio": 1.33}, "aspect_ratio"),
        ({"room": "daily"}, "room"),
        ({"room": {"platform": 7}}, "room.platform"),
        ({"daily_room": []}, "daily_room"),
        ({"daily_room": {"url": "https://a.daily.co/r"}}, "daily_room.token"),
        ({"avatar": "data:image/png;base64,AAAA"}, "avatar"),
    ],
)
async def test_wrong_types_name_the_field(api: ApiClient, body: dict[str, Any], field: str) -> None:
    error = await assert_error(await api.post("/v1/sessions", json=body), 400, "VALIDATION_ERROR")
    assert error["message"].startswith(field + " ")
    assert error["details"] == {"field": field}


async def test_unknown_aspect_ratio(api: ApiClient) -> None:
    for ratio in ("2:1", "auto", ""):
        response = await api.post("/v1/sessions", json={"aspect_ratio": ratio})
        error = await assert_error(response, 400, "VALIDATION_ERROR")
        assert error["message"].startswith("aspect_ratio must be one of")


@pytest.mark.parametrize("metadata", [[], "text", 3, True, None])
async def test_metadata_not_an_object(api: ApiClient, metadata: Any) -> None:
    response = await api.post("/v1/sessions", json={"metadata": metadata})
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["message"] == "metadata must be a JSON object"


async def test_unsupported_platform(api: ApiClient) -> None:
    response = await api.post("/v1/sessions", json={"room": {"platform": "livekit"}})
    await assert_error(
        response, 400, "UNSUPPORTED_PLATFORM", "LiveKit rooms are not supported by this server yet"
    )


# -- 409, 429, 503 -------------------------------------------------------------------------


async def test_start_after_end(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    await api.json("PUT", f"/v1/sessions/{sid}/end")
    await assert_error(await api.put(f"/v1/sessions/{sid}/start"), 409, "SESSION_ENDED")


async def test_rate_limited(make_client: MakeClient) -> None:
    api = await make_client(rate_limit_per_minute=2, contexts=[rate_limit_at(2, now=90.0)])
    for _ in range(2):
        assert (await api.get("/v1/sessions")).status == 200
    response = await api.get("/v1/sessions")
    await assert_error(response, 429, "RATE_LIMITED")
    assert response.headers["Retry-After"] == "30"  # to the end of the clock's minute
    assert response.headers["X-RateLimit-Remaining"] == "0"


async def test_capacity_full(make_client: MakeClient) -> None:
    api = await make_client(devices__cpu_sessions=0)
    sid = (await api.create_session())["session_id"]
    response = await api.put(f"/v1/sessions/{sid}/start")
    error = await assert_error(response, 503, "NO_CAPACITY")
    assert response.headers["Retry-After"]
    assert error["details"]["capacity"] == {"current": 0, "max": 0, "available": 0}


async def test_engine_loading(api: ApiClient) -> None:
    api.app[keys.engine_status_key].ready = False
    response = await api.post("/v1/sessions", json={"room": {"platform": "local"}})
    await assert_error(response, 503, "ENGINE_LOADING")


async def test_storage_unavailable(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 50)
    api = await make_client()
    sid = (await api.create_session())["session_id"]
    blocker = sqlite3.connect(api.app[keys.store_key].path, timeout=0.05)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        await assert_error(await api.post("/v1/sessions"), 503, "STORAGE_UNAVAILABLE")
        await assert_error(await api.put(f"/v1/sessions/{sid}/start"), 503, "STORAGE_UNAVAILABLE")
    finally:
        blocker.rollback()
        blocker.close()
    # Nothing half-written: the session is still created, its seat given back, and it starts.
    assert (await api.json("GET", f"/v1/sessions/{sid}"))["session"]["status"] == "created"
    assert api.app[keys.devices_key].concurrency()["current"] == 0
    await api.start_session(sid)


async def test_unexpected_exception_is_500_without_details(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.app[keys.manager_key], "get", boom)
    with caplog.at_level(logging.ERROR):
        response = await api.get("/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    await assert_error(response, 500, "INTERNAL", "Internal server error")
    assert "secret internals" not in await response.text()
    assert "secret internals" in caplog.text
    assert any(record.exc_info for record in caplog.records)
