"""Health, usage, the live-session factory, shutdown and restart (SPEC §5, §6, §11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.paths import DB_FILE
from agenthuman_local.records import Session
from agenthuman_local.sessions.manager import SessionManager
from agenthuman_local.sessions.state import EndReason
from agenthuman_local.store import Store
from tests.conftest import ApiClient, MakeClient
from tests.test_errors import assert_error


async def test_healthz(api: ApiClient) -> None:
    body = await api.json("GET", "/healthz", key=None)
    assert body == {
        "status": "ok",
        "engine": "ready",
        "devices": [
            {"name": "cpu", "kind": "cpu", "label": "CPU", "sessions": 0, "capacity": 4, "load": 0}
        ],
    }


async def test_usage(api: ApiClient) -> None:
    live = (await api.create_session())["session_id"]
    await api.create_session()
    await api.start_session(live)
    body = await api.json("GET", "/v1/usage")
    assert set(body) == {"success", "usage"}
    usage = body["usage"]
    assert usage["concurrency"] == {"current": 1, "max": 4, "available": 3}
    assert usage["minutes"] == {"total_remaining": None}
    assert [s["session_id"] for s in usage["active_sessions"]] == [live]
    assert usage["devices"] == [
        {"name": "cpu", "kind": "cpu", "label": "CPU", "sessions": 1, "capacity": 4, "load": 1.0}
    ]


async def test_runner_stats_show_in_get(api: ApiClient) -> None:
    sid = (await api.create_session())["session_id"]
    await api.app[keys.store_key].set_session_stats(
        sid, {"frames_published": 250, "first_frame_latency_ms": 41}
    )
    stats = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]["stats"]
    assert stats["frames_published"] == 250
    assert stats["first_frame_latency_ms"] == 41
    assert stats["frames_late"] == 0


class FakeLive:
    """A session's live part with no media: what the manager and the REST routes read of one."""

    def __init__(self, session: Session, log: list[tuple[str, str]]) -> None:
        self.session = session
        self.log = log

    def stats(self) -> None:
        return None  # no media yet: GET shows the stored stats

    def timeline_jsonl(self) -> None:
        return None

    async def aclose(self, reason: EndReason) -> None:
        await asyncio.sleep(0.01)  # the manager must wait for this before reporting `ended`
        self.log.append(("aclose", reason.value))


def live_context(log: list[tuple[str, str]], *, fail: bool = False):  # type: ignore[no-untyped-def]
    async def factory(session: Session) -> FakeLive:
        log.append(("start", session.session_id))
        if fail:
            raise RuntimeError("renderer exploded")
        return FakeLive(session, log)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.live_factory_key] = factory
        yield

    return ctx


async def test_live_session_lifecycle(make_client: MakeClient) -> None:
    log: list[tuple[str, str]] = []
    api = await make_client(contexts=[live_context(log)])
    sid = (await api.create_session())["session_id"]
    await asyncio.gather(*(api.start_session(sid) for _ in range(5)))
    assert log == [("start", sid)]
    manager: SessionManager = api.app[keys.manager_key]
    assert isinstance(manager.live(sid), FakeLive)
    await api.json("POST", f"/v1/sessions/{sid}/end")
    assert log == [("start", sid), ("aclose", "client_request")]
    assert manager.live(sid) is None


async def test_a_live_session_asks_to_end(make_client: MakeClient) -> None:
    log: list[tuple[str, str]] = []
    api = await make_client(contexts=[live_context(log)])
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    api.app[keys.manager_key].end_soon(sid, EndReason.ERROR)
    for _ in range(100):
        session = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
        if session["status"] == "ended":
            break
        await asyncio.sleep(0.02)
    assert session["end_reason"] == "error"
    assert log[-1] == ("aclose", "error")


async def test_a_failing_live_factory_ends_the_session_with_error(make_client: MakeClient) -> None:
    log: list[tuple[str, str]] = []
    api = await make_client(contexts=[live_context(log, fail=True)])
    sid = (await api.create_session())["session_id"]
    await assert_error(await api.put(f"/v1/sessions/{sid}/start"), 500, "INTERNAL")
    session = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert (session["status"], session["end_reason"]) == ("ended", "error")
    assert api.app[keys.devices_key].concurrency()["current"] == 0


async def test_shutdown_ends_live_sessions(make_client: MakeClient, tmp_path: Path) -> None:
    log: list[tuple[str, str]] = []
    api = await make_client(contexts=[live_context(log)])
    live = (await api.create_session())["session_id"]
    idle = (await api.create_session())["session_id"]
    await api.start_session(live)
    await api.client.close()
    assert ("aclose", "server_shutdown") in log
    store = await Store.open(tmp_path / "data" / DB_FILE)
    try:
        ended = await store.get_session(live)
        assert ended is not None
        assert (ended.status.value, ended.end_reason) == ("ended", "server_shutdown")
        untouched = await store.get_session(idle)
        assert untouched is not None and untouched.status.value == "created"
    finally:
        await store.close()


async def test_a_start_after_shutdown_began_ends_at_once(make_client: MakeClient) -> None:
    """`on_shutdown` has ended the live sessions; a start that comes after (a request already
    in flight) must not leave a session rendering: 503, and the session is ended."""
    log: list[tuple[str, str]] = []
    api = await make_client(contexts=[live_context(log)])
    sid = (await api.create_session())["session_id"]
    await api.app[keys.manager_key].aclose()
    await assert_error(await api.put(f"/v1/sessions/{sid}/start"), 503, "UNAVAILABLE")
    session = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert (session["status"], session["end_reason"]) == ("ended", "server_shutdown")
    assert log == []  # no runner was made
    assert api.app[keys.devices_key].concurrency()["current"] == 0


async def test_restart_ends_sessions_left_started(make_client: MakeClient) -> None:
    first = await make_client()
    sid = (await first.create_session())["session_id"]
    await first.start_session(sid)
    # A second process on the same database, as if the first had been killed.
    second = await make_client()
    session = (await second.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert (session["status"], session["end_reason"]) == ("ended", "server_restart")
    await first.client.close()  # the first app's own shutdown does not rewrite the reason
    session = (await second.json("GET", f"/v1/sessions/{sid}"))["session"]
    assert session["end_reason"] == "server_restart"


async def test_a_session_ended_elsewhere_frees_its_seat_here(make_client: MakeClient) -> None:
    log: list[tuple[str, str]] = []
    first = await make_client(contexts=[live_context(log)])
    sid = (await first.create_session())["session_id"]
    await first.start_session(sid)
    await make_client()  # another process on the database ends it (server_restart)
    ended = await first.json("PUT", f"/v1/sessions/{sid}/end")
    assert ended["session"]["end_reason"] == "server_restart"
    assert log[-1] == ("aclose", "client_request")
    assert first.app[keys.devices_key].concurrency()["current"] == 0
