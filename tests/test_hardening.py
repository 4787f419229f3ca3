"""Hostile and careless clients (issue 12): each limit refuses early in the JSON error shape, and
what is costly runs off the event loop. The timing of a neighbour under attack belongs to the
bench; these tests show the mechanisms."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import stat
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agenthuman_local import errors, ids, jsonsafe, keys, protocol
from agenthuman_local.api import avatars, fetch
from agenthuman_local.api.fairness import MessageBudget
from agenthuman_local.api.server import Runner
from agenthuman_local.app import create_app
from agenthuman_local.keyfiles import StartupError, read_or_make_secret, write_key_file
from agenthuman_local.migrations import MIGRATIONS
from agenthuman_local.paths import make_private, timeline_path
from agenthuman_local.sessions.timeline import stats_from_timeline
from agenthuman_local.store import Store
from bench.server import Client, Server
from tests.conftest import ApiClient, MakeClient, rate_limit_at
from tests.test_errors import assert_error
from tests.test_ws_helpers import Live, counting_pcm


def _multipart_parts(n: int, name: str = "j") -> bytes:
    part = f'--xx\r\nContent-Disposition: form-data; name="{name}"\r\n\r\na\r\n'.encode()
    return part * n


async def raw_exchange(
    api: ApiClient, head: bytes, body: bytes, *, closed: bool = False
) -> tuple[int, dict[str, str], Any]:
    """Send `head` + `body` over a bare socket without finishing the body; → (status, headers,
    JSON). `closed`: also assert the server then closed the connection, the body still unsent."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await reader.readexactly(int(headers["content-length"]))
            if closed:
                assert await reader.read() == b""
        return int(status_line.split()[1]), headers, json.loads(payload)
    finally:
        writer.close()


async def _raw_request(api: ApiClient, head: bytes, body: bytes) -> tuple[int, dict[str, Any]]:
    """`raw_exchange` → (status, JSON)."""
    status, _, answer = await raw_exchange(api, head, body)
    return status, answer


# -- item 1: many-part and large bodies ---------------------------------------------------------


async def test_a_many_part_multipart_body_is_refused_after_the_limit_is_read(
    make_client: MakeClient,
) -> None:
    """50 000 parts promised, 300 sent (aiohttp's reader looks a chunk ahead) and the rest never:
    the 400 comes anyway, so the server stopped at the limit (16 parts) instead of parsing every
    part on the loop."""
    api = await make_client()
    body = _multipart_parts(300)
    head = (
        b"POST /v1/avatars/upload-face HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\n"
        + f"Content-Length: {len(_multipart_parts(1)) * 50_000}\r\n\r\n".encode()
    )
    status, answer = await _raw_request(api, head, body)
    assert status == 400
    assert answer["error"]["code"] == "VALIDATION_ERROR"
    assert "more than 16 form fields" in answer["error"]["message"]
    assert (await api.get("/healthz")).status == 200


async def test_many_parts_in_a_whole_body_and_a_urlencoded_form_are_400(
    make_client: MakeClient,
) -> None:
    api = await make_client(http__max_form_parts=4)
    multipart = _multipart_parts(5) + b"--xx--\r\n"
    response = await api.post(
        "/v1/avatars/upload-face",
        data=multipart,
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    await assert_error(response, 400, "VALIDATION_ERROR")
    form = "&".join(f"f{i}=a" for i in range(5))
    response = await api.post(
        "/v1/avatars/upload-face",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "body"}
    # `;` is not a separator (parse_qsl splits on `&` only): a value full of them is one field.
    response = await api.post(
        "/v1/avatars/upload-face",
        data="name=a;b;c;d;e;f",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] != {"field": "body"}, error


def _junk_body(total: int) -> bytes:
    """A multipart body of exactly `total` bytes: one part the server skips (`junk`)."""
    head = b'--xx\r\nContent-Disposition: form-data; name="junk"\r\n\r\n'
    tail = b"\r\n--xx--\r\n"
    return head + b"a" * (total - len(head) - len(tail)) + tail


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_multipart_body_over_max_request_mb_is_413_skipped_parts_included(
    make_client: MakeClient, chunked: bool
) -> None:
    """A part the server does not use still counts: one byte over the limit is a 413 whether
    the body says its length up front or not; at the limit it is read (400, no image)."""
    api = await make_client(max_request_mb=0.5)
    limit = 512 * 1024
    headers = {"Content-Type": "multipart/form-data; boundary=xx"}
    for total, status, code in [(limit + 1, 413, "PAYLOAD_TOO_LARGE"), (limit, 400, None)]:
        body = _junk_body(total)
        data: Any = _chunked(body) if chunked else body
        response = await api.post("/v1/avatars/upload-face", data=data, headers=headers)
        error = await assert_error(response, status, code or "VALIDATION_ERROR")
        if status == 413:
            assert "max_request_mb" in error["suggestion"]


async def test_a_json_body_of_many_values_is_refused_before_decoding(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MB of tiny values take seconds to decode (holding the GIL, so no thread helps): the
    count of separators is checked first."""
    decoded: list[str] = []
    loads = jsonsafe.json.loads

    def spy(text: Any, **kwargs: Any) -> Any:
        decoded.append(text)
        return loads(text, **kwargs)

    monkeypatch.setattr(jsonsafe.json, "loads", spy)
    api = await make_client(http__max_json_items=100)
    bomb = {"metadata": {"k": [{"a": 1}] * 60}}  # 60 objects + 59 commas + 3 brackets
    error = await assert_error(await api.post("/v1/sessions", json=bomb), 413, "PAYLOAD_TOO_LARGE")
    assert "more than 100 JSON values" in error["message"]
    assert json.dumps(bomb) not in decoded  # refused without decoding
    await api.json("POST", "/v1/sessions", 201, json={"metadata": {"k": [1] * 90}})
    image = {"metadata": {"png": "data:image/png;base64," + "A" * 200_000}}
    await assert_error(await api.post("/v1/sessions", json=image), 413, "PAYLOAD_TOO_LARGE")
    assert json.dumps(image) in decoded  # a long string is one value (then over the metadata limit)
    await assert_error(
        await api.post(
            "/v1/sessions", data=b"[" * 100_000, headers={"Content-Type": "application/json"}
        ),
        413,
        "PAYLOAD_TOO_LARGE",
    )


async def test_a_ws_message_of_many_values_is_an_error_event(make_client: MakeClient) -> None:
    live = await Live.make(make_client, http__max_json_items=100)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.ws.send_str(json.dumps({"type": "session.keep_alive", "x": [{}] * 200}))
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "more than 100" in error["error"]
    await conn.barrier()  # the session lives on


# -- item 6: deeply nested JSON -----------------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 500, 980])
async def test_deep_metadata_is_a_400_and_nothing_is_stored(api: ApiClient, depth: int) -> None:
    raw = '{"metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    error = await assert_error(response, 400, "INVALID_JSON")
    assert "deeper than 32 levels" in error["message"]
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
async def test_a_non_finite_number_is_invalid_json_not_a_storage_outage(
    api: ApiClient, number: str
) -> None:
    raw = '{"metadata": {"a": ' + number + "}}"
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "INVALID_JSON")
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []
    assert jsonsafe.loads('{"a": 1e308, "b": -0.0}', jsonsafe.DEFAULT_LIMITS)["a"] == 1e308


async def test_metadata_as_deep_as_the_limit_is_stored(api: ApiClient) -> None:
    metadata: Any = "leaf"
    for _ in range(31):  # the body object is the 32nd level
        metadata = {"a": metadata}
    created = await api.create_session({"metadata": metadata})
    got = await api.json("GET", f"/v1/sessions/{created['session_id']}")
    assert got["session"]["metadata"] == metadata


async def test_deep_json_as_the_first_ws_message_closes_4002(make_client: MakeClient) -> None:
    live = await Live.make(make_client)
    conn = await live.raw("/v1/ws")
    await conn.ws.send_str("[" * 100_000 + "]" * 100_000)
    event = await conn.next_event()
    assert event["type"] == "error" and event["code"] == protocol.E_PROTOCOL
    assert await conn.closed() == protocol.CLOSE_PROTOCOL


async def test_deep_json_on_a_live_socket_is_an_error_event_and_the_session_lives(
    make_client: MakeClient,
) -> None:
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.ws.send_str("[" * 100_000 + "]" * 100_000)  # too many values, before depth
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "more than 10000" in error["error"]
    await conn.ws.send_str("[" * 500 + "]" * 500)
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "deeper than 32" in error["error"]
    await conn.speak(counting_pcm(160).tobytes())
    await conn.barrier()
    assert conn.of("agent.speak.confirmed")[-1]["audio_samples"] == 160


async def test_metadata_over_its_limit_is_413_and_at_the_limit_is_stored(
    make_client: MakeClient,
) -> None:
    api = await make_client(session__max_metadata_kb=1)
    await api.create_session({"metadata": {"k": "x" * 1000}})  # 1 008 bytes: stored
    response = await api.post("/v1/sessions", json={"metadata": {"k": "x" * 1020}})
    error = await assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "limit is 1024" in error["message"]
    assert len((await api.json("GET", "/v1/sessions"))["sessions"]) == 1
    # A body under the limit whose metadata grows when stored: 1e5 is kept as 100000.0.
    raw = '{"metadata": {"k": [' + ",".join(["1e5"] * 200) + "]}}"
    assert len(raw) < 1024
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert len((await api.json("GET", "/v1/sessions"))["sessions"]) == 1


# -- item 4: idle and slow connections, over-long request lines ---------------------------------


async def _closed_by_server(reader: asyncio.StreamReader, limit_s: float) -> bool:
    """Whether the server closes the connection within `limit_s` (anything it sends is read)."""
    try:
        async with asyncio.timeout(limit_s):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False


async def test_idle_and_half_sent_connections_are_closed(make_client: MakeClient) -> None:
    api = await make_client(http__idle_timeout_s=0.5)
    server = api.client.server
    conns = [await asyncio.open_connection(server.host, server.port) for _ in range(12)]
    for _, writer in conns[4:8]:  # headers that never end
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _, writer in conns[8:]:  # a whole request, then an idle keep-alive connection
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    trickle = conns[0][1]

    async def drip() -> None:  # one header byte every 0.1 s: never a whole request
        for byte in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":
            trickle.write(bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        # The server answers meanwhile, on a new connection: the test client's pooled one may
        # have idled past the 0.5 s timeout itself and be reset on reuse.
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(f"http://{server.host}:{server.port}/healthz") as answer,
        ):
            assert answer.status == 200
        closed = await asyncio.gather(*(_closed_by_server(r, 5) for r, _ in conns))
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        for _, writer in conns:
            writer.close()
    assert all(closed)
    await api.create_session()  # and still works


async def test_a_body_that_stops_arriving_is_408(make_client: MakeClient) -> None:
    api = await make_client(http__body_timeout_s=0.3)
    head = (
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    status, answer = await _raw_request(api, head, b'{"metadata": ')
    assert (status, answer["error"]["code"]) == (408, "REQUEST_TIMEOUT")
    head = (
        b"POST /v1/avatars/upload-face HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 100000\r\n\r\n"
    )
    part = b'--xx\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"\xff\xd8" * 9000
    status, answer = await _raw_request(api, head, part)
    assert (status, answer["error"]["code"]) == (408, "REQUEST_TIMEOUT")


async def test_an_over_long_request_line_gets_our_json_400_and_no_traceback(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Server(TestServer):
        async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
            return Runner(self.app, **kwargs)

    app = create_app(settings, environ={})
    async with Server(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /v1/sessions/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"400"
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == "VALIDATION_ERROR" and "too long" in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- item 2: a message storm on one socket ------------------------------------------------------


def test_message_budget_allows_its_rate_and_a_burst_then_spaces_messages() -> None:
    now = [0.0]
    budget = MessageBudget(10, lambda: now[0])
    assert [budget.take() for _ in range(20)] == [0.0] * 20  # the burst: twice the rate
    assert budget.take() == pytest.approx(0.1)
    assert budget.take() == pytest.approx(0.2)
    now[0] = 0.2  # the reader waited: two tokens back, two spent
    assert budget.take() == pytest.approx(0.1)
    assert budget.should_warn() and not budget.should_warn()
    now[0] = 1.3
    assert budget.should_warn()
    now[0] = 100.0  # idle: full again, never more than the burst
    assert [budget.take() for _ in range(20)] == [0.0] * 20
    assert budget.take() > 0


async def test_a_storm_is_read_more_slowly_nothing_dropped_and_told_once(
    make_client: MakeClient,
) -> None:
    live = await Live.make(make_client, ws__max_messages_per_s=50)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(60):
        await conn.speak(counting_pcm(160).tobytes())
    for _ in range(90):
        await conn.ws.send_json({"type": "session.keep_alive"})
    while len(conn.of("session.keep_alive.ack")) < 90:
        await conn.next_event()
    elapsed = loop.time() - started
    # 151 messages (init included) at 50/s after a burst of 100: at least 1 s of reading.
    assert elapsed >= 0.9
    confirmed = conn.of("agent.speak.confirmed")
    assert len(confirmed) == 60 and all(c["audio_samples"] == 160 for c in confirmed)
    limited = [e["code"] for e in conn.events if e["type"] == "error"]
    # Told when throttling starts, then at most once a second while it lasts (~1 s here: a
    # late timer may make it two), never once per message.
    assert set(limited) == {"RATE_LIMITED"}
    assert 1 <= len(limited) <= math.ceil(elapsed) + 1, (limited, elapsed)
    await conn.ws.send_json({"type": "agent.interrupt"})
    done = await conn.until("agent.interrupt.confirmed")
    assert done["played_ms"] + done["dropped_ms"] == 60 * 10  # every chunk was queued


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
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO accounts VALUES ('acct_1', 'me', 1.0)")
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


# -- image_url: no loopback, private or link-local fetches --------------------------------------


@pytest.fixture
async def redirecting_server(aiohttp_server: Any) -> TestServer:
    """On 127.0.0.1: /to?url=U redirects to U, /loop redirects to itself (/slow-loop after
    0.3 s), /nowhere is a 302 with no Location."""

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow_loop(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        raise web.HTTPFound("/slow-loop")

    async def nowhere(request: web.Request) -> web.Response:
        return web.Response(status=302)

    app = web.Application()
    app.router.add_get("/to", to)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow-loop", slow_loop)
    app.router.add_get("/nowhere", nowhere)
    server: TestServer = await aiohttp_server(app)
    return server


async def test_image_url_to_loopback_private_or_link_local_is_refused(
    make_client: MakeClient,
) -> None:
    api = await make_client(upload__allow_private_urls=False)
    own = api.client.server
    urls = [
        f"http://127.0.0.1:{own.port}/healthz",  # the server's own routes: an open port
        "http://127.0.0.1:1/face.jpg",  # a closed one: the same answer
        f"http://localhost:{own.port}/metrics",  # a name that resolves to loopback
        "http://[::1]:1/x.jpg",
        "http://[::ffff:127.0.0.1]:1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.1/x.jpg",
    ]
    messages = set()
    for url in urls:
        response = await api.post("/v1/avatars/upload-face", json={"image_url": url})
        error = await assert_error(response, 400, "VALIDATION_ERROR")
        messages.add(error["message"])
    assert len(messages) == 1 and "private" in messages.pop()


async def test_redirects_are_followed_and_checked_at_every_hop(
    make_client: MakeClient,
    redirecting_server: TestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """127.0.0.1 stands in for a public host (is_public says so); 127.0.0.2 stays private."""
    monkeypatch.setattr(fetch, "is_public", lambda address: address == "127.0.0.1")
    api = await make_client(upload__allow_private_urls=False)
    hop = f"http://127.0.0.2:{redirecting_server.port}/face.jpg"
    url = str(redirecting_server.make_url("/to").with_query(url=hop))
    response = await api.post("/v1/avatars/upload-face", json={"image_url": url})
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "private" in error["message"]
    response = await api.post(
        "/v1/avatars/upload-face", json={"image_url": str(redirecting_server.make_url("/loop"))}
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "redirects" in error["message"]


async def _fetch(url: str, *, allow_private: bool = True) -> bytes:
    """`fetch.fetch_image` of `url` as `image_url`, 1000 bytes at most."""
    return await fetch.fetch_image(
        url,
        "image_url",
        max_bytes=1000,
        too_large=errors.PayloadTooLarge,
        allow_private=allow_private,
    )


async def test_one_fetch_deadline_covers_every_redirect_hop(
    redirecting_server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six 0.3 s hops, each well inside a 0.8 s limit, are 1.8 s together: unreachable, not
    'more than 5 redirects'."""
    monkeypatch.setattr(fetch, "FETCH_TIMEOUT_S", 0.8)
    with pytest.raises(errors.ValidationError, match="is unreachable"):
        await _fetch(str(redirecting_server.make_url("/slow-loop")))


async def test_a_redirect_without_a_location_says_so(redirecting_server: TestServer) -> None:
    with pytest.raises(errors.ValidationError, match="HTTP 302 without a Location"):
        await _fetch(str(redirecting_server.make_url("/nowhere")))


async def test_the_fetch_closes_its_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    original = fetch.PublicResolver.close

    async def close(self: fetch.PublicResolver) -> None:
        closed.append(True)
        await original(self)

    monkeypatch.setattr(fetch.PublicResolver, "close", close)
    with pytest.raises(errors.ValidationError, match="private"):
        await _fetch("http://localhost:1/x.jpg", allow_private=False)
    assert closed == [True]


def test_public_addresses() -> None:
    assert fetch.is_public("8.8.8.8") and fetch.is_public("2001:4860:4860::8888")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "100.64.0.1", "169.254.1.1", "::1"):
        assert not fetch.is_public(address), address
    assert not fetch.is_public("::ffff:10.0.0.1") and not fetch.is_public("224.0.0.1")
    assert not fetch.is_public("fe80::1%eth0") and not fetch.is_public("0.0.0.0")
    # IPv6 forms that carry a loopback or private IPv4 address: compatible, 6to4, NAT64.
    for address in ("::127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1", "64:ff9b::10.0.0.1"):
        assert not fetch.is_public(address), address
    assert fetch.is_public("64:ff9b::8.8.8.8")


# -- uploads: pixels declared before decoding, uploads at once, names ---------------------------


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width×height."""
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


async def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(
    api: ApiClient,
) -> None:
    data = _jpeg_claiming(7000, 7000)  # 49 MP in under 1 KB
    form = aiohttp.FormData()
    form.add_field("file", data, filename="big.jpg", content_type="image/jpeg")
    response = await api.post("/v1/avatars/upload-face", data=form)
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "7000×7000" in error["message"] and "limit is 25 megapixels" in error["message"]
    assert error["details"] == {"field": "file"}  # the field the image came in


async def test_uploads_run_at_most_max_concurrent_at_once(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_client(upload__max_concurrent=2)
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    most = [0]

    def slow(data: bytes, avatar_dir: Path, max_pixels: int) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        raise errors.NoFace()

    monkeypatch.setattr(avatars, "_prepare_and_save", slow)
    jpeg = _jpeg_claiming(64, 64)

    async def upload() -> int:
        form = aiohttp.FormData()
        form.add_field("file", jpeg, filename="a.jpg", content_type="image/jpeg")
        return (await api.post("/v1/avatars/upload-face", data=form)).status

    tasks = [asyncio.create_task(upload()) for _ in range(5)]
    for _ in range(200):
        if most[0] >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a third would have started by now; the others wait their turn
    assert running[0] == 2
    release.set()
    assert await asyncio.gather(*tasks) == [400] * 5
    assert most[0] == 2


async def test_upload_names_are_bounded(api: ApiClient) -> None:
    form = aiohttp.FormData()
    form.add_field("file", _jpeg_claiming(64, 64), filename="a.jpg", content_type="image/jpeg")
    form.add_field("name", "n" * 201)
    response = await api.post("/v1/avatars/upload-face", data=form)
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "name"}


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
