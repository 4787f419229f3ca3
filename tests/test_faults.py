"""Faults (SPEC §7, §10, §11): a killed process, a renderer that raises, a full disk, a client
that stops reading, a viewer that never reads, a Daily join that never completes. Each fault hits
one thing; everything else carries on.

The kill -9 test runs a real `python run.py` (bench/server.py); the others run the app in this
process on a virtual clock, so "still paced" means every tick published its frame on time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import tracemalloc
from typing import Any

import cv2
import torch

from agenthuman_local import keys
from agenthuman_local.paths import timeline_path
from bench.server import recording_files, speech_pcm
from tests.fakes import FakeRenderer
from tests.server_proc import kill_9_while_speaking, session_after_restart, two_servers
from tests.test_ws_helpers import Live, counting_pcm, wait_for

FPS = 25


async def _status(live: Live, sid: str) -> dict[str, Any]:
    return dict((await live.api.json("GET", f"/v1/sessions/{sid}"))["session"])


async def _frames(live: Live, sid: str) -> list[dict[str, Any]]:
    response = await live.api.get(f"/v1/sessions/{sid}/timeline")
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    return [line for line in lines if line["t"] == "frame"]


# --- kill -9 -------------------------------------------------------------------------------


async def test_kill_9_mid_session_then_restart_ends_it_server_restart(tmp_path) -> None:
    data_dir = tmp_path / "data"
    async with two_servers({"devices.use_cuda": "false"}, data_dir) as (first, second):
        pcm = speech_pcm()[:32000].tobytes()
        # 2 s: past the recorder's first fragments
        sid = await kill_9_while_speaking(first, pcm, width=128, height=128, after_s=2.0)
        assert first.proc is not None and first.proc.returncode == -9

        ended = await session_after_restart(second, sid)
        assert (ended["status"], ended["end_reason"]) == ("ended", "server_restart")

        # What the killed process wrote is whole up to its last line or fragment: the timeline,
        # and at least the first second of the MP4.
        lines = timeline_path(data_dir, sid).read_text().splitlines()
        frames = [json.loads(line) for line in lines if json.loads(line)["t"] == "frame"]
        assert len(frames) >= FPS
        assert [f["frame_index"] for f in frames] == list(range(len(frames)))
        assert "recording.mp4" in recording_files(data_dir, sid)
        capture = cv2.VideoCapture(str(data_dir / "recordings" / sid / "recording.mp4"))
        try:
            decoded = 0
            while decoded < 2 * FPS:
                ok, image = capture.read()
                if not ok:
                    break
                assert image.shape[:2] == (128, 128)
                decoded += 1
        finally:
            capture.release()
        assert decoded >= FPS, f"only {decoded} frames of the killed recording decode"
        await second.stop()


# --- a renderer that raises ----------------------------------------------------------------


async def test_a_renderer_exception_ends_only_its_session_with_error(make_client) -> None:
    renderers: dict[int, FakeRenderer] = {}

    async def ctx(app: Any) -> Any:
        async def make(spec: Any) -> FakeRenderer:
            renderers[spec.width] = FakeRenderer(spec.width, spec.height)
            return renderers[spec.width]

        app[keys.renderer_factory_key] = make
        yield

    live = await Live.make(make_client, contexts=[ctx])
    assert live.clock is not None
    broken_sid, broken_token = await live.started_session()
    healthy_sid, healthy_token = await live.started_session()
    # Different sizes, so the two sessions do not share one renderer.
    broken = await live.connect(broken_sid, broken_token, video_width=128, video_height=128)
    healthy = await live.connect(healthy_sid, healthy_token, video_width=256, video_height=256)
    await live.settle(sessions=2)
    await healthy.speak(counting_pcm(16000).tobytes())
    await healthy.barrier()
    await live.tick(5, sessions=2)

    renderers[128].fail = True
    worker = live.api.app[keys.render_pool_key].get("cpu")
    for _ in range(20):
        if broken.of("error"):
            break
        await worker.drain()
        live.clock.advance(1 / FPS)
        await asyncio.sleep(0.01)
    error = await broken.until("error")
    assert error["code"] == "RENDER_FAILED"
    assert await broken.closed() == 4009
    await wait_for(lambda: live.api.app[keys.manager_key].live(broken_sid) is None)
    assert (await _status(live, broken_sid))["end_reason"] == "error"

    before = len(await _frames(live, healthy_sid))
    await live.tick(25)
    assert len(await _frames(live, healthy_sid)) >= before + 25
    assert (await _status(live, healthy_sid))["status"] == "started"
    await healthy.barrier()
    assert healthy.of("error") == []
    assert len(healthy.of("agent.speak_started")) == 1


# --- the disk full -------------------------------------------------------------------------


async def test_a_full_disk_is_503_and_leaves_no_broken_rows(make_client) -> None:
    api = await make_client()
    store = api.app[keys.store_key]
    conn = store._connection()  # the store's own connection: max_page_count is per connection
    pages = (await (await conn.execute("PRAGMA page_count")).fetchone())[0]
    await conn.execute(f"PRAGMA max_page_count = {pages}")
    created = []
    for _ in range(500):
        response = await api.post("/v1/sessions", json={"metadata": {"pad": "x" * 500}})
        body = await response.json()
        if response.status != 201:
            break
        created.append(body["session"]["session_id"])
    assert response.status == 503, "the database never filled up"
    assert body["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert "full" in body["error"]["message"]

    await conn.execute("PRAGMA max_page_count = 1073741823")
    check = await (await conn.execute("PRAGMA integrity_check")).fetchall()
    assert [tuple(row) for row in check] == [("ok",)]
    # Exactly the sessions that were answered 201: the refused one left no row behind.
    listed: set[str] = set()
    cursor = ""
    while True:
        page = await api.json("GET", f"/v1/sessions?limit=100{cursor}")
        listed |= {s["session_id"] for s in page["sessions"]}
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert listed == set(created)
    for sid in created:
        session = (await api.json("GET", f"/v1/sessions/{sid}"))["session"]
        assert session["metadata"] == {"pad": "x" * 500}
    await api.create_session()  # room again: writes work again


# --- a client that stops reading -----------------------------------------------------------


class NoiseRenderer(FakeRenderer):
    """Incompressible frames, so a few JPEGs fill any socket buffer."""

    def render(self, params: torch.Tensor) -> torch.Tensor:
        super().render(params)
        noise = torch.randint(0, 256, (self.size.height, self.size.width, 3), dtype=torch.uint8)
        return noise.expand(params.shape[0], -1, -1, -1).clone()


def _ws_frame(payload: bytes) -> bytes:
    """One masked client text frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def _stalled_socket(port: int, path: str, init: dict[str, Any] | None = None) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that never reads after the handshake."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    if init is not None:
        s.sendall(_ws_frame(json.dumps(init).encode()))
    return s


async def _traced_growth_mb(live: Live, frames: int) -> float:
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        await live.tick(frames)
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (now - start) / 1e6


async def test_a_client_that_stops_reading_keeps_memory_bounded_and_the_session_paced(
    make_client,
) -> None:
    async def ctx(app: Any) -> Any:
        async def make(spec: Any) -> NoiseRenderer:
            return NoiseRenderer(spec.width, spec.height)

        app[keys.renderer_factory_key] = make
        yield

    live = await Live.make(make_client, contexts=[ctx])
    sid, token = await live.started_session()
    port = live.api.client.port
    init = {
        "type": "session.init",
        "config": {
            "session_id": sid,
            "access_token": token,
            "video_width": 640,
            "video_height": 480,
            "output": {"video": "jpeg", "audio": True},
        },
    }
    stalled = await asyncio.to_thread(_stalled_socket, port, f"/v1/sessions/{sid}/ws", init)
    try:
        await wait_for(lambda: live.api.app[keys.manager_key].live(sid) is not None)
        await live.settle()
        await live.tick(40)  # ~400 kB a frame: the socket's buffers are full long before this
        growth_mb = await _traced_growth_mb(live, 150)
        frames = await _frames(live, sid)
        assert len(frames) >= 190
        assert not any(f["late"] for f in frames)  # every tick published its own frame
        # Unbounded, 150 frames of ~400 kB JPEG would be ~60 MB held for the socket.
        assert growth_mb < 20, f"{growth_mb:.1f} MB kept for a client that does not read"
    finally:
        await asyncio.to_thread(stalled.close)
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


# --- a viewer that never reads -------------------------------------------------------------


async def test_a_viewer_that_never_reads_does_not_slow_the_session(make_client) -> None:
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=256, video_height=256)
    await live.settle()
    viewer_url = (await _status(live, sid))["viewer_url"]
    path = viewer_url.split("://", 1)[1].split("/", 1)[1].replace("/viewer?", "/viewer/ws?")
    port = live.api.client.port
    stalled = await asyncio.to_thread(_stalled_socket, port, "/" + path)
    try:
        await conn.speak(counting_pcm(16000).tobytes())
        await conn.barrier()
        await live.tick(100)
        frames = await _frames(live, sid)
        assert len(frames) >= 100 and not any(f["late"] for f in frames)
        ended = await conn.until("agent.speak_ended")
        assert ended["played_ms"] == 1000
    finally:
        await asyncio.to_thread(stalled.close)
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


# --- a Daily join that never completes -----------------------------------------------------


async def test_a_daily_join_that_never_completes_is_room_error_and_the_session_goes_on(
    aiohttp_client, tmp_path
) -> None:
    from agenthuman_local.app import create_app
    from tests.conftest import ApiClient, make_settings
    from tests.fakes import VirtualClock
    from tests.fakes_daily import HANG, FakeDaily
    from tests.test_ws_helpers import fake_renderer_ctx

    # The join hangs far past its timeout; the fake only lets go so the test can end.
    daily = FakeDaily(join_results=[HANG], hang_s=2.0)
    clock = VirtualClock()
    app = create_app(make_settings(tmp_path), environ={}, contexts=[fake_renderer_ctx(clock)])
    app[keys.daily_lib_key] = daily.lib
    app[keys.daily_transport_options_key] = {"join_timeout_s": 0.2, "join_attempts": 1}
    client = await aiohttp_client(app)
    live = Live(ApiClient(client, app[keys.first_key_key].key), clock)
    room = {"url": "https://team.daily.co/standup", "token": "their-token"}
    created = await live.api.create_session({"daily_room": room})
    sid = created["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(
        sid, created["access_token"], video_width=128, video_height=128, output={"audio": True}
    )
    assert conn.established is not None and conn.established["type"] == "connection.established"
    while len(conn.of("session.state")) < 2:
        await conn.next_event()
    assert [e["state"] for e in conn.of("session.state")[:2]] == ["connecting", "room_error"]
    await live.tick(10)
    await conn.media_count(5)  # still rendering, while the join has not let go yet
    assert daily.video_sources == [] or daily.video_sources[0].frames == []
    session = await _status(live, sid)
    assert session["status"] == "started" and session["daily_room"]["error"]
    ended = await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    assert ended["session"]["end_reason"] == "client_request"
    assert await conn.closed() == 4009
