"""The room's state on the viewer page (SPEC §10): each `session.state` a session's runner emits
(`connecting`, `joined_room`, `room_error`) reaches the viewer socket beside the speaking state,
also for a page opened later; and the runner's event listeners, which carry it there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from agenthuman_local import keys
from agenthuman_local.sessions.live import LiveSession
from tests.fakes_daily import FakeDaily
from tests.test_daily_session import GIVEN, SIZE, URL_ERROR, make_live, noting, states
from tests.test_ws_helpers import Live, wait_for


async def open_page(live: Live, session: dict[str, Any]) -> aiohttp.ClientWebSocketResponse:
    """The viewer page's socket, as the page opens it from the session's viewer_url."""
    url = session["viewer_url"].split("/v1/", 1)[1].replace("/viewer?", "/viewer/ws?")
    page = await live.api.client.ws_connect("/v1/" + url)
    await wait_for(lambda: live.api.app[keys.viewer_hub_key].has_viewers(session["session_id"]))
    return page


async def read_until(
    page: aiohttp.ClientWebSocketResponse, kind: str, state: str, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    """The first text message of type `kind` with this `state`, in `seen` or read (and noted in
    `seen`) from the page."""
    for m in seen:
        if m["type"] == kind and m.get("state") == state:
            return m
    while True:
        msg = await page.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT:
            m = json.loads(msg.data)
            seen.append(m)
            if m["type"] == kind and m.get("state") == state:
                return m


async def test_a_room_error_reaches_the_viewer_page_beside_the_speaking_state(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    live = await make_live(aiohttp_client, tmp_path, noting(FakeDaily(join_results=[URL_ERROR])))
    created = await live.api.create_session({"daily_room": GIVEN})
    sid = created["session_id"]
    await live.api.start_session(sid)
    page = await open_page(live, created)
    conn = await live.connect(sid, created["access_token"], output={"video": "jpeg"}, **SIZE)
    (_, (_, client_reason)) = await states(conn, 2)

    seen: list[dict[str, Any]] = []
    error = await read_until(page, "room", "room_error", seen)
    assert error == {"type": "room", "state": "room_error", "reason": client_reason}
    assert "InvalidUrl" in error["reason"]
    rooms = [m["state"] for m in seen if m["type"] == "room"]
    assert rooms == ["connecting", "room_error"]
    # The main state stays the speaking state: the first frame made it `idle`.
    await live.tick(2)
    assert (await read_until(page, "state", "idle", seen))["reason"] is None
    assert not any(m["type"] == "state" and m["state"] == "room_error" for m in seen)

    # A page opened afterwards learns the room's state too, at the next frame.
    late = await open_page(live, created)
    await live.tick(2)
    late_seen: list[dict[str, Any]] = []
    assert (await read_until(late, "room", "room_error", late_seen))["reason"] == client_reason
    assert [m["type"] for m in late_seen][:2] == ["format", "state"]

    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    await read_until(page, "state", "ended", seen)
    for ws in (page, late, conn.ws):
        await ws.close()


async def test_runner_event_listeners_see_every_event_and_a_failing_one_is_skipped(
    make_client: Any,
) -> None:
    live = await Live.make(make_client)
    session = await live.api.create_session()
    sid = session["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, session["access_token"], **SIZE)
    held = live.api.app[keys.manager_key].live(sid)
    assert isinstance(held, LiveSession) and held.runner is not None
    runner = held.runner
    page = await open_page(live, session)
    heard: list[dict[str, Any]] = []

    def failing(event: dict[str, Any]) -> None:
        raise RuntimeError("a broken listener")

    runner.add_event_listener(failing)
    runner.add_event_listener(heard.append)
    runner.emit_state("joined_room")
    runner.keep_alive()
    runner.remove_event_listener(heard.append)
    runner.emit_state("room_error", "gone")

    assert [e["type"] for e in heard] == ["session.state", "session.keep_alive.ack"]
    assert heard[0] == {"type": "session.state", "state": "joined_room", "reason": None}
    # The failing listener held back neither the listener after it, nor the client socket and
    # the viewer page.
    assert [s for s, _ in await states(conn, 2)] == ["joined_room", "room_error"]
    seen: list[dict[str, Any]] = []
    error = await read_until(page, "room", "room_error", seen)
    assert error["reason"] == "gone"
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    await page.close()
    await conn.ws.close()
