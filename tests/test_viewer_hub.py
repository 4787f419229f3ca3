"""ViewerHub fan-out and the viewer page's handlers, without a browser."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.api import viewer as viewer_api
from agenthuman_local.api.auth import auth_middleware
from agenthuman_local.api.middleware import error_middleware
from agenthuman_local.protocol import KIND_AUDIO_PCM, KIND_VIDEO_JPEG, unpack_media
from agenthuman_local.transports.jpeg import encode_jpeg
from agenthuman_local.transports.viewer import ViewerHub, ViewerSink
from tests.chromium import CHROMIUM, chromium
from tests.fakes_daily import SinkFrame

H, W, SR = 72, 96, 16_000


def image(seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 2 + seed, y * 3, (x + y) % 200], axis=-1)
    return rgb.astype(np.uint8)


async def drain(viewer) -> list:
    return [await viewer.get() for _ in range(viewer.pending)]


async def test_media_fans_out_to_every_viewer_of_its_session_only() -> None:
    hub = ViewerHub()
    a, b, other = hub.connect("s1"), hub.connect("s1"), hub.connect("s2")
    hub.publish_media("s1", KIND_AUDIO_PCM, 40, 1, b"\x01\x00")
    assert await a.get() == await b.get()
    assert other.pending == 0
    await hub.aclose()


async def test_a_full_queue_drops_its_oldest_messages() -> None:
    hub = ViewerHub(max_messages=3)
    v = hub.connect("s")
    for i in range(5):
        hub.publish_media("s", KIND_AUDIO_PCM, i, i, b"")
    assert [unpack_media(m)[1] for m in await drain(v)] == [2, 3, 4]
    assert v.dropped == 2
    await hub.aclose()


async def test_a_viewer_that_never_reads_does_not_hold_back_one_that_does() -> None:
    hub = ViewerHub(max_messages=8)
    stuck, live = hub.connect("s"), hub.connect("s")
    got: list[int] = []

    async def read() -> None:
        while (m := await live.get()) is not None:
            got.append(unpack_media(m)[1])

    reader = asyncio.create_task(read(), name="test:reader")
    for i in range(1000):
        hub.publish_media("s", KIND_AUDIO_PCM, i, i, b"\x00\x00")
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert got == list(range(1000))
    assert stuck.pending == 8 and stuck.dropped == 992
    await hub.aclose()
    await reader


async def test_frames_are_encoded_only_while_someone_watches() -> None:
    hub = ViewerHub()
    assert not hub.has_viewers("s")
    assert await hub.publish_frame("s", 0, 0, image(), b"", sample_rate_hz=SR) is False
    assert hub.frames_encoded == 0
    v = hub.connect("s")
    assert hub.has_viewers("s")
    assert await hub.publish_frame("s", 1, 40, image(), b"\x00\x00" * 640, sample_rate_hz=SR)
    assert hub.frames_encoded == 1
    hub.disconnect(v)
    assert not hub.has_viewers("s")
    await hub.publish_frame("s", 2, 80, image(), b"", sample_rate_hz=SR)
    assert hub.frames_encoded == 1
    await hub.aclose()


async def test_a_frame_arrives_as_format_clock_jpeg_then_pcm() -> None:
    hub = ViewerHub()
    v = hub.connect("s")
    pcm = np.arange(640, dtype="<i2").tobytes()
    await hub.publish_frame("s", 7, 280, image(3), pcm, sample_rate_hz=SR)
    fmt, clock, video, audio = await drain(v)
    assert json.loads(fmt) == {"type": "format", "width": W, "height": H, "sample_rate_hz": SR}
    assert json.loads(clock)["pts_ms"] == 280
    kind, pts_ms, frame_index, jpeg = unpack_media(video)
    assert (kind, pts_ms, frame_index) == (KIND_VIDEO_JPEG, 280, 7)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert np.abs(decoded.astype(int) - image(3)).mean() < 4  # the colours were not swapped
    assert unpack_media(audio) == (KIND_AUDIO_PCM, 280, 7, pcm)
    # The header is SPEC §8's: kind, 3 reserved bytes, pts_ms u64, frame_index u32, LE.
    assert video[:16] == bytes([1, 0, 0, 0]) + (280).to_bytes(8, "little") + (7).to_bytes(
        4, "little"
    )
    # The format is sent again only when it changes; the clock about once a second.
    await hub.publish_frame("s", 8, 320, image(), pcm, sample_rate_hz=SR)
    assert [type(m) for m in await drain(v)] == [bytes, bytes]
    await hub.aclose()


async def test_a_late_viewer_learns_the_format_and_state_first() -> None:
    hub = ViewerHub()
    early = hub.connect("s")
    await hub.publish_frame("s", 0, 0, image(), b"", sample_rate_hz=24_000)
    hub.publish_state("s", "joined_room")
    hub.publish_state("s", "ended", "client_request")
    late = hub.connect("s")
    first, second = await drain(late)
    assert json.loads(first)["sample_rate_hz"] == 24_000
    assert json.loads(second) == {"type": "state", "state": "ended", "reason": "client_request"}
    assert len(await drain(early)) == 5
    await hub.aclose()


async def test_close_ends_every_viewer_and_is_idempotent() -> None:
    hub = ViewerHub()
    v = hub.connect("s")
    hub.publish_state("s", "connecting")
    await hub.aclose()
    await hub.aclose()
    assert await v.get() is None
    assert not hub.has_viewers("s")
    with pytest.raises(RuntimeError, match="closed"):
        hub.connect("s")


async def test_as_a_sink_it_encodes_only_for_watched_sessions() -> None:
    hub = ViewerHub()
    sink = ViewerSink(hub, "s")
    samples = np.zeros(640, np.int16)
    await sink.publish(SinkFrame("s", 0, 0, image(), samples))
    await asyncio.sleep(0.05)
    assert hub.frames_encoded == 0
    v = hub.connect("s")
    await sink.publish(SinkFrame("s", 1, 40, image(), samples))
    got = []
    while len(got) < 4:  # format, clock, JPEG, PCM
        got.append(await asyncio.wait_for(v.get(), 5))
    assert unpack_media(got[-1]) == (KIND_AUDIO_PCM, 40, 1, samples.tobytes())
    await sink.aclose()
    await sink.aclose()
    await hub.aclose()


def test_jpeg_encoding_is_rgb_in() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    bgr = cv2.imdecode(np.frombuffer(encode_jpeg(red), np.uint8), 1)
    assert bgr[8, 8, 2] > 240 and bgr[8, 8, 0] < 20


# ---- the handlers ----------------------------------------------------------------------------

TOKENS = {"sess_1": "tok-1"}


@pytest.fixture
async def app_client(aiohttp_client):
    hub = ViewerHub()

    async def lookup(session_id: str) -> str | None:
        return TOKENS.get(session_id)

    async def close_hub(app: web.Application):
        yield
        await hub.aclose()

    # The server's own middlewares: the viewer routes must pass without an API key.
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[keys.viewer_hub_key] = hub
    app[keys.viewer_tokens_key] = lookup
    app.cleanup_ctx.append(close_hub)
    app.router.add_get("/v1/sessions/{session_id}/viewer", viewer_api.viewer_page)
    app.router.add_get("/v1/sessions/{session_id}/viewer/ws", viewer_api.viewer_socket)
    app.router.add_get("/viewer/{name}", viewer_api.viewer_asset)
    return hub, await aiohttp_client(app)


async def test_the_page_needs_the_sessions_viewer_token(app_client) -> None:
    _, client = app_client
    ok = await client.get("/v1/sessions/sess_1/viewer?token=tok-1")
    assert ok.status == 200
    assert ok.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
    for url in [
        "/v1/sessions/sess_1/viewer?token=nope",
        "/v1/sessions/sess_1/viewer",
        "/v1/sessions/sess_2/viewer?token=tok-1",
        "/v1/sessions/sess_1/viewer?token=%C3%A9",  # not ASCII: still just a wrong token
        "/v1/sessions/sess_1/viewer?token=tok-%E2%80%8B1",
    ]:
        resp = await client.get(url)
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "SESSION_NOT_FOUND"


async def test_every_script_the_page_loads_is_served_and_none_is_remote(app_client) -> None:
    _, client = app_client
    page = await (await client.get("/v1/sessions/sess_1/viewer?token=tok-1")).text()
    script = await (await client.get("/viewer/viewer.js")).text()
    urls = re.findall(r'src="([^"]+)"', page) + re.findall(r'addModule\("([^"]+)"\)', script)
    assert urls == ["/viewer/viewer.js", "/viewer/viewer-worklet.js"]
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
        assert not re.search(r"https?://", await resp.text())  # no CDN
    assert (await client.get("/viewer/..%2Fviewer.py")).status == 404
    missing = await client.get("/viewer/nothing.js")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "NOT_FOUND"


async def test_the_socket_streams_state_and_media_then_lets_go(app_client) -> None:
    hub, client = app_client
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=bad")
    assert info.value.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=%C3%A9")
    assert info.value.status == 404
    hub.publish_state("sess_1", "joined_room")
    ws = await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=tok-1")
    assert json.loads((await ws.receive(timeout=5)).data)["state"] == "joined_room"
    pcm = b"\x10\x00" * 640
    await hub.publish_frame("sess_1", 3, 120, image(), pcm, sample_rate_hz=SR)
    kinds = []
    while len(kinds) < 2:
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.BINARY:
            kinds.append(unpack_media(msg.data)[0])
    assert kinds == [KIND_VIDEO_JPEG, KIND_AUDIO_PCM]
    await ws.close()
    for _ in range(100):
        if not hub.has_viewers("sess_1"):
            break
        await asyncio.sleep(0.01)
    assert not hub.has_viewers("sess_1")


async def test_a_browser_offering_deflate_gets_no_extension(app_client) -> None:
    _, client = app_client  # compress=15 offers permessage-deflate the way browsers do
    ws = await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=tok-1", compress=15)
    assert ws.compress == 0
    assert "Sec-WebSocket-Extensions" not in ws._response.headers
    await ws.close()


async def test_a_socket_opened_after_shutdown_is_turned_away(app_client) -> None:
    hub, client = app_client
    await hub.aclose()
    ws = await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=tok-1")
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_closing_the_hub_closes_open_sockets(app_client) -> None:
    hub, client = app_client
    ws = await client.ws_connect("/v1/sessions/sess_1/viewer/ws?token=tok-1")
    for _ in range(100):
        if hub.has_viewers("sess_1"):
            break
        await asyncio.sleep(0.01)
    await hub.aclose()
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


# ---- the page in a real browser (skipped where Chromium is not installed) --------------------

STATS_JS = "JSON.stringify(window.agenthumanViewer && window.agenthumanViewer.stats())"
TEXT_JS = "document.getElementById('{}').textContent"


async def produce(hub: ViewerHub, seconds: float) -> None:
    """Frames and audio at 25 fps in real time, as a session publishes them."""
    fps, loop = 25, asyncio.get_running_loop()
    start = loop.time()
    for n in range(int(seconds * fps)):
        s0, s1 = n * SR // fps, (n + 1) * SR // fps
        tone = (np.sin(2 * np.pi * 440 * np.arange(s0, s1) / SR) * 8000).astype("<i2")
        await hub.publish_frame("sess_1", n, n * 40, image(n), tone.tobytes(), sample_rate_hz=SR)
        await asyncio.sleep(max(0.0, start + (n + 1) / fps - loop.time()))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
async def test_chromium_plays_the_page_with_frames_on_the_audio_clock(app_client, tmp_path) -> None:
    hub, client = app_client
    url = str(client.make_url("/v1/sessions/sess_1/viewer?token=tok-1"))
    producer = None
    try:
        async with chromium(tmp_path / "profile", url) as devtools:
            # Opened before the session publishes anything: it waits, then plays.
            await asyncio.sleep(1.0)
            hub.publish_state("sess_1", "joined_room")
            producer = asyncio.create_task(produce(hub, 8.0), name="test:produce")
            lags = []
            for _ in range(100):
                await asyncio.sleep(0.1)
                stats = json.loads(await devtools.eval(STATS_JS) or "null")
                if stats and stats["audio"] and stats["shown"]:
                    # The clock when the frame was drawn, not now: a page busy between
                    # two display refreshes must not read as drift.
                    lags.append(stats["shown"]["atPts"] - stats["shown"]["pts"])
                    if len(lags) == 10:
                        break
            assert len(lags) == 10, "the page never played audio with frames"
            # The frame on screen is the one whose time the audio clock is in (40 ms per
            # frame, plus a display refresh of slack).
            assert all(-5 <= lag < 80 for lag in lags), lags
            assert await devtools.eval(TEXT_JS.format("state")) == "joined_room"
            hub.publish_state("sess_1", "ended", "client_request")
            for _ in range(50):
                if await devtools.eval(TEXT_JS.format("state")) == "ended (client_request)":
                    break
                await asyncio.sleep(0.1)
            assert await devtools.eval(TEXT_JS.format("state")) == "ended (client_request)"
    finally:
        if producer is not None:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


def moving(n: int) -> np.ndarray:
    """A still picture with a square moving across it: after the key frame, only patches."""
    rgb = image(0)
    left = (4 * n) % (W - 16)
    rgb[20:36, left : left + 16] = (250, 250, 40)
    return rgb


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
async def test_chromium_composes_the_patches_into_the_sessions_frames(app_client, tmp_path) -> None:
    hub, client = app_client
    url = str(client.make_url("/v1/sessions/sess_1/viewer?token=tok-1"))
    fps, frames = 25, 60
    async with chromium(tmp_path / "profile", url) as devtools:
        await asyncio.sleep(1.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(frames):
            silence = bytes(2 * SR // fps)
            await hub.publish_frame("sess_1", n, n * 40, moving(n), silence, sample_rate_hz=SR)
            await asyncio.sleep(max(0.0, start + (n + 1) / fps - loop.time()))
        shown = None
        for _ in range(50):
            stats = json.loads(await devtools.eval(STATS_JS) or "null")
            shown = stats and stats["shown"] and stats["shown"]["frameIndex"]
            if shown == frames - 1:
                break
            await asyncio.sleep(0.1)
        assert shown == frames - 1, stats
        png = await devtools.eval("document.getElementById('video').toDataURL('image/png')")
    canvas = cv2.imdecode(np.frombuffer(base64.b64decode(png.split(",", 1)[1]), np.uint8), 1)
    canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    assert hub.key_frames < frames / 10  # the page was sent patches, not whole frames
    # The square is where the last frame has it, and nowhere it was before.
    assert np.abs(canvas.astype(int) - moving(frames - 1)).mean() < 3
