"""session.init's frame size and fps (issue 12 item 8): honoured within the configured bounds,
reported by GET, and counted in cost units (1 unit = 1280×720@25) against the device."""

from __future__ import annotations

import asyncio

import pytest

from agenthuman_local import keys, protocol
from agenthuman_local.devices import Device, DevicePool, cost_units
from agenthuman_local.errors import NoCapacity
from tests.test_ws_helpers import Live


def test_a_session_costs_its_pixels_times_fps() -> None:
    assert cost_units(1280, 720, 25) == 1.0
    assert cost_units(960, 720, 25) == 0.75
    assert cost_units(1920, 1080, 30) == pytest.approx(2.7)
    assert cost_units(1920, 1920, 60) == pytest.approx(9.6)


def test_leases_count_units_and_a_relet_that_does_not_fit_keeps_the_old_lease() -> None:
    pool = DevicePool([Device("cpu", "cpu", "CPU", 4)])
    for sid in ("a", "b", "c"):
        pool.lease(sid, cost_units(960, 720, 25))  # 0.75 each
    assert pool.concurrency() == {"current": 3, "max": 4, "available": 1}  # 1.75 units free
    pool.relet("a", cost_units(1280, 720, 25))  # 0.75 → 1.0: 2.5 leased
    with pytest.raises(NoCapacity):
        pool.relet("b", cost_units(1920, 1080, 30))  # 0.75 → 2.7 would be 4.45
    assert pool.devices[0].sessions == {"a": 1.0, "b": 0.75, "c": 0.75}
    pool.lease("d", 1.0)  # 3.5 leased
    with pytest.raises(NoCapacity):
        pool.lease("e", 1.0)  # 0.5 free
    pool.lease("e", 0.5)
    pool.release("a")
    assert pool.devices[0].load == pytest.approx(3.0)


@pytest.fixture
async def live(make_client):
    return await Live.make(make_client)  # config/test.yaml: devices.cpu_sessions 4 (units)


async def _video(live: Live, sid: str) -> dict:
    return (await live.api.json("GET", f"/v1/sessions/{sid}"))["session"]["video"]


async def test_a_1080p30_session_is_honoured_reported_and_costs_2_7_units(live) -> None:
    sid, token = await live.started_session()
    assert await _video(live, sid) == {"width": 1280, "height": 720, "fps": 25}
    conn = await live.connect(sid, token, video_width=1920, video_height=1080, fps=30)
    assert conn.established["video"] == {"width": 1920, "height": 1080, "fps": 30}
    assert await _video(live, sid) == {"width": 1920, "height": 1080, "fps": 30}
    device = live.api.app[keys.devices_key].devices[0]
    assert device.sessions[sid] == pytest.approx(2.7)
    # 1.3 units left: a default 1280x720@25 session still starts, a second one does not.
    other, _ = await live.started_session()
    third = await live.api.create_session()
    response = await live.api.put(f"/v1/sessions/{third['session_id']}/start")
    assert response.status == 503 and (await response.json())["error"]["code"] == "NO_CAPACITY"
    await live.api.json("PUT", f"/v1/sessions/{other}/end")
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


async def test_a_size_over_the_bounds_is_refused_with_an_error_and_4002(live) -> None:
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=1920, video_height=1920, fps=60)
    assert conn.established["type"] == "error"
    assert conn.established["code"] == protocol.E_INVALID_VIDEO_SIZE
    assert await conn.closed() == protocol.CLOSE_PROTOCOL
    assert await _video(live, sid) == {"width": 1280, "height": 720, "fps": 25}
    # The session keeps its seat and takes a size within bounds on the next socket.
    conn = await live.connect(sid, token, video_width=960, video_height=720)
    assert conn.established["video"] == {"width": 960, "height": 720, "fps": 25}
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


async def test_a_refused_init_arms_the_connect_timeout_again(make_client) -> None:
    """A client whose first session.init is refused and that never retries must not hold its
    seat until the session expires: the connect timeout runs again from the refusal."""
    live = await Live.make(make_client, ws__connect_timeout_s=0.2)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=1920, video_height=1920, fps=60)
    assert conn.established["code"] == protocol.E_INVALID_VIDEO_SIZE
    assert await conn.closed() == protocol.CLOSE_PROTOCOL
    await live.clock.settled(1)
    live.clock.advance(0.2)
    for _ in range(100):
        session = (await live.api.json("GET", f"/v1/sessions/{sid}"))["session"]
        if session["status"] == "ended":
            break
        await asyncio.sleep(0.05)
    assert (session["status"], session["end_reason"]) == ("ended", "websocket_timeout")
    assert live.api.app[keys.devices_key].concurrency()["current"] == 0


async def test_a_size_its_device_has_no_room_for_is_no_capacity_and_4005(live) -> None:
    neighbours = [await live.started_session() for _ in range(2)]  # 2 of 4 units
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=1920, video_height=1080, fps=30)
    assert conn.established["type"] == "error"
    assert conn.established["code"] == protocol.E_NO_CAPACITY
    assert await conn.closed() == protocol.CLOSE_NO_CAPACITY
    assert live.api.app[keys.devices_key].devices[0].sessions[sid] == 1.0  # its seat is kept
    assert await _video(live, sid) == {"width": 1280, "height": 720, "fps": 25}
    await live.api.json("PUT", f"/v1/sessions/{neighbours[0][0]}/end")
    conn = await live.connect(sid, token, video_width=1920, video_height=1080, fps=30)
    assert conn.established["video"] == {"width": 1920, "height": 1080, "fps": 30}
    for other, _ in neighbours[1:]:
        await live.api.json("PUT", f"/v1/sessions/{other}/end")
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


async def test_the_bounds_are_config_keys(make_client) -> None:
    live = await Live.make(make_client, video__max_pixels=640 * 480, video__max_fps=30)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=640, video_height=480, fps=50)
    assert conn.established["code"] == protocol.E_INVALID_VIDEO_SIZE
    assert "30 fps" in conn.established["error"]
    conn = await live.connect(sid, token, video_width=640, video_height=480, fps=30)
    assert conn.established["video"] == {"width": 640, "height": 480, "fps": 30}
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
