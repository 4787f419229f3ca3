"""Daily in live sessions (SPEC §7) through the real app: rooms made by Daily's REST API (a local
fake of it on 127.0.0.1), rooms given at create or in session.init, the avatar joining after
session.init (a fake daily-python with the real library's threading rules), join failures that
never stop the session, the empty-room end, and the shutdown order leave → release → delete."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.app import create_app
from agenthuman_local.transports.daily_rooms import choose_room
from tests.conftest import ApiClient, make_settings
from tests.fakes import VirtualClock
from tests.fakes_daily import FakeCallClient, FakeDaily
from tests.test_daily_rest import KEY, fail_key, fake_daily_app, rooms_key, tokens_key
from tests.test_errors import assert_error
from tests.test_ws_helpers import Conn, Live, fake_renderer_ctx, wait_for

ROOT = Path(__file__).resolve().parent.parent
URL_ERROR = 'Failed to parse url: InvalidUrl("not-a-url", RelativeUrlWithoutBase)'
GIVEN = {"url": "https://team.daily.co/standup", "token": "their-token"}
SIZE = {"video_width": 160, "video_height": 128}


@pytest.fixture
async def rest(aiohttp_server: Any, fake_daily: FakeDaily) -> Any:
    """Daily's REST API faked on 127.0.0.1; each request is also noted in the fake's `calls`."""
    app = fake_daily_app()

    async def note(request: web.Request, response: web.StreamResponse) -> None:
        fake_daily.record(f"rest:{request.method} {request.path}")

    app.on_response_prepare.append(note)
    return await aiohttp_server(app)


class JoinNotingClient(FakeCallClient):
    """The fake client, also keeping the room URL and token it was asked to join."""

    join_url: str | None = None
    join_token: str | None = None

    def join(self, url: str, token: Any = None, client_settings: Any = None, completion=None):
        self.join_url, self.join_token = url, token
        super().join(url, token, client_settings, completion)


def noting(fake: FakeDaily) -> FakeDaily:
    fake.lib = replace(
        fake.lib, CallClient=lambda event_handler=None: JoinNotingClient(fake, event_handler)
    )
    return fake


@pytest.fixture
def fake_daily() -> FakeDaily:
    return noting(FakeDaily(already_in_room=[("p1", "Ana")]))


async def make_live(
    aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily, rest: Any = None, **overrides: Any
) -> Live:
    if rest is not None:
        overrides.update(daily__api_key=KEY, daily__api_url=str(rest.make_url("/v1")))
    clock = VirtualClock()
    app = create_app(
        make_settings(tmp_path, **overrides), environ={}, contexts=[fake_renderer_ctx(clock)]
    )
    app[keys.daily_lib_key] = fake_daily.lib
    app[keys.daily_transport_options_key] = {"join_backoff_s": 0.01, "leave_timeout_s": 2.0}
    client = await aiohttp_client(app)
    return Live(ApiClient(client, app[keys.first_key_key].key), clock)


async def states(conn: Conn, n: int) -> list[tuple[str, Any]]:
    """The first `n` session.state events (state, reason), waiting for them."""
    while len(conn.of("session.state")) < n:
        await conn.next_event()
    return [(e["state"], e["reason"]) for e in conn.of("session.state")[:n]]


async def get_session(live: Live, sid: str) -> dict[str, Any]:
    return dict((await live.api.json("GET", f"/v1/sessions/{sid}"))["session"])


async def test_a_room_is_made_at_create_joined_after_init_and_deleted_at_end(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, rest)
    created = await live.api.create_session()
    room = created["daily_room"]
    assert set(room) == {"url", "name", "token"}
    assert room["url"] == f"https://fake.daily.co/{room['name']}"
    assert rest.app[tokens_key][room["token"]]["room_name"] == room["name"]
    assert rest.app[rooms_key][room["name"]]["privacy"] == "private"
    assert (await get_session(live, created["session_id"]))["daily_room"] == room
    assert "join" not in fake_daily.calls  # nobody joins before session.init

    await live.api.start_session(created["session_id"])
    conn = await live.connect(created["session_id"], created["access_token"], **SIZE)
    assert conn.established["type"] == "connection.established", conn.established
    assert await states(conn, 2) == [("connecting", None), ("joined_room", None)]
    client = fake_daily.client
    assert client.user_name == "AI Avatar (AH)"
    # The avatar publishes the session's frames: video at the session's size, audio paced.
    await live.tick(5)
    await wait_for(lambda: len(fake_daily.video_sources[0].frames) >= 3)
    assert len(fake_daily.video_sources[0].frames[0]) == 160 * 128 * 3
    await wait_for(lambda: len(fake_daily.audio_sources[0].chunks) >= 3)

    await live.api.put(f"/v1/sessions/{created['session_id']}/end")
    await wait_for(lambda: room["name"] not in rest.app[rooms_key])
    calls = fake_daily.calls
    delete = f"rest:DELETE /v1/rooms/{room['name']}"
    assert calls.index("leave") < calls.index("release") < calls.index(delete)
    assert fake_daily.release_threads and "MainThread" not in fake_daily.release_threads
    assert fake_daily.violations == []


async def test_a_room_made_for_a_session_that_never_starts_is_deleted_too(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, rest)
    created = await live.api.create_session()
    assert created["daily_room"]["name"] in rest.app[rooms_key]
    await live.api.put(f"/v1/sessions/{created['session_id']}/end")
    await wait_for(lambda: rest.app[rooms_key] == {})
    assert fake_daily.clients == []


async def test_dailys_rest_error_fails_the_create_and_stores_nothing(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, rest)
    rest.app[fail_key]["/v1/meeting-tokens"] = 500
    error = await assert_error(await live.api.post("/v1/sessions", json={}), 502, "DAILY_API_ERROR")
    assert "500" in error["message"] and "meeting-tokens" in error["message"]
    assert error["details"]["daily_status"] == 500
    assert rest.app[rooms_key] == {}  # the room made before the token failed was deleted
    listed = await live.api.json("GET", "/v1/sessions")
    assert listed["sessions"] == []


async def test_a_bad_daily_key_is_named_in_the_create_error(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(
        aiohttp_client,
        tmp_path,
        fake_daily,
        daily__api_key="wrong-key",
        daily__api_url=str(rest.make_url("/v1")),
    )
    error = await assert_error(await live.api.post("/v1/sessions", json={}), 502, "DAILY_API_ERROR")
    assert "authentication-error" in error["message"] and "Invalid API key" in error["message"]
    assert error["details"] == {"daily_status": 401, "daily_error": "authentication-error"}


async def test_a_room_given_at_create_is_used_as_given_and_never_deleted(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, rest)
    created = await live.api.create_session({"daily_room": GIVEN})
    assert created["daily_room"] == {**GIVEN, "name": "standup"}
    assert not [c for c in fake_daily.calls if c.startswith("rest:")]
    sid = created["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, created["access_token"], **SIZE)
    assert await states(conn, 2) == [("connecting", None), ("joined_room", None)]
    assert fake_daily.client.join_url == GIVEN["url"]
    assert fake_daily.client.join_token == GIVEN["token"]
    await live.api.put(f"/v1/sessions/{sid}/end")
    assert not [c for c in fake_daily.calls if c.startswith("rest:")]
    assert fake_daily.calls[-2:] == ["release:start", "release"]


async def test_era_c_room_and_session_init_room(
    aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily)
    body = {"room": {"platform": "daily", **GIVEN}}
    created = (await live.api.json("POST", "/v1/sessions", 201, json=body))["session"]
    conn = await live.connect(
        created["session_id"], created["session_token"], era="C", path="/v1/ws", **SIZE
    )
    assert await states(conn, 2) == [("connecting", None), ("joined_room", None)]
    assert fake_daily.client.join_url == GIVEN["url"]

    # Era [B] without a Daily key: no room until session.init names one (with its own name).
    other = await live.api.create_session()
    assert other["daily_room"] is None
    await live.api.start_session(other["session_id"])
    room = {"platform": "daily", "url": "https://team.daily.co/b", "token": "t2"}
    conn = await live.connect(
        other["session_id"], other["access_token"], room={**room, "display_name": "Eve"}, **SIZE
    )
    assert await states(conn, 2) == [("connecting", None), ("joined_room", None)]
    assert fake_daily.client.user_name == "Eve"
    got = (await get_session(live, other["session_id"]))["daily_room"]
    assert got == {"url": room["url"], "name": "b", "token": "t2"}


async def test_a_failed_join_is_room_error_and_the_session_keeps_rendering(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    fake_daily = noting(FakeDaily(join_results=[URL_ERROR]))
    live = await make_live(aiohttp_client, tmp_path, fake_daily)
    created = await live.api.create_session({"daily_room": GIVEN})
    sid = created["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, created["access_token"], output={"video": "jpeg"}, **SIZE)
    (first, _), (state, reason) = await states(conn, 2)
    assert (first, state) == ("connecting", "room_error")
    assert "InvalidUrl" in reason
    session = await get_session(live, sid)
    assert session["daily_room"] == {**GIVEN, "name": "standup", "error": reason}
    assert session["status"] == "started"
    await live.tick(5)
    await conn.media_count(3)  # the other outputs go on
    assert fake_daily.calls.count("join") == 1  # a bad URL is never retried
    assert fake_daily.video_sources[0].frames == []
    await conn.barrier()
    assert (await get_session(live, sid))["status"] == "started"


async def test_a_session_init_room_without_a_url_is_a_room_error(
    aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, room={"platform": "daily", "token": "t"}, **SIZE)
    ((state, reason),) = await states(conn, 1)
    assert state == "room_error" and "config.room.url" in reason
    await conn.barrier()
    assert fake_daily.clients == []


async def test_everyone_gone_for_the_timeout_ends_the_session_room_empty(
    aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, daily__empty_room_timeout_s=0.2)
    created = await live.api.create_session({"daily_room": GIVEN})
    sid = created["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, created["access_token"], **SIZE)
    await states(conn, 2)
    await live.tick(10)  # 0.4 s: Ana is still there, the timer is not running
    assert live.clock is not None and live.clock.sleeping == 2  # the session's own two
    assert (await get_session(live, sid))["status"] == "started"
    fake_daily.client.remote_leaves("p1")
    # And now the empty-room timer, on the session's clock (a wall-clock timer never shows).
    await asyncio.wait_for(live.clock.settled(3), 5)
    await live.tick(4)
    assert (await get_session(live, sid))["status"] == "started"
    live.clock.advance(0.05)  # 0.21 s after Ana left
    ended = await conn.until("session.state")
    while ended["state"] != "ended":
        ended = await conn.until("session.state")
    assert ended["reason"] == "room_empty"
    assert (await get_session(live, sid))["end_reason"] == "room_empty"
    await wait_for(lambda: "release" in fake_daily.calls)


async def test_being_removed_from_the_room_is_a_room_error_not_an_end(
    aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily)
    created = await live.api.create_session({"daily_room": GIVEN})
    sid = created["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, created["access_token"], output={"video": "jpeg"}, **SIZE)
    await states(conn, 2)
    fake_daily.client.kicked_out()
    (state, reason) = (await states(conn, 3))[2]
    assert state == "room_error" and "no longer in the Daily room" in reason
    session = await get_session(live, sid)
    assert session["status"] == "started"
    frames_before = len(fake_daily.video_sources[0].frames)
    await live.tick(3)
    await conn.media_count(2)
    assert len(fake_daily.video_sources[0].frames) == frames_before  # nothing sent to the room
    await wait_for_error(live, sid)


async def wait_for_error(live: Live, sid: str) -> None:
    for _ in range(200):
        if "error" in ((await get_session(live, sid))["daily_room"] or {}):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("daily_room.error never appeared")


async def test_shutdown_leaves_releases_and_deletes_every_room(
    rest: Any, aiohttp_client: Any, tmp_path: Path, fake_daily: FakeDaily
) -> None:
    live = await make_live(aiohttp_client, tmp_path, fake_daily, rest)
    created = await live.api.create_session()
    await live.api.start_session(created["session_id"])
    conn = await live.connect(created["session_id"], created["access_token"], **SIZE)
    await states(conn, 2)
    await live.api.client.close()  # the app shuts down: sessions end server_shutdown
    assert rest.app[rooms_key] == {}
    calls = fake_daily.calls
    assert (
        calls.index("leave")
        < calls.index("release")
        < calls.index(f"rest:DELETE /v1/rooms/{created['daily_room']['name']}")
    )


def test_choose_room() -> None:
    stored = {"url": "https://x.daily.co/r", "name": "r", "token": "t"}
    assert choose_room(None, None, "A") is None
    assert choose_room({"platform": "local"}, stored, "A") is None
    assert choose_room(None, stored, "A").as_json() == stored  # type: ignore[union-attr]
    given = choose_room({"url": "https://y.daily.co/s", "token": "u"}, stored, "A")
    assert given is not None and given.as_json()["name"] == "s" and given.display_name == "A"
    with pytest.raises(ValueError, match="only daily"):
        choose_room({"platform": "livekit", "url": "u", "token": "t"}, None, "A")


@pytest.mark.timeout(90)
def test_the_real_library_reports_a_bad_room_url_as_room_error(tmp_path: Path) -> None:
    """daily-python itself (in a subprocess: it can abort a process) through the hook path."""
    pytest.importorskip("daily")
    script = ROOT / "tests" / "daily_subprocess" / "session_room_error.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["states"][0] == ["connecting", None]
    assert out["states"][1][0] == "room_error" and "InvalidUrl" in out["states"][1][1]
    assert "InvalidUrl" in out["daily_room"]["error"]
    assert out["status_after"] == "started" and out["frames"] > 0
    assert out["end_reason"] == "client_request"
