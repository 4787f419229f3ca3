"""The SQLite store on real files under tmp_path: schema, keys, avatars, sessions, failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from agenthuman_local import ids
from agenthuman_local.avatars import SHIPPED_AVATARS
from agenthuman_local.errors import StorageUnavailable
from agenthuman_local.migrations import MIGRATIONS
from agenthuman_local.records import EMPTY_STATS, Session
from agenthuman_local.sessions.state import SessionState
from agenthuman_local.store import Store
from tests.old_database import database_at


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    st = await Store.open(tmp_path / "t.db")
    yield st
    await st.close()


def make_session(account_id: str, **fields: object) -> Session:
    base = Session(
        session_id=ids.new_id("sess"),
        account_id=account_id,
        avatar_id="avat_local_ada",
        avatar_name="Ada",
        token_hash=ids.secret_hash("t"),
        aspect_ratio="16:9",
        video_width=1280,
        video_height=720,
        fps=25,
        metadata={"k": [1, 2]},
        daily_room=None,
        created_at=1000.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


async def test_schema_is_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    st = await Store.open(tmp_path / "t.db")
    assert await st.schema_version() == len(MIGRATIONS)
    await st.close()
    again = await Store.open(tmp_path / "t.db")  # re-opening applies nothing twice
    assert await again.schema_version() == len(MIGRATIONS)
    await again.close()
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"accounts", "api_keys", "sessions", "avatars"} <= tables
    conn.close()


async def test_an_sqlite_older_than_3_35_is_refused_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(StorageUnavailable, match=r"SQLite is 3\.31\.1; the server needs 3\.35\.0"):
        await Store.open(tmp_path / "t.db")
    assert not (tmp_path / "t.db").exists()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StorageUnavailable, match="newer than this server"):
        await Store.open(tmp_path / "t.db")


async def test_close_is_idempotent_and_later_calls_fail_cleanly(store: Store) -> None:
    await store.close()
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.has_api_keys()


async def test_a_connection_closed_under_the_store_is_storage_unavailable(store: Store) -> None:
    conn = store._conn
    assert conn is not None
    await conn.close()  # as aiosqlite's own worker does when it stops
    with pytest.raises(StorageUnavailable, match="closed"):
        await store.has_api_keys()


async def test_a_value_json_cannot_hold_is_a_loud_error_not_an_outage(store: Store) -> None:
    """Only a closed connection is STORAGE_UNAVAILABLE; other ValueErrors are bugs upstream."""
    account = await store.ensure_account("a")
    s = make_session(account, metadata={"a": float("inf")})
    with pytest.raises(ValueError, match="Out of range float"):
        await store.insert_session(s)
    assert await store.get_session(s.session_id) is None


async def test_keys(store: Store) -> None:
    assert not await store.has_api_keys()
    alice = await store.ensure_account("alice")
    assert await store.ensure_account("alice") == alice
    key = ids.new_api_key()
    row = await store.add_api_key(alice, key)
    assert (row.prefix, row.account_name) == (key[: ids.KEY_PREFIX_LEN], "alice")
    assert await store.has_api_keys()
    assert await store.account_for_key(key) == alice
    assert await store.account_for_key(key + "x") is None
    listed = await store.list_api_keys()
    assert [(k.prefix, k.account_name, k.revoked_at) for k in listed] == [
        (key[: ids.KEY_PREFIX_LEN], "alice", None)
    ]
    assert await store.revoke_api_keys("ah_") == 1  # any leading part of the prefix
    assert await store.account_for_key(key) is None
    assert await store.revoke_api_keys("ah_") == 0
    assert (await store.list_api_keys())[0].revoked_at is not None


async def test_revoke_prefix_is_literal(store: Store) -> None:
    account = await store.ensure_account("a")
    key = ids.new_api_key()
    await store.add_api_key(account, key)
    assert await store.revoke_api_keys("%") == 0
    assert await store.revoke_api_keys("ah_live") == 1  # `_` is not a wildcard either


async def test_avatars(store: Store) -> None:
    await store.sync_shipped_avatars(SHIPPED_AVATARS)
    await store.sync_shipped_avatars(SHIPPED_AVATARS)  # idempotent
    alice = await store.ensure_account("alice")
    bob = await store.ensure_account("bob")
    photo = await store.create_avatar(
        account_id=alice, name="Me", image_path="i.jpg", preview_path="p.jpg", rig={"mouth": [1, 2]}
    )
    assert photo.avatar_id.startswith("avat_") and photo.kind == "photo"
    fetched = await store.get_avatar(photo.avatar_id)
    assert fetched == photo
    assert await store.get_avatar(photo.avatar_id, alice) == photo
    assert await store.get_avatar(photo.avatar_id, bob) is None
    assert await store.get_avatar("avat_local_ada", bob) is not None
    public, own = await store.list_avatars(alice)
    assert [a.avatar_id for a in public] == ["avat_local_ada", "avat_local_ben"]
    assert own == [photo]
    assert await store.list_avatars(bob) == (public, [])
    assert await store.delete_avatar(photo.avatar_id)
    assert not await store.delete_avatar(photo.avatar_id)


async def test_session_round_trip_and_transitions(store: Store) -> None:
    account = await store.ensure_account("a")
    s = make_session(account)
    await store.insert_session(s)
    assert await store.get_session(s.session_id) == s
    assert await store.get_session(s.session_id, "acct_other") is None
    assert s.status is SessionState.CREATED and s.stats == EMPTY_STATS

    assert await store.mark_started(s.session_id, started_at=1001.0, expiration=None, device="cpu")
    assert not await store.mark_started(
        s.session_id, started_at=1002.0, expiration=None, device="cpu"
    )
    assert await store.mark_ended(s.session_id, ended_at=1010.5, reason="client_request")
    assert not await store.mark_ended(s.session_id, ended_at=1020.0, reason="error")
    ended = await store.get_session(s.session_id)
    assert ended is not None
    assert (ended.started_at, ended.ended_at, ended.end_reason) == (
        1001.0,
        1010.5,
        "client_request",
    )
    assert ended.status is SessionState.ENDED
    assert ended.duration_s(now=99999.0) == 9


async def test_stats_merge_and_reject_unknown_keys(store: Store) -> None:
    account = await store.ensure_account("a")
    s = make_session(account)
    await store.insert_session(s)
    await store.set_session_stats(s.session_id, {"frames_published": 10})
    await store.set_session_stats(s.session_id, {"frames_late": 1})
    got = await store.get_session(s.session_id)
    assert got is not None
    assert got.stats == EMPTY_STATS | {"frames_published": 10, "frames_late": 1}
    with pytest.raises(ValueError, match="bogus"):
        await store.set_session_stats(s.session_id, {"bogus": 1})


async def test_daily_room_and_video_updates(store: Store) -> None:
    account = await store.ensure_account("a")
    s = make_session(account)
    await store.insert_session(s)
    room = {"url": "https://a.daily.co/r", "name": "r", "token": "t"}
    await store.set_session_daily_room(s.session_id, room)
    await store.set_session_video(s.session_id, width=640, height=480)
    got = await store.get_session(s.session_id)
    assert got is not None
    assert (got.daily_room, got.video_width, got.video_height) == (room, 640, 480)


async def test_list_sessions_order_filter_and_paging(store: Store) -> None:
    account = await store.ensure_account("a")
    other = await store.ensure_account("b")
    made = []
    for _ in range(5):
        s = make_session(account)
        await store.insert_session(s)
        made.append(s.session_id)
    await store.insert_session(make_session(other))
    await store.mark_started(made[0], started_at=1.0, expiration=None, device="cpu")
    await store.mark_ended(made[1], ended_at=2.0, reason="client_request")
    listed = await store.list_sessions(account)
    assert [s.session_id for s in listed] == made[::-1]
    started = await store.list_sessions(account, status=SessionState.STARTED)
    assert [s.session_id for s in started] == [made[0]]
    ended = await store.list_sessions(account, status=SessionState.ENDED)
    assert [s.session_id for s in ended] == [made[1]]
    page = await store.list_sessions(account, limit=2, before_id=made[3])
    assert [s.session_id for s in page] == [made[2], made[1]]


async def test_end_started_sessions(store: Store) -> None:
    account = await store.ensure_account("a")
    created, started, ended = (make_session(account) for _ in range(3))
    for s in (created, started, ended):
        await store.insert_session(s)
    await store.mark_started(started.session_id, started_at=1.0, expiration=None, device="cpu")
    await store.mark_ended(ended.session_id, ended_at=2.0, reason="client_request")
    assert await store.end_started_sessions(ended_at=3.0, reason="server_restart") == [
        started.session_id
    ]
    got = await store.get_session(started.session_id)
    assert got is not None and got.end_reason == "server_restart"
    untouched = await store.get_session(created.session_id)
    assert untouched is not None and untouched.status is SessionState.CREATED


async def test_concurrent_writes_all_land(store: Store) -> None:
    account = await store.ensure_account("a")
    sessions = [make_session(account) for _ in range(50)]
    await asyncio.gather(*(store.insert_session(s) for s in sessions))
    assert len(await store.list_sessions(account, limit=100)) == 50


async def test_locked_database_is_storage_unavailable(tmp_path: Path) -> None:
    st = await Store.open(tmp_path / "t.db", busy_timeout_ms=50)
    account = await st.ensure_account("a")
    blocker = sqlite3.connect(tmp_path / "t.db", timeout=0.05)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageUnavailable, match="locked"):
            await st.insert_session(make_session(account))
    finally:
        blocker.rollback()
        blocker.close()
    # The failed write left nothing behind and the store still works.
    assert await st.list_sessions(account) == []
    await st.insert_session(make_session(account))
    await st.close()


async def test_a_failed_transaction_rolls_back(store: Store) -> None:
    account = await store.ensure_account("a")
    s = make_session(account)
    with pytest.raises(sqlite3.IntegrityError):
        async with store._write() as tx:
            await tx.run("UPDATE accounts SET name = 'renamed'")
            await tx.run("INSERT INTO sessions (session_id) VALUES (?)", (s.session_id,))
    assert await store.ensure_account("a") == account  # the rename was rolled back


async def test_migration_2_keeps_rows_and_allows_plugin_avatars(tmp_path: Path) -> None:
    """A database left at migration 1, plug-in row stored as 'procedural', opens and migrates."""
    path = tmp_path / "v1.db"
    conn = database_at(path, 1)
    rows = [
        ("avat_local_ada", None, "procedural", "Ada", "[]", 1, 2.0, None, None, '{"style":"ada"}'),
        ("avat_mine", "acct_1", "photo", "Me", '["x"]', 0, 3.0, "i.png", "p.png", None),
        ("avat_plugin_p", None, "procedural", "p", "[]", 1, 4.0, None, None, '{"plugin":"p"}'),
    ]
    conn.executemany("INSERT INTO avatars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute(
        "INSERT INTO sessions (session_id, account_id, avatar_id, avatar_name, token_hash,"
        " viewer_token, aspect_ratio, video_width, video_height, fps, metadata, created_at,"
        " stats) VALUES ('sess_1', 'acct_1', 'avat_mine', 'Me', 'h', 'v', '16:9', 1280, 720,"
        " 25, '{}', 5.0, '{}')"
    )
    conn.commit()
    conn.close()

    st = await Store.open(path)
    try:
        assert await st.schema_version() == len(MIGRATIONS) >= 2
        ada = await st.get_avatar("avat_local_ada")
        mine = await st.get_avatar("avat_mine")
        old_plugin = await st.get_avatar("avat_plugin_p")
        assert ada is not None and (ada.kind, ada.rig) == ("procedural", {"style": "ada"})
        assert mine is not None
        assert (mine.kind, mine.account_id, mine.tags, mine.image_path) == (
            "photo",
            "acct_1",
            ("x",),
            "i.png",
        )
        assert old_plugin is not None and old_plugin.kind == "plugin"
        assert await st.get_session("sess_1") is not None
        new = await st.create_avatar(account_id="acct_1", name="q", kind="plugin")
        assert (await st.get_avatar(new.avatar_id)).kind == "plugin"  # type: ignore[union-attr]
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK is still there
            await st.create_avatar(account_id="acct_1", name="r", kind="video")
        with pytest.raises(sqlite3.IntegrityError):  # and so is the foreign key
            await st.create_avatar(account_id="acct_nobody", name="s", kind="plugin")
    finally:
        await st.close()


async def test_count_sessions_by_status(store: Store) -> None:
    account = await store.ensure_account("a")
    assert await store.count_sessions_by_status() == {"created": 0, "started": 0, "ended": 0}
    sessions = [make_session(account) for _ in range(4)]
    for session in sessions:
        await store.insert_session(session)
    for session in sessions[:3]:
        await store.mark_started(
            session.session_id, started_at=1001.0, expiration=None, device="cpu"
        )
    await store.mark_ended(sessions[0].session_id, ended_at=1002.0, reason="user")
    await store.mark_ended(sessions[3].session_id, ended_at=1002.0, reason="user")  # never started
    assert await store.count_sessions_by_status() == {"created": 0, "started": 2, "ended": 2}
