"""The session lifecycle over HTTP (SPEC §3, §5): start and end, their idempotence, seats and
capacity, the expiry and connect timers, and the live duration."""

from __future__ import annotations

import asyncio
from typing import Any

from agenthuman_local import keys
from tests.conftest import ApiClient, MakeClient
from tests.session_shape import ISO_Z, SESSION_FIELDS
from tests.test_ws_helpers import Live


async def test_start_then_get_then_end(api: ApiClient) -> None:
    session = await api.create_session()
    sid = session["session_id"]
    started = await api.start_session(sid)
    assert set(started) == {"success", "ws_uri", "expiration", "message"}
    assert started["message"] == "Session started successfully"
    ws_base = api.app[keys.settings_key].ws_base_url
    assert started["ws_uri"] == f"{ws_base}/v1/sessions/{sid}/ws"
    assert started["expiration"] is None

    got = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert set(got) == SESSION_FIELDS  # never the token, never the ws_uri
    assert got["status"] == "started"
    assert ISO_Z.match(got["started_at"])
    assert isinstance(got["duration"], int)

    ended = await api.json("PUT", f"/v1/sessions/{sid}/end")
    assert set(ended) == {"success", "session", "message"}
    assert ended["message"] == "Session ended successfully"
    assert ended["session"]["status"] == "ended"
    assert ended["session"]["end_reason"] == "client_request"
    assert ISO_Z.match(ended["session"]["ended_at"])
    assert set(ended["session"]) == SESSION_FIELDS


async def test_start_and_end_accept_put_and_post(api: ApiClient) -> None:
    for method in ("PUT", "POST"):
        sid = (await api.create_session())["session_id"]
        assert (await api.json(method, f"/v1/sessions/{sid}/start"))["ws_uri"].endswith("/ws")
        # Pipecat sends `{}` as the end body.
        ended = await api.json(method, f"/v1/sessions/{sid}/end", json={})
        assert ended["session"]["status"] == "ended"


async def test_start_is_idempotent(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    first = await api.start_session(sid)
    again = await api.json("POST", f"/v1/sessions/{sid}/start")
    assert again["ws_uri"] == first["ws_uri"]
    assert again["expiration"] == first["expiration"]
    usage = await api.json("GET", "/v1/usage")
    assert usage["usage"]["concurrency"]["current"] == 1


async def test_end_is_idempotent_and_start_after_end_is_409(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    first = await api.json("PUT", f"/v1/sessions/{sid}/end")
    again = await api.json("POST", f"/v1/sessions/{sid}/end")
    assert again["success"] is True
    assert again["session"] == first["session"]
    body = await api.json("PUT", f"/v1/sessions/{sid}/start", 409)
    assert body["error"]["code"] == "SESSION_ENDED"


async def test_ending_a_created_session(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    ended = (await api.json("PUT", f"/v1/sessions/{sid}/end"))["session"]
    assert ended["status"] == "ended"
    assert ended["started_at"] is None
    assert ended["duration"] == 0
    assert ended["end_reason"] == "client_request"


async def test_ending_frees_the_seat(make_client: MakeClient) -> None:
    api = await make_client(devices__cpu_sessions=1)
    first = (await api.create_session())["session_id"]
    second = (await api.create_session())["session_id"]
    await api.start_session(first)
    assert (await api.json("PUT", f"/v1/sessions/{second}/start", 503))["error"]["code"] == (
        "NO_CAPACITY"
    )
    await api.json("PUT", f"/v1/sessions/{first}/end")
    await api.start_session(second)


async def test_no_capacity(make_client: MakeClient) -> None:
    api = await make_client(devices__cpu_sessions=1)
    await api.start_session((await api.create_session())["session_id"])
    sid = (await api.create_session())["session_id"]
    response = await api.put(f"/v1/sessions/{sid}/start")
    body = await response.json()
    assert response.status == 503
    assert body["error"]["code"] == "NO_CAPACITY"
    assert int(response.headers["Retry-After"]) > 0
    assert body["error"]["details"]["capacity"] == {"current": 1, "max": 1, "available": 0}
    got = await api.json("GET", f"/v1/sessions/{sid}")
    assert got["session"]["status"] == "created"


async def test_twenty_concurrent_starts_lease_one_seat(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    results = await asyncio.gather(*(api.start_session(sid) for _ in range(20)))
    assert len({r["ws_uri"] for r in results}) == 1
    assert len({r["expiration"] for r in results}) == 1
    devices = api.app[keys.devices_key].devices
    assert sum(len(d.sessions) for d in devices) == 1


async def test_expiration_from_max_duration(make_client: MakeClient) -> None:
    api = await make_client(session__max_duration_s=3600)
    sid = (await api.create_session())["session_id"]
    started = await api.start_session(sid)
    assert ISO_Z.match(started["expiration"])
    got = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert got["expiration"] == started["expiration"]


async def test_session_expires(make_client: MakeClient) -> None:
    live = await Live.make(make_client, session__max_duration_s=0.2)  # timers on virtual time
    api = live.api
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    api.app[keys.manager_key].mark_connected(sid)  # keep the connect timer out of it
    await live.clock.settled(1)  # the expiry timer
    live.clock.advance(0.2)
    session = await _wait_for_status(api, sid, "ended")
    assert session["end_reason"] == "expired"


async def test_connect_timeout_ends_a_silent_session(make_client: MakeClient) -> None:
    live = await Live.make(make_client, ws__connect_timeout_s=0.2)
    api = live.api
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    await live.clock.settled(1)
    live.clock.advance(0.2)
    session = await _wait_for_status(api, sid, "ended")
    assert session["end_reason"] == "websocket_timeout"
    assert api.app[keys.devices_key].concurrency()["current"] == 0


async def test_mark_connected_disarms_the_connect_timeout(make_client: MakeClient) -> None:
    live = await Live.make(make_client, ws__connect_timeout_s=0.2)
    api = live.api
    silent = (await api.create_session())["session_id"]  # the control: its timer fires
    sid = (await api.create_session())["session_id"]
    await api.start_session(silent)
    await api.start_session(sid)
    api.app[keys.manager_key].mark_connected(sid)
    await live.clock.settled(1)
    assert live.clock.sleeping == 1  # the silent session's timer only
    live.clock.advance(0.4)
    assert (await _wait_for_status(api, silent, "ended"))["end_reason"] == "websocket_timeout"
    assert (await api.json("GET", f"/v1/sessions/{sid}"))["session"]["status"] == "started"


async def _wait_for_status(api: ApiClient, sid: str, status: str) -> dict[str, Any]:
    for _ in range(100):
        session = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
        if session["status"] == status:
            return dict(session)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sid} never reached {status}")


async def test_duration_counts_whole_seconds(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    store = api.app[keys.store_key]
    row = await store.get_session(sid)
    assert row is not None
    # Move the start back 75.6 s to see the live duration without waiting.
    async with store._write() as tx:
        await tx.run(
            "UPDATE sessions SET started_at = ? WHERE session_id = ?", (row.created_at - 75.6, sid)
        )
    got = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert got["duration"] in (75, 76)
    ended = (await api.json("PUT", f"/v1/sessions/{sid}/end"))["session"]
    assert isinstance(ended["duration"], int) and ended["duration"] >= 75
