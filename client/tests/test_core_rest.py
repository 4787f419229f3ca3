"""The client core's REST side against a real run.py: every call and its error codes,
waiting out capacity and a loading engine, era [C] and the fallback on a server without it.
Also: importing the core loads no heavy library.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest
from conftest import RunningServer, server_python, speech, start_server, stop_server

from agenthuman_client import AgentHuman, ApiError, SessionSocket, SpeakEnded, rest


def test_import_loads_neither_torch_nor_daily_nor_av() -> None:
    code = (
        "import sys, agenthuman_client, agenthuman_client.rest, agenthuman_client.socket;"
        "bad = {'torch', 'daily', 'av', 'cv2', 'PIL'} & set(sys.modules);"
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_pooled_connections_are_let_go_before_the_server_closes_them() -> None:
    """The server closes a connection idle for `http.idle_timeout_s` (15 s by default); the
    client must stop reusing it earlier, or a request sent as the server closes is lost."""
    async with AgentHuman("ah_live_" + "x" * 32, "http://127.0.0.1:9/v1") as api:
        connector = api.http.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector._keepalive_timeout == rest.KEEPALIVE_S < 15


async def test_rest_lifecycle_and_errors(api: AgentHuman, server: RunningServer) -> None:
    session = await api.create_session(metadata={"who": "client-test"})
    assert session.status == "created" and session.access_token
    assert session.avatar_id == "avat_local_ada"
    started = await api.start_session(session.session_id)
    assert started.ws_uri.startswith("ws://127.0.0.1")
    again = await api.start_session(session.session_id)
    assert again.ws_uri == started.ws_uri  # idempotent
    got = await api.get_session(session.session_id)
    assert got.status == "started" and got.raw["metadata"] == {"who": "client-test"}
    assert got.access_token is None  # GET never returns the secret
    listed = await api.list_sessions("started")
    assert session.session_id in {s.session_id for s in listed}
    ended = await api.end_session(session.session_id)
    assert (ended.status, ended.end_reason) == ("ended", "client_request")
    assert (await api.end_session(session.session_id)).status == "ended"

    with pytest.raises(ApiError) as err:
        await api.start_session(session.session_id)
    assert (err.value.status, err.value.code) == (409, "SESSION_ENDED")
    with pytest.raises(ApiError) as err:
        await api.get_session("sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert (err.value.status, err.value.code) == (404, "SESSION_NOT_FOUND")
    with pytest.raises(ApiError) as err:
        await api.create_session("avat_nobody")
    assert (err.value.status, err.value.code) == (404, "AVATAR_NOT_FOUND")
    with pytest.raises(ApiError) as err:
        await api.create_session(aspect_ratio="5:4")
    assert (err.value.status, err.value.code) == (400, "VALIDATION_ERROR")
    with pytest.raises(ApiError) as err:
        await api.upload_face(b"not an image at all")
    assert (err.value.status, err.value.code) == (400, "NOT_AN_IMAGE")
    async with AgentHuman("ah_live_" + "x" * 32, server.base_url) as stranger:
        with pytest.raises(ApiError) as err:
            await stranger.list_sessions()
    assert (err.value.status, err.value.code) == (401, "UNAUTHORIZED")
    avatars = {a["avatar_id"] for a in await api.list_avatars()}
    assert {"avat_local_ada", "avat_local_ben"} <= avatars
    assert (await api.usage())["usage"]["concurrency"]["max"] == 4


async def test_upload_face_gives_an_avatar_a_session_can_use(api: AgentHuman) -> None:
    make_jpeg = (
        "import sys, cv2, skimage.data;"
        "ok, buf = cv2.imencode('.jpg', skimage.data.astronaut()[:, :, ::-1]);"
        "sys.stdout.buffer.write(buf.tobytes())"
    )
    done = await asyncio.to_thread(
        subprocess.run, [server_python(), "-c", make_jpeg], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("the server's venv has no skimage to make the test photo")
    avatar = await api.upload_face(done.stdout)
    assert avatar.avatar_id.startswith("avat_") and avatar.preview_url.startswith("http")
    session = await api.create_session(avatar.avatar_id)
    assert session.avatar_id == avatar.avatar_id
    await api.end_session(session.session_id)
    await api.delete_avatar(avatar.avatar_id)


async def test_start_waits_out_no_capacity(api: AgentHuman) -> None:
    """Four sessions fill the test server; a fifth start retries per Retry-After until one
    of them ends, and a start that runs out of time raises NO_CAPACITY."""
    taken = [await api.create_and_start() for _ in range(4)]
    waiting = await api.create_session()
    try:
        with pytest.raises(ApiError) as err:
            await api.start_session(waiting.session_id, retry_for_s=0.5)
        assert (err.value.status, err.value.code) == (503, "NO_CAPACITY")
        assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
        start = asyncio.create_task(api.start_session(waiting.session_id, retry_for_s=30))
        await asyncio.sleep(0.3)
        assert not start.done()
        await api.end_session(taken[0].session_id)
        started = await asyncio.wait_for(start, 30)
        assert started.ws_uri.startswith("ws://")
    finally:
        for s in [*taken, waiting]:
            await api.end_session(s.session_id)


async def test_start_retries_try_again_while_the_engine_loads(tmp_path: Path) -> None:
    """A server that warms its engine at start-up answers start with `try_again` at first; the
    client's start waits it out and returns the real ws_uri."""
    loading = await asyncio.to_thread(
        start_server,
        tmp_path / "data",
        tmp_path / "server.log",
        "engine.preload=true",
        engine_ready=False,
    )
    try:
        async with AgentHuman(loading.api_key, loading.base_url) as api:
            session = await api.create_session()
            first = await api.request("PUT", f"/sessions/{session.session_id}/start")
            assert first["ws_uri"] == "try_again", "the engine loaded before the first start"
            # An era-[C] create meanwhile answers 503 ENGINE_LOADING; create_started waits.
            with pytest.raises(ApiError) as err:
                await api.create_started(retry_for_s=0)
            assert (err.value.status, err.value.code) == (503, "ENGINE_LOADING")
            c = await api.create_started(retry_for_s=60)
            assert c.status == "started" and c.ws_uri
            await api.end_session(c.session_id)
            started = await api.start_session(session.session_id, retry_for_s=60)
            assert started.ws_uri.startswith("ws://")
            assert (await api.get_session(session.session_id)).status == "started"
            await api.end_session(session.session_id)
    finally:
        await asyncio.to_thread(stop_server, loading)


async def test_era_c_create_starts_and_its_socket_uses_the_fixed_url(
    api: AgentHuman,
) -> None:
    """Era [C] (SPEC §4, §8): `room` in the create → created and started in one call, 4:3 by
    default; the socket connects to the fixed `/v1/ws` and sends `session_token` at the top
    level of `session.init`."""
    session = await api.create_started(metadata={"era": "C"})
    assert session.era == "C" and session.status == "started" and session.access_token
    assert session.raw["session_token"] == session.access_token
    assert session.raw["aspect_ratio"] == "4:3"
    sock = await SessionSocket.connect(session, output_video=None, output_audio=False)
    try:
        assert sock.ws_uri.endswith("/v1/ws") and "session_token" in sock._init
        assert sock.established is not None
        assert sock.established.width * 3 == sock.established.height * 4
        await sock.speak(speech(1.0))
        await sock.speak_end()
        ended = await sock.wait_for(SpeakEnded, timeout_s=30)
        assert not ended.interrupted and ended.played_ms == 1000
    finally:
        await sock.aclose()
        await api.end_session(session.session_id)
    with pytest.raises(ApiError) as err:
        await api.create_started(room={"platform": "livekit", "url": "wss://x", "token": "t"})
    assert (err.value.status, err.value.code) == (400, "UNSUPPORTED_PLATFORM")
    with pytest.raises(ApiError) as err:
        await api.create_started(room={"platform": "daily"})
    assert (err.value.status, err.value.code) == (400, "VALIDATION_ERROR")


class EraBProxy:
    """The real run.py behind a 127.0.0.1 proxy that makes it a server without era [C] (or
    without a local room): `mode` "ignore" drops `room` from a create, as a server that does
    not know the field does (ours ignores unknown fields, and so era [B]); "livekit" and
    "bogus" change the local room's platform, so run.py itself refuses it (400
    UNSUPPORTED_PLATFORM; VALIDATION_ERROR on `room.platform`). Everything else passes as is;
    the socket goes to run.py directly (its `ws_uri`)."""

    def __init__(self, server: RunningServer, mode: str) -> None:
        self.server, self.mode = server, mode
        self.creates: list[dict[str, object]] = []

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.read()
        if request.method == "POST" and request.path == "/v1/sessions" and body:
            obj = json.loads(body)
            if "room" in obj:
                if self.mode == "ignore":
                    del obj["room"]
                else:
                    obj["room"] = {"platform": self.mode}
            self.creates.append(obj)
            body = json.dumps(obj).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        async with aiohttp.ClientSession() as http:
            async with http.request(
                request.method,
                f"http://127.0.0.1:{self.server.port}{request.path_qs}",
                data=body,
                headers=headers,
            ) as answer:
                return aiohttp.web.Response(
                    status=answer.status,
                    body=await answer.read(),
                    content_type=answer.content_type,
                )


FORWARDED = {"x-api-key", "content-type"}


@pytest.mark.parametrize("mode", ["ignore", "livekit", "bogus"])
async def test_create_started_falls_back_on_a_server_without_era_c(
    server: RunningServer, mode: str
) -> None:
    """`create_started` (what the adapters call) on a server that ignores `room` or refuses
    the local room: an era-[B] create and start, a started session, an era-[B] socket."""
    proxy = EraBProxy(server, mode)
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AgentHuman(server.api_key, f"http://127.0.0.1:{port}/v1") as api:
            session = await api.create_started(metadata={"mode": mode})
            assert session.era == "B" and session.status == "started"
            assert session.access_token and session.ws_uri
            assert session.raw["metadata"] == {"mode": mode}
            # "ignore": one create (its room dropped) then a start; the others: the refused
            # era-[C] create, then an era-[B] one.
            assert [("room" in c) for c in proxy.creates] == (
                [False] if mode == "ignore" else [True, False]
            )
            sock = await SessionSocket.connect(session, output_video=None, output_audio=False)
            try:
                assert "/sessions/" in sock.ws_uri and "access_token" in sock._init
                await sock.speak(speech(0.4))
                await sock.speak_end()
                ended = await sock.wait_for(SpeakEnded, timeout_s=30)
                assert ended.played_ms == 400
            finally:
                await sock.aclose()
                await api.end_session(session.session_id)
            # An explicit room is never replaced by the fallback.
            before = {s.session_id for s in await api.list_sessions("created")}
            with pytest.raises(ApiError) as err:
                await api.create_started(room={"platform": "local"})
            expected = {"ignore": "ERA_C_UNSUPPORTED", "livekit": "UNSUPPORTED_PLATFORM"}
            assert err.value.code == expected.get(mode, "VALIDATION_ERROR")
            # The session it made without the room was ended, not left behind.
            assert {s.session_id for s in await api.list_sessions("created")} <= before
    finally:
        await runner.cleanup()


async def test_server_down_is_a_connection_error() -> None:
    async with AgentHuman("ah_live_" + "x" * 32, "http://127.0.0.1:9/v1") as api:
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.create_session()
