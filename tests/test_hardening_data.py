"""What the server keeps, kept private (issue 12): its data folder's modes (a real run.py under
umask 000; `make_private` on a symlinked folder and on files it cannot change), viewer tokens
derived from a secret rather than stored (and migration 4 dropping the stored ones), the secret
and key files made privately and replaced whole, API keys listed by 16-character prefixes and
wrong ones rate-limited together, and after a kill -9 the sessions' stats rebuilt from their
timelines and no staging folder left."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from agenthuman_local import ids, keys
from agenthuman_local.keyfiles import StartupError, read_or_make_secret, write_key_file
from agenthuman_local.paths import make_private, timeline_path
from agenthuman_local.sessions.timeline import stats_from_timeline
from agenthuman_local.store import Store
from bench.server import Client, Server
from tests.conftest import ApiClient, MakeClient, rate_limit_at
from tests.old_database import database_at
from tests.test_errors import assert_error

# -- item 7: a private data folder, no viewer tokens stored, longer key prefixes ----------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_server_started_under_umask_000_keeps_its_data_folder_private(
    tmp_path: Path,
) -> None:
    """A real run.py: loose modes left by an older server are tightened at start, and what the
    process writes itself is private though its umask was 000."""
    data = tmp_path / "data"
    old = data / "recordings" / "sess_old"
    old.mkdir(parents=True)
    (old / "timeline.jsonl").write_text("{}\n")
    for path, mode in [(data, 0o777), (data / "recordings", 0o755), (old, 0o755)]:
        path.chmod(mode)
    (old / "timeline.jsonl").chmod(0o666)
    (data / "notes.txt").write_text("not the server's")
    (data / "notes.txt").chmod(0o644)
    server = Server({"engine.preload": "false"}, data_dir=data)
    await server.start(engine_ready=False, umask=0)
    try:
        client = Client(server)
        try:
            status, _ = await client.json("POST", "/v1/sessions", json={})
            assert status == 201
        finally:
            await client.aclose()
        entries = [data, *data.rglob("*")]
        names = {p.relative_to(data).as_posix() for p in entries}
        assert {"agenthuman.db", "api_key", "viewer_secret", "recordings/sess_old"} <= names
        loose = {
            p.relative_to(data).as_posix(): oct(_mode(p))
            for p in entries
            if _mode(p) != (0o700 if p.is_dir() else 0o600)
        }
        assert loose == {"notes.txt": "0o644"}  # not the server's: left as it was
    finally:
        server.cleanup()


def test_make_private_leaves_a_symlinked_folder_and_warns_on_what_it_cannot_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shared.mp4").write_text("x")
    (elsewhere / "shared.mp4").chmod(0o644)
    data = tmp_path / "data"
    (data / "avatars" / "avat_1").mkdir(parents=True)
    for name in ("theirs.jpg", "ours.jpg"):
        (data / "avatars" / "avat_1" / name).write_text("x")
        (data / "avatars" / "avat_1" / name).chmod(0o644)
    (data / "recordings").symlink_to(elsewhere)
    real_chmod = os.chmod

    def chmod(path: Any, mode: int, **kwargs: Any) -> None:
        if str(path).endswith("theirs.jpg"):
            raise PermissionError(1, "Operation not permitted")
        real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    with caplog.at_level(logging.WARNING, logger="agenthuman_local.paths"):
        make_private(data)
    assert _mode(elsewhere / "shared.mp4") == 0o644  # a symlinked top is not walked
    assert _mode(data / "avatars" / "avat_1" / "ours.jpg") == 0o600
    assert _mode(data / "avatars" / "avat_1" / "theirs.jpg") == 0o644
    assert [r.getMessage() for r in caplog.records if "theirs.jpg" in r.getMessage()]


async def test_viewer_tokens_are_derived_not_stored(api: ApiClient) -> None:
    session = await api.create_session()
    sid = session["session_id"]
    token = session["viewer_url"].split("token=")[1]
    secret = api.app[keys.viewer_secret_key]
    assert token == ids.viewer_token(secret, sid) and len(token) == 43
    assert token != ids.viewer_token(ids.new_viewer_secret(), sid)
    db = api.app[keys.settings_key].data_dir / "agenthuman.db"
    conn = sqlite3.connect(db)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "viewer_token" not in columns and token not in dump
    page = await api.get(f"/v1/sessions/{sid}/viewer?token={token}", key=None)
    assert page.status == 200


@pytest.mark.parametrize(
    "content",
    ["", "\n", "abc123", "zz" * 32, "ab" * 31],
    ids=["empty", "blank", "short", "not-hex", "31-bytes"],
)
def test_a_viewer_secret_file_without_a_usable_secret_refuses_the_start(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "viewer_secret"
    path.write_text(content)
    with pytest.raises(StartupError, match=str(path)) as refused:
        read_or_make_secret(path)
    assert "delete it" in str(refused.value)
    assert path.read_text() == content  # left for its owner to look at


def test_a_viewer_secret_is_made_once_privately_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "viewer_secret"
    secret = read_or_make_secret(path)
    assert len(secret) == 32 and _mode(path) == 0o600
    assert path.read_text() == secret.hex() + "\n"
    assert read_or_make_secret(path) == secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["viewer_secret"]  # no temp file left


def test_a_key_file_is_replaced_whole_never_truncated_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that dies part-way (here: the rename fails) leaves the old file as it was."""
    path = tmp_path / "viewer_secret"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o644)

    def fail(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_key_file(path, "cd" * 32)
    assert path.read_text() == "ab" * 32 + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["viewer_secret"]
    monkeypatch.undo()
    write_key_file(path, "cd" * 32)
    assert path.read_text() == "cd" * 32 + "\n" and _mode(path) == 0o600


async def test_a_server_with_an_empty_viewer_secret_exits_with_a_message(
    tmp_path: Path,
) -> None:
    """A real run.py: one line naming the file and exit 1, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "viewer_secret").write_text("")
    server = Server({"engine.preload": "false"}, data_dir=data)
    try:
        server.spawn()
        assert server.proc is not None
        code = await asyncio.to_thread(server.proc.wait, 60)
        log = server.log_tail()
    finally:
        server.cleanup()
    assert code == 1, log
    assert f"viewer secret file {data / 'viewer_secret'}" in log and "Traceback" not in log


async def test_migration_4_drops_stored_viewer_tokens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = database_at(path, 3)
    conn.execute(
        "INSERT INTO sessions (session_id, account_id, avatar_id, avatar_name, token_hash,"
        " viewer_token, aspect_ratio, video_width, video_height, fps, metadata, created_at,"
        " stats) VALUES ('sess_1', 'acct_1', 'avat_local_ada', 'Ada', 'h', 'SECRETVIEWER',"
        " '16:9', 1280, 720, 25, '{}', 5.0, '{}')"
    )
    conn.commit()
    conn.close()
    st = await Store.open(path)
    try:
        assert await st.schema_version() == 4
        session = await st.get_session("sess_1")
        assert session is not None and session.avatar_name == "Ada"
    finally:
        await st.close()
    conn = sqlite3.connect(path)
    try:
        assert "SECRETVIEWER" not in "\n".join(conn.iterdump())
    finally:
        conn.close()


async def test_new_keys_list_16_character_prefixes(tmp_path: Path) -> None:
    st = await Store.open(tmp_path / "k.db")
    try:
        account = await st.ensure_account("a")
        key = ids.new_api_key()
        await st.add_api_key(account, key)
        [listed] = await st.list_api_keys()
        assert listed.prefix == key[:16] and len(listed.prefix) == 16
        assert await st.revoke_api_keys(key[:16], at_most=1) == 1
    finally:
        await st.close()


async def test_invalid_keys_are_rate_limited_together_and_valid_ones_are_not(
    make_client: MakeClient,
) -> None:
    api = await make_client(rate_limit_per_minute=3, contexts=[rate_limit_at(3)])
    for attempt in range(3):
        response = await api.get("/v1/sessions", key=f"ah_live_wrong{attempt}")
        await assert_error(response, 401, "UNAUTHORIZED")
    response = await api.get("/v1/sessions", key="ah_live_wrong4")
    await assert_error(response, 429, "RATE_LIMITED")
    assert "Retry-After" in response.headers
    assert (await api.get("/v1/sessions")).status == 200


# -- after a kill -9: stats from the timeline, no staging folder left ---------------------------


def _timeline_lines() -> list[dict[str, Any]]:
    """What a killed process leaves: 10 frames at 25 fps (640 samples each), an utterance that
    ended after 4 frames, a second one still playing (3 frames) at the kill, frame 5 dropped."""
    lines: list[dict[str, Any]] = [
        {"t": "event", "pts_ms": 0, "type": "agent.speak.confirmed", "audio_samples": 3200},
        {"t": "event", "pts_ms": 0, "type": "agent.speak_started"},
    ]
    for index in [0, 1, 2, 3, 4, 6, 7, 8, 9]:
        lines.append(
            {
                "t": "frame",
                "frame_index": index,
                "pts_ms": index * 40,
                "audio_start": index * 640,
                "audio_end": (index + 1) * 640,
                "render_ms": 1.0,
                "queue_frames": 1,
                "late": index in (2, 7),
            }
        )
        if index == 3:
            lines.append(
                {"t": "event", "pts_ms": 160, "type": "agent.speak_ended", "played_ms": 160}
            )
            lines.append(
                {
                    "t": "event",
                    "pts_ms": 160,
                    "type": "agent.speak.confirmed",
                    "audio_samples": 1600,
                }
            )
        if index == 6:
            lines.append({"t": "event", "pts_ms": 280, "type": "agent.speak_started"})
    return lines


def test_stats_from_a_killed_sessions_timeline(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in _timeline_lines())
    path.write_text(text + '{"t": "frame", "frame_in')  # the kill came mid-line
    assert stats_from_timeline(path) == {
        "frames_published": 9,
        "frames_late": 2,
        "frames_dropped": 1,
        "audio_ms_received": 300,
        "audio_ms_played": 160 + 3 * 40,
        "first_frame_latency_ms": None,
    }
    assert stats_from_timeline(tmp_path / "missing.jsonl") is None


async def test_restart_fills_in_stats_from_timelines_and_removes_staging(
    make_client: MakeClient,
) -> None:
    first = await make_client()
    sid = (await first.create_session())["session_id"]
    await first.start_session(sid)
    data_dir = first.app[keys.settings_key].data_dir
    path = timeline_path(data_dir, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in _timeline_lines()))
    stale = data_dir / "avatars" / ".avat_01KILLED.tmp"
    stale.mkdir(parents=True)
    (stale / "image.jpg").write_bytes(b"half")
    second = await make_client()  # a new process on the same data dir
    assert not stale.exists()
    for _ in range(500):
        session = (await second.json("GET", f"/v1/sessions/{sid}"))["session"]
        if session["stats"]["frames_published"]:
            break
        await asyncio.sleep(0.01)
    assert session["end_reason"] == "server_restart"
    assert session["stats"] == {
        "frames_published": 9,
        "frames_late": 2,
        "frames_dropped": 1,
        "audio_ms_received": 300,
        "audio_ms_played": 280,
        "first_frame_latency_ms": None,
    }
