"""The HTTP edge under hostile and careless clients (issue 12): idle and half-sent connections
closed, an over-long request line answered in our JSON shape, the connection cap, the header
timeout apart from the keep-alive, and sockets that never send `session.init` at shutdown.

The in-process tests of the cap, the split timeouts and the request line run the app behind
`api.server.Runner` (what run.py uses; aiohttp's own TestServer has neither the cap nor the
split); the open-file-limit and SIGTERM tests run a real `python run.py`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agenthuman_local import keys
from agenthuman_local.api.server import LISTEN_BACKLOG, Runner, connection_cap
from agenthuman_local.app import create_app
from agenthuman_local.cli import SHUTDOWN_GRACE_S
from bench.server import Client, Conn, Server
from tests.conftest import ApiClient, MakeClient, make_settings
from tests.test_shutdown import wait_exit
from tests.test_ws_helpers import Live, wait_for

MakeEdge = Callable[..., Awaitable[ApiClient]]

# A handler aiohttp waits for at shutdown costs at least 2 x SHUTDOWN_GRACE_S: it waits that long
# for the handler, cancels the request's payload (a socket handler does not notice), waits as
# long again, and only then cancels the task (measured: 6.9-7.0 s). Without such a handler the
# exit takes 1-2 s, up to ~4.6 s on this loaded 2-core machine (recordings are finalised).
EXIT_BOUND_S = 2 * SHUTDOWN_GRACE_S - 0.5


class EdgeServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return Runner(self.app, **kwargs)


@pytest.fixture
def make_edge(aiohttp_client: Any, tmp_path: Path) -> MakeEdge:
    """Like conftest's `make_client`, behind run.py's `Runner`."""

    async def make(*, contexts: Any = (), **overrides: Any) -> ApiClient:
        app = create_app(make_settings(tmp_path, **overrides), environ={}, contexts=contexts)
        client = await aiohttp_client(EdgeServer(app))
        return ApiClient(client, app[keys.first_key_key].key)

    return make


def _open_count(api: ApiClient) -> int:
    runner = api.client.server.runner
    assert runner is not None and runner.server is not None
    return int(runner.server.open_connections)  # type: ignore[attr-defined]


async def _closed_by_server(reader: asyncio.StreamReader, limit_s: float) -> bool:
    """Whether the server closed the connection within `limit_s` (EOF or reset)."""
    try:
        async with asyncio.timeout(limit_s):
            return await reader.read() == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(10):
        status = int((await reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, await reader.readexactly(int(headers["content-length"]))


def test_the_cap_leaves_room_under_the_open_file_limit() -> None:
    assert connection_cap(1024, 20_000) == 1024
    assert connection_cap(1024, 1024) == (1024 - LISTEN_BACKLOG) // 2 == 448
    assert connection_cap(1024, 256) == 64
    assert connection_cap(1024, 100) == 1  # never 0: the server still answers one at a time
    assert connection_cap(50, resource.RLIM_INFINITY) == 50


async def test_over_the_cap_idle_connections_make_room_and_busy_ones_are_kept(
    make_edge: MakeEdge,
) -> None:
    """Cap 6: the live session's socket is never touched; new connections close the oldest idle
    ones; when every connection is busy a new one is answered 503 UNAVAILABLE and closed."""
    cap = 6
    live = await Live.make(
        make_edge, http__max_connections=cap, http__body_timeout_s=60, http__idle_timeout_s=60
    )
    api = live.api
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    server = api.client.server
    idle = [await asyncio.open_connection(server.host, server.port) for _ in range(12)]
    for _, writer in idle[6:9]:  # half-sent headers count as idle too
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await wait_for(lambda: _open_count(api) == cap, 5)
    # The oldest idle ones were closed to make room; the newest are still open.
    oldest = await asyncio.gather(*(_closed_by_server(r, 2) for r, _ in idle[:6]))
    assert all(oldest)
    assert not await _closed_by_server(idle[-1][0], 0.2)
    assert (await api.get("/healthz")).status == 200  # evicts one more idle connection
    await conn.ws.send_json({"type": "session.keep_alive"})
    assert (await conn.until("session.keep_alive.ack"))["type"] == "session.keep_alive.ack"

    # Now make every slot busy: requests whose bodies are still arriving (never evicted).
    head = (
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    busy = []
    for _ in range(cap):
        pair = await asyncio.open_connection(server.host, server.port)
        pair[1].write(head)
        busy.append(pair)
    await asyncio.sleep(0.1)  # their requests are in the handlers
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        status, headers, body = await _response(reader)
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "UNAVAILABLE"
        assert await _closed_by_server(reader, 2)
        # The session's socket stayed: it is still answered.
        await conn.ws.send_json({"type": "session.keep_alive"})
        await conn.barrier()
        assert len(conn.of("session.keep_alive.ack")) == 2
    finally:
        writer.close()
        for _, w in idle + busy:
            w.close()
        await conn.ws.close()


async def test_a_kept_alive_connection_outlives_the_header_timeout(make_edge: MakeEdge) -> None:
    """The header timeout (`http.idle_timeout_s`) closes silent and half-sent connections; an
    idle keep-alive gets `http.keepalive_timeout_s` (longer than clients' 15 s, so a pooled
    client connection is never closed under the client's next request), until its next request
    starts: from that first byte the headers get the header timeout again."""
    api = await make_edge(http__idle_timeout_s=0.3, http__keepalive_timeout_s=30)
    server = api.client.server
    silent = await asyncio.open_connection(server.host, server.port)
    half = await asyncio.open_connection(server.host, server.port)
    half[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    kept = await asyncio.open_connection(server.host, server.port)
    started = await asyncio.open_connection(server.host, server.port)
    try:
        for reader, writer in (kept, started):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await _response(reader))[0] == 200
        assert await _closed_by_server(silent[0], 3)
        assert await _closed_by_server(half[0], 3)
        started[1].write(b"GET /healthz HTTP/1.1\r\n")  # the next request starts, never ends
        assert await _closed_by_server(started[0], 3)
        assert not kept[0].at_eof()  # twice the header timeout later: still open, and usable
        kept[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(kept[0]))[0] == 200
    finally:
        for _, writer in (silent, half, kept, started):
            writer.close()


class _LowFileLimitServer(Server):
    """run.py under RLIMIT_NOFILE `limit` (set right after exec, before the server listens)."""

    limit = 256

    def spawn(self, *, umask: int = -1) -> float:
        t0 = super().spawn(umask=umask)
        assert self.proc is not None
        resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE, (self.limit, self.limit))
        return t0


async def test_300_idle_connections_under_a_256_file_limit_break_nothing() -> None:
    """Before the cap, 300 silent connections to a process limited to 256 files made /healthz
    and create fail (accept: EMFILE) and could kill a live session (`Too many open files` in
    its runner). With it, the oldest idle ones are closed to make room."""
    server = _LowFileLimitServer(
        {"devices.use_cuda": "false", "http.idle_timeout_s": 60, "log_level": "info"}
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await server.start()
        client = Client(server)
        try:
            session, _ = await client.create_start()
            conn = await Conn.open(
                client.http,
                session,
                video_width=128,
                video_height=128,
                output={"video": "jpeg"},
            )
            await wait_for(lambda: len(conn.media) >= 5, 20)
            for i in range(300):
                pair = await asyncio.open_connection("127.0.0.1", server.port)
                if i % 3 == 1:
                    pair[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                idle.append(pair)
            frames = len(conn.media)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as fresh:
                async with fresh.get(f"{server.base_url}/healthz") as r:
                    assert r.status == 200
                async with fresh.post(
                    f"{server.base_url}/v1/sessions", headers={"x-api-key": server.api_key}
                ) as r:
                    assert r.status == 201
            # The live session kept rendering and sending frames through it all.
            await wait_for(lambda: len(conn.media) >= frames + 10, 20)
            await conn.ws.send_json({"type": "session.keep_alive"})
            await conn.until("session.keep_alive.ack")
            assert server.fd_count() < _LowFileLimitServer.limit
            await conn.aclose()
        finally:
            await client.aclose()
        log = server.log_path.read_text(errors="replace")
        assert "Too many open files" not in log
        assert "closing the oldest idle one" in log
        assert "at most 64 connections" in log
    finally:
        for _, writer in idle:
            writer.close()
        server.cleanup()


async def test_sigterm_with_a_socket_that_never_sent_init_exits_at_once() -> None:
    """Such a socket belongs to no session, so ending the sessions did not reach it: aiohttp
    waited SHUTDOWN_GRACE_S for its handler, then as long again after cancelling it. Now the
    shutdown hook closes it 1001 first."""
    server = Server({"devices.use_cuda": "false", "log_level": "info"})
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            waiting = await http.ws_connect(f"{server.base_url}/v1/ws", max_msg_size=0)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            returncode, elapsed = await wait_exit(server, 30)
            message = await waiting.receive(timeout=5)
        assert returncode == 0, server.log_tail()
        assert elapsed < EXIT_BOUND_S, f"{elapsed:.1f} s to exit: {server.log_tail()}"
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (1001, "server shutting down")
    finally:
        server.cleanup()


async def test_sigterm_with_a_live_client_that_does_not_read_exits_promptly() -> None:
    """Its session ends `server_shutdown` and the 4009 close frame goes at once, but the client
    never answers it: aiohttp's close waited 10 s for that answer (so the handler outlived
    SHUTDOWN_GRACE_S and was cancelled); session and viewer sockets wait CLOSE_ANSWER_WAIT_S."""
    server = Server({"devices.use_cuda": "false", "log_level": "info"})
    try:
        await server.start()
        client = Client(server)
        try:
            session, _ = await client.create_start()
            ws = await client.http.ws_connect(session["ws_uri"], max_msg_size=0)
            config = {"session_id": session["session_id"], "access_token": session["access_token"]}
            await ws.send_json(
                {
                    "type": "session.init",
                    "config": {**config, "video_width": 128, "video_height": 128},
                }
            )
            assert (await ws.receive_json(timeout=30))["type"] == "connection.established"
            # And a viewer page that has stopped reading (a frozen tab).
            viewer_url = session["viewer_url"].replace("http", "ws", 1)
            viewer = await client.http.ws_connect(viewer_url.replace("/viewer?", "/viewer/ws?"))
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)  # and the clients read nothing meanwhile
            returncode, elapsed = await wait_exit(server, 30)
            events = []
            while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT:
                events.append(json.loads(msg.data))
            await ws.close()
            await viewer.close()
        finally:
            await client.aclose()
        assert returncode == 0, server.log_tail()
        assert elapsed < EXIT_BOUND_S, f"{elapsed:.1f} s to exit: {server.log_tail()}"
        assert events[-1] == {
            "type": "session.state",
            "state": "ended",
            "reason": "server_shutdown",
        }
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4009)
    finally:
        server.cleanup()


async def test_a_socket_waiting_for_init_is_idle_to_the_cap(make_edge: MakeEdge) -> None:
    """It belongs to no session yet, so it may be closed to make room like an idle one."""
    api = await make_edge(http__max_connections=4, http__idle_timeout_s=60)
    assert (await api.get("/healthz")).status == 200
    waiting = await api.client.ws_connect("/v1/ws")
    server = api.client.server
    idle = [await asyncio.open_connection(server.host, server.port) for _ in range(4)]
    try:
        msg = await waiting.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert not await _closed_by_server(idle[-1][0], 0.2)
    finally:
        for _, writer in idle:
            writer.close()
        await waiting.close()


# -- item 4: idle and half-sent connections, over-long request lines ----------------------------


async def _read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> bool:
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
        closed = await asyncio.gather(*(_read_until_closed(r, 5) for r, _ in conns))
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        for _, writer in conns:
            writer.close()
    assert all(closed)
    await api.create_session()  # and still works


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
