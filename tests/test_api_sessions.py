"""Sessions over HTTP (SPEC §3, §5): creating them in both eras, field for field, listing them,
and how the token is kept. The start/end lifecycle is in test_api_sessions_lifecycle.py."""

from __future__ import annotations

import re
from typing import Any

from agenthuman_local import ids, keys
from tests.conftest import ApiClient, MakeClient
from tests.session_shape import ISO_Z, SESSION_FIELDS


async def test_create_era_b(api: ApiClient) -> None:
    body = await api.json(
        "POST", "/v1/sessions", 201, json={"avatar_id": "avat_local_ben", "metadata": {"a": 1}}
    )
    assert set(body) == {"success", "session", "usage", "message"}
    assert body["success"] is True
    assert body["message"] == "Session created successfully"
    assert body["usage"] == {
        "concurrency": {"current": 0, "max": 4, "available": 4},
        "minutes": {"total_remaining": None},
    }
    session = body["session"]
    assert set(session) == SESSION_FIELDS | {"access_token", "session_token"}
    assert re.fullmatch(r"sess_[0-9A-Z]{26}", session["session_id"])
    assert session["access_token"] == session["session_token"]
    assert len(session["access_token"]) >= 32
    assert session["avatar"] == {
        "avatar_id": "avat_local_ben",
        "name": "Ben",
        "url": f"{api.app[keys.settings_key].base_url}/v1/avatars/avat_local_ben/preview",
    }
    assert session["session_type"] == "webrtc_video"
    assert session["status"] == "created"
    assert ISO_Z.match(session["created_at"])
    assert session["started_at"] is None and session["ended_at"] is None
    assert session["expiration"] is None
    assert session["duration"] == 0
    assert session["aspect_ratio"] == "16:9"
    assert session["video"] == {"width": 1280, "height": 720, "fps": 25}
    assert session["daily_room"] is None
    assert session["metadata"] == {"a": 1}
    assert session["end_reason"] is None
    assert session["stats"] == {
        "frames_published": 0,
        "frames_late": 0,
        "frames_dropped": 0,
        "audio_ms_received": 0,
        "audio_ms_played": 0,
        "first_frame_latency_ms": None,
    }


async def test_viewer_url_carries_a_per_session_token(api: ApiClient) -> None:
    a = await api.create_session()
    b = await api.create_session()
    base = api.app[keys.settings_key].base_url
    pattern = re.compile(
        re.escape(f"{base}/v1/sessions/{a['session_id']}/viewer?token=") + ".{20,}"
    )
    assert pattern.fullmatch(a["viewer_url"])
    token_a = a["viewer_url"].split("token=")[1]
    assert token_a != b["viewer_url"].split("token=")[1]
    assert token_a != a["access_token"]


async def test_empty_body_and_no_body_create_with_defaults(api: ApiClient) -> None:
    response = await api.post("/v1/sessions")
    assert response.status == 201
    session = (await response.json())["session"]
    assert session["avatar"]["avatar_id"] == "avat_local_ada"
    assert session["metadata"] == {}


async def test_aspect_ratios_set_the_video_size(api: ApiClient) -> None:
    sizes = {
        "4:3": (960, 720),
        "3:4": (720, 960),
        "1:1": (720, 720),
        "16:9": (1280, 720),
        "9:16": (720, 1280),
    }
    for ratio, (width, height) in sizes.items():
        session = await api.create_session({"aspect_ratio": ratio})
        assert session["aspect_ratio"] == ratio
        assert session["video"] == {"width": width, "height": height, "fps": 25}


async def test_avatar_and_avatar_id_are_synonyms_and_aliases_resolve(api: ApiClient) -> None:
    assert (await api.create_session({"avatar": "avat_local_ben"}))["avatar"]["name"] == "Ben"
    for alias in ("avat_01KMZJ4WE5QCD9G3EK21QW8NJK", "avat_01KMZHXFPBVCXA5ATK85HCP8G1"):
        session = await api.create_session({"avatar_id": alias})
        assert session["avatar"]["avatar_id"] == "avat_local_ada"


async def test_agenthuman_avatar_env_is_an_alias(make_client: MakeClient) -> None:
    api = await make_client(environ={"AGENTHUMAN_AVATAR": "avat_my_own"})
    session = await api.create_session({"avatar": "avat_my_own"})
    assert session["avatar"]["avatar_id"] == "avat_local_ada"


async def test_unknown_avatar_is_404(api: ApiClient) -> None:
    body = await api.json("POST", "/v1/sessions", 404, json={"avatar_id": "avat_nope"})
    assert body["error"]["code"] == "AVATAR_NOT_FOUND"


async def test_bring_your_own_daily_room_era_b(api: ApiClient) -> None:
    room = {"url": "https://example.daily.co/my-room", "token": "tok"}
    session = await api.create_session({"daily_room": room})
    assert session["daily_room"] == {**room, "name": "my-room"}
    fetched = await api.json("GET", f"/v1/sessions/{session['session_id']}")
    assert fetched["session"]["daily_room"] == {**room, "name": "my-room"}


# -- era [C] ------------------------------------------------------------------------------------


async def test_create_era_c_local_room_is_created_and_started(api: ApiClient) -> None:
    body = await api.json(
        "POST",
        "/v1/sessions",
        201,
        json={"avatar": "avat_local_ada", "room": {"platform": "local"}, "metadata": {"k": "v"}},
    )
    session = body["session"]
    assert set(session) == SESSION_FIELDS | {"access_token", "session_token", "ws_uri"}
    assert session["status"] == "started"
    assert session["started_at"] is not None
    assert session["aspect_ratio"] == "4:3"
    assert session["video"] == {"width": 960, "height": 720, "fps": 25}
    assert session["daily_room"] is None
    sid = session["session_id"]
    assert session["ws_uri"] == f"{api.app[keys.settings_key].ws_base_url}/v1/sessions/{sid}/ws"
    assert body["usage"]["concurrency"]["current"] == 1
    # Start on an era [C] session is the same idempotent answer.
    assert (await api.start_session(sid))["ws_uri"] == session["ws_uri"]


async def test_create_era_c_daily_room(api: ApiClient) -> None:
    room = {
        "platform": "daily",
        "url": "https://acme.daily.co/room-1",
        "token": "meeting-token",
        "display_name": "AI Avatar (AH)",  # an extra the hosted clients send; ignored
    }
    session = await api.create_session({"avatar_id": "avat_local_ben", "room": room})
    assert session["daily_room"] == {
        "url": "https://acme.daily.co/room-1",
        "name": "room-1",
        "token": "meeting-token",
    }


async def test_era_c_daily_room_needs_url_and_token(api: ApiClient) -> None:
    for room, field in (
        ({"platform": "daily", "token": "t"}, "room.url"),
        ({"platform": "daily", "url": "https://x.daily.co/r"}, "room.token"),
        ({"platform": "daily", "url": "ftp://x/r", "token": "t"}, "room.url"),
        ({}, "room.platform"),
        ({"platform": "zoom"}, "room.platform"),
    ):
        body = await api.json("POST", "/v1/sessions", 400, json={"room": room})
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert body["error"]["message"].startswith(field), body


async def test_livekit_and_proxy_are_unsupported(api: ApiClient) -> None:
    for platform in ("livekit", "proxy"):
        body = await api.json(
            "POST", "/v1/sessions", 400, json={"room": {"platform": platform, "url": "wss://x"}}
        )
        assert body["error"]["code"] == "UNSUPPORTED_PLATFORM"
        assert body["error"]["message"] == "LiveKit rooms are not supported by this server yet"
    listed = await api.json("GET", "/v1/sessions")
    assert listed["sessions"] == []


async def test_era_c_without_capacity_stores_nothing(make_client: MakeClient) -> None:
    api = await make_client(devices__cpu_sessions=0)
    body = await api.json("POST", "/v1/sessions", 503, json={"room": {"platform": "local"}})
    assert body["error"]["code"] == "NO_CAPACITY"
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []


async def test_while_the_engine_loads(api: ApiClient) -> None:
    api.app[keys.engine_status_key].ready = False
    body = await api.json("POST", "/v1/sessions", 503, json={"room": {"platform": "local"}})
    assert body["error"]["code"] == "ENGINE_LOADING"
    sid = (await api.create_session())["session_id"]  # era [B] create still works
    started = await api.start_session(sid)
    assert started["ws_uri"] == "try_again"
    assert started["expiration"] is None
    assert (await api.json("GET", f"/v1/sessions/{sid}"))["session"]["status"] == "created"
    assert (await api.json("GET", "/healthz"))["engine"] == "loading"
    api.app[keys.engine_status_key].ready = True
    assert (await api.start_session(sid))["ws_uri"].endswith(f"/v1/sessions/{sid}/ws")


# -- listing ------------------------------------------------------------------------------------


async def test_list_newest_first_with_status_filter(api: ApiClient) -> None:
    ids = [(await api.create_session())["session_id"] for _ in range(4)]
    await api.start_session(ids[1])
    await api.json("PUT", f"/v1/sessions/{ids[2]}/end")
    listed = await api.json("GET", "/v1/sessions")
    assert set(listed) == {"success", "sessions", "next_cursor"}
    assert [s["session_id"] for s in listed["sessions"]] == ids[::-1]
    assert listed["next_cursor"] is None

    def of(status: str) -> Any:
        return api.json("GET", f"/v1/sessions?status={status}")

    assert [s["session_id"] for s in (await of("created"))["sessions"]] == [ids[3], ids[0]]
    assert [s["session_id"] for s in (await of("started"))["sessions"]] == [ids[1]]
    assert [s["session_id"] for s in (await of("ended"))["sessions"]] == [ids[2]]
    assert len((await of("all"))["sessions"]) == 4
    assert len((await of("active"))["sessions"]) == 4  # unknown → all, as hosted


async def test_list_pages_with_cursor(api: ApiClient) -> None:
    ids = [(await api.create_session())["session_id"] for _ in range(5)]
    seen: list[str] = []
    cursor = ""
    while True:
        page = await api.json("GET", f"/v1/sessions?limit=2&cursor={cursor}")
        assert len(page["sessions"]) <= 2
        seen += [s["session_id"] for s in page["sessions"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == ids[::-1]


async def test_list_limit_bounds(api: ApiClient) -> None:
    for _ in range(3):
        await api.create_session()
    assert len((await api.json("GET", "/v1/sessions?limit=9999"))["sessions"]) == 3  # capped
    for bad in ("0", "-1", "many"):
        body = await api.json("GET", f"/v1/sessions?limit={bad}", 400)
        assert body["error"]["message"].startswith("limit")
    body = await api.json("GET", "/v1/sessions?cursor=nonsense", 400)
    assert body["error"]["message"].startswith("cursor")


async def test_list_default_limit_is_50(api: ApiClient) -> None:
    for _ in range(51):
        await api.create_session()
    page = await api.json("GET", "/v1/sessions")
    assert len(page["sessions"]) == 50
    assert page["next_cursor"] is not None


async def test_the_session_token_is_stored_only_as_a_hash(api: ApiClient) -> None:
    created = await api.create_session()
    store = api.app[keys.store_key]
    row = await store.get_session(created["session_id"])
    assert row is not None
    assert row.token_hash == ids.secret_hash(created["access_token"])
    await api.client.close()  # checkpoint the WAL so the main file holds every byte
    assert created["access_token"].encode() not in store.path.read_bytes()
